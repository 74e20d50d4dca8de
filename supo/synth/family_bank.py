"""The bank task family (:mod:`supo.synth.families`): accounts, invoices, payees, transfer quotes and
spending limits."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from supo.synth.api_graph import Param, Tool
from supo.synth.family_base import Backend, Family, ToolFailure, _pick

OWNERS = ("Ana", "Ben", "Cleo", "Dev", "Eli", "Faye", "Gus", "Hana", "Ivo", "Jun")
PAYEES = ("Acme", "Globex", "Initech", "Umbra", "Vertex", "Zenith", "Orbit", "Nimbus")


class BankBackend(Backend):
    def _account(self, account: str) -> str:
        if account not in self.state["balances"]:
            raise ToolFailure(f"unknown account {account[:40]!r}")
        return account

    def t_find_account(self, owner: str) -> str:
        if owner not in self.state["accounts"]:
            raise ToolFailure(f"no account for {owner[:40]!r}")
        return self.state["accounts"][owner]

    def t_find_payee(self, recipient: str) -> str:
        if recipient not in self.state["payees"]:
            raise ToolFailure(f"unknown payee {recipient[:40]!r}")
        return self.state["payees"][recipient]

    def t_get_balance(self, account: str) -> str:
        return str(self.state["balances"][self._account(account)])

    def t_get_invoice(self, account: str) -> str:
        inv = self.state["invoices"].get(self._account(account))
        if inv is None:
            raise ToolFailure(f"no invoice for account {account}")
        return inv["id"]

    def t_pay_invoice(self, invoice: str) -> str:
        for acct, inv in self.state["invoices"].items():
            if inv["id"] == invoice:
                if not inv["paid"]:
                    if self.state["balances"][acct] < inv["amount"]:
                        raise ToolFailure(f"balance too low to pay {invoice}")
                    self.state["balances"][acct] -= inv["amount"]
                    inv["paid"] = True
                return str(self.state["balances"][acct])
        raise ToolFailure(f"unknown invoice {invoice[:40]!r}")

    def t_quote_transfer(self, account: str, payee: str, amount: int) -> str:
        self._account(account)
        if payee not in self.state["payees"].values():
            raise ToolFailure(f"unknown payee id {payee[:40]!r}")
        if not 0 < amount <= 100_000:
            raise ToolFailure("amount must be between 1 and 100000")
        for qid, q in self.state["quotes"].items():
            if q == [account, payee, amount] and qid not in self.state["sent"]:
                return qid
        qid = f"Q{self.state['next_quote']}"
        self.state["next_quote"] += 1
        self.state["quotes"][qid] = [account, payee, amount]
        return qid

    def t_send_transfer(self, quote: str) -> str:
        if quote not in self.state["quotes"]:
            raise ToolFailure(f"unknown quote {quote[:40]!r}")
        acct, _payee, amount = self.state["quotes"][quote]
        if quote not in self.state["sent"]:
            if self.state["balances"][acct] < amount:
                raise ToolFailure("balance too low for this transfer")
            self.state["balances"][acct] -= amount
            self.state["sent"].append(quote)
        return str(self.state["balances"][acct])

    def t_set_limit(self, account: str, limit: int) -> str:
        self._account(account)
        if not 0 <= limit <= 100_000:
            raise ToolFailure("limit must be between 0 and 100000")
        self.state["limits"][account] = limit
        return str(limit)

    def verified(self) -> Any:
        s = self.state
        return {"balances": s["balances"], "paid": sorted(i["id"] for i in s["invoices"].values() if i["paid"]),
                "limits": s["limits"], "transfers": sorted(s["quotes"][q] for q in s["sent"])}


@dataclass
class BankFamily(Family):
    name: str = "bank"
    tools: tuple[Tool, ...] = (
        Tool("find_account", "account of an owner", (Param("owner", str),), "account"),
        Tool("find_payee", "payee id of a company", (Param("recipient", str),), "payee"),
        Tool("get_balance", "balance of an account", (Param("account", str),), "balance", ("find_account",)),
        Tool("get_invoice", "open invoice of an account", (Param("account", str),), "invoice", ("find_account",)),
        Tool("pay_invoice", "pay an invoice", (Param("invoice", str),), "balance", ("get_invoice", "get_balance"),
             effect=True),
        Tool("quote_transfer", "quote a transfer", (Param("account", str), Param("payee", str), Param("amount", int)),
             "quote", ("find_account", "find_payee")),
        Tool("send_transfer", "send a quoted transfer", (Param("quote", str),), "balance", ("quote_transfer",),
             effect=True),
        Tool("set_limit", "set the spending limit", (Param("account", str), Param("limit", int)), "limit",
             ("get_balance",), effect=True),
    )
    goal_tools: tuple[str, ...] = ("pay_invoice", "send_transfer", "set_limit")
    final_tools: tuple[str, ...] = ("pay_invoice", "send_transfer", "set_limit", "get_balance", "get_invoice")
    goal_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "find_account": ("look up the account of {owner}",),
        "find_payee": ("look up the payee id of {recipient}",),
        "get_balance": ("check how much money {owner} has", "tell me the balance of {owner}"),
        "get_invoice": ("find the invoice number of {owner}", "tell me which invoice {owner} owes"),
        "pay_invoice": ("pay the open bill of {owner}", "settle {owner}'s invoice",
                        "clear the pending invoice for {owner}"),
        "quote_transfer": ("get a quote to send {amount} from {owner} to {recipient}",),
        "send_transfer": ("send {amount} from {owner} to {recipient}",
                          "transfer {amount} dollars from {owner}'s account to {recipient}",
                          "wire {recipient} {amount} out of {owner}'s money"),
        "set_limit": ("set the spending limit of {owner} to {limit}", "change {owner}'s limit to {limit}"),
    })
    follow_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "find_account": ("look up the account of {owner}",),
        "find_payee": ("look up the payee id of {recipient}",),
        "get_balance": ("tell me the balance",),
        "get_invoice": ("find the invoice number",),
        "pay_invoice": ("pay that invoice",),
        "quote_transfer": ("get a quote to send {amount} there",),
        "send_transfer": ("send that transfer",),
        "set_limit": ("set the limit to {limit}",),
    })
    distractors: tuple[str, ...] = ("{owner} opened the account years ago.", "{recipient} sends letters monthly.",
                                    "{owner} once argued with {recipient}.")
    backend_cls: type[Backend] = BankBackend

    def make_state(self, rng: random.Random) -> dict[str, Any]:
        owners = _pick(rng, OWNERS, rng.randint(4, 6))
        accounts = dict(zip(owners, [f"AC{n}" for n in rng.sample(range(10, 100), len(owners))]))
        balances = {a: 10 * rng.randint(40, 90) for a in accounts.values()}
        inv_ids = rng.sample(range(10, 100), len(owners))
        invoices = {a: {"id": f"IN{inv_ids[k]}", "amount": 10 * rng.randint(1, 20), "paid": False}
                    for k, a in enumerate(accounts.values()) if rng.random() < 0.8}
        payees = _pick(rng, PAYEES, rng.randint(3, 5))
        return {"accounts": accounts, "balances": balances, "invoices": invoices,
                "payees": dict(zip(payees, [f"PY{n}" for n in rng.sample(range(10, 100), len(payees))])),
                "limits": {}, "quotes": {}, "sent": [], "next_quote": rng.randint(10, 60)}

    def sample_goal(self, tool, backend, rng):
        s = backend.state
        owner = _pick(rng, s["accounts"])
        acct = s["accounts"][owner]
        if tool in ("find_account", "get_balance"):
            return {"owner": owner}
        if tool == "find_payee":
            return {"recipient": _pick(rng, s["payees"])}
        if tool in ("get_invoice", "pay_invoice"):
            inv = s["invoices"].get(acct)
            if inv is None or (tool == "pay_invoice" and (inv["paid"] or inv["amount"] > s["balances"][acct])):
                return None
            return {"owner": owner}
        if tool in ("quote_transfer", "send_transfer"):
            amount = 10 * rng.randint(1, 15)
            if amount > s["balances"][acct]:
                return None
            return {"owner": owner, "recipient": _pick(rng, s["payees"]), "amount": amount}
        if tool == "set_limit":
            limit = 50 * rng.randint(2, 12)
            return None if s["limits"].get(acct) == limit else {"owner": owner, "limit": limit}
        raise ValueError(tool)

    def sample_follow(self, tool, backend, ctx, rng):
        if tool in ("find_account", "find_payee"):
            return self.sample_goal(tool, backend, rng)
        if tool == "quote_transfer":
            return {"amount": 10 * rng.randint(1, 15)}
        if tool == "set_limit":
            return {"limit": 50 * rng.randint(2, 12)}
        return {}

    def entities(self, state):
        return {"owner": list(state["accounts"]), "recipient": list(state["payees"])}
