"""Task families: API graphs over small stateful simulated backends (files, travel, bank, inventory).

Each :class:`Family` holds

* its tools as :class:`~supo.synth.api_graph.Tool` specs (an :class:`~supo.synth.api_graph.APIGraph`);
* a :class:`Backend`: a JSON state plus one deterministic method per tool. A tool answers with one short line
  ``"<output name> <value>"`` (``"zip 42"``, ``"ticket TK12"``) or fails with :class:`ToolFailure`;
* the parameter sampler: :meth:`Family.sample_goal` draws the request arguments of a walk toward a target tool from
  the backend's current state, :meth:`Family.sample_follow` the arguments of an exploration call (FunReason-MT's
  ``P_s``); both are seeded by the caller's ``rng`` and may decline (``None``) when the state offers nothing sensible;
* the phrasebook the query writer and the scripted solver share: per tool, request templates (``goal``: mentions the
  literal arguments of the tool *and* of its prerequisites, so the prerequisite calls stay implicit) and follow-up
  templates (``follow``: mentions only the tool's own literal arguments), plus distractor sentences for noise.

Every tool is safe to repeat at once: calling the same tool with the same arguments twice in a row leaves the state and
the answer as one call does (``mkdir`` of an existing folder, ``cd`` into the folder you are in, paying a paid invoice,
re-buying the same ticket all return the first result). The rollout loop relies on it: when the summary trigger drops
the last (action, observation) pair, the environment keeps the side effect and the agent redoes the action.
Only the *persistent* part of the state (:meth:`Backend.verified`) decides the reward; cursors (the current
directory) and scratch records (transfer quotes) do not.
"""

from __future__ import annotations

import copy
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from supo.synth.api_graph import APIGraph, Param, Tool

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")


class ToolFailure(ValueError):
    """A tool call the backend refuses (unknown file, no such flight, insufficient funds); becomes ``Error: ...``."""


def output_value(observation: str) -> str:
    """The value of an observation ``"<output> <value>"``."""
    parts = observation.split(" ", 1)
    return parts[1] if len(parts) == 2 else ""


class Backend:
    """A family's simulated service. Subclasses implement ``t_<tool>(**params) -> value`` and :meth:`verified`."""

    def __init__(self, graph: APIGraph, state: dict[str, Any]) -> None:
        self.graph = graph
        self.state = copy.deepcopy(state)

    def execute(self, name: str, params: dict[str, Any]) -> str:
        """Run one call; never raises: a refused or malformed call is an ``Error: ...`` observation."""
        try:
            return self.call(name, params)
        except ToolFailure as e:
            return f"Error: {e}"

    def call(self, name: str, params: dict[str, Any]) -> str:
        """Run one call; raises :class:`ToolFailure` (with the message the agent sees) when refused."""
        if name not in self.graph:
            raise ToolFailure(f"unknown tool {str(name)[:40]!r}")
        tool = self.graph[name]
        types = tool.param_types
        if set(params) != set(types):
            raise ToolFailure(f"{name} takes ({', '.join(types)}), got ({', '.join(map(str, params))})")
        for k, typ in types.items():
            v = params[k]
            if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise ToolFailure(f"{name}: parameter {k} must be an integer")
            if typ is str and not isinstance(v, str):
                raise ToolFailure(f"{name}: parameter {k} must be a string")
        value = getattr(self, f"t_{name}")(**params)
        return f"{tool.output} {value}"

    def verified(self) -> Any:
        """The persistent state the reward compares (JSON-serialisable, canonical)."""
        raise NotImplementedError

    def verified_json(self) -> str:
        return json.dumps(self.verified(), sort_keys=True)


@dataclass
class Family:
    """One task family; see the module docstring. Subclasses fill the tables and implement the samplers."""

    name: str = ""
    tools: tuple[Tool, ...] = ()
    goal_tools: tuple[str, ...] = ()  # targets of a request that is not the last one (they change the state)
    final_tools: tuple[str, ...] = ()  # targets of the last request (its result is the task's answer)
    goal_templates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    follow_templates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    distractors: tuple[str, ...] = ()
    backend_cls: type[Backend] = Backend

    def __post_init__(self) -> None:
        self.graph = APIGraph(self.tools)
        for t in (*self.goal_tools, *self.final_tools):
            if t not in self.graph:
                raise ValueError(f"family {self.name}: target {t!r} is not one of its tools")
        for t in self.graph:
            for p, src in self.graph.refs(t).items():
                if self.graph[t].param_types[p] is not str:
                    raise ValueError(f"family {self.name}: {t}.{p} reads {src}'s output, a string; declare it str")
            for kind, table, needed in (("goal", self.goal_templates, self.graph.walk_literals(t)),
                                        ("follow", self.follow_templates, self.graph.literals(t))):
                templates = table.get(t)
                if not templates:
                    raise ValueError(f"family {self.name}: tool {t!r} has no {kind} templates")
                for tpl in templates:
                    used = re.findall(r"\{(\w+)\}", tpl)
                    if sorted(used) != sorted(needed):
                        raise ValueError(f"family {self.name}: {kind} template {tpl!r} of {t} must mention exactly "
                                         f"{needed}, mentions {used}")
                    words = set(re.findall(r"[a-z_]+", tpl.lower()))
                    named = [n for n in self.graph if n in words]
                    if named:
                        raise ValueError(f"family {self.name}: template {tpl!r} names tool(s) {named}")

    def backend(self, state: dict[str, Any]) -> Backend:
        return self.backend_cls(self.graph, state)

    # the parameter sampler -------------------------------------------------------------------------------------
    def make_state(self, rng: random.Random) -> dict[str, Any]:
        raise NotImplementedError

    def sample_goal(self, tool: str, backend: Backend, rng: random.Random) -> dict[str, Any] | None:
        """Literal arguments for a walk toward ``tool`` (its own and its prerequisites'), or ``None``."""
        raise NotImplementedError

    def sample_follow(self, tool: str, backend: Backend, ctx: dict[str, str], rng: random.Random
                      ) -> dict[str, Any] | None:
        """Literal arguments of an exploration call of ``tool``; ``ctx`` maps tool → its latest value this request."""
        raise NotImplementedError

    def entities(self, state: dict[str, Any]) -> dict[str, list[str]]:
        """Names the distractor sentences may use (placeholder → choices)."""
        raise NotImplementedError

    def spec_lines(self) -> list[str]:
        """The tool documentation the policy sees, one line per tool: signature with the output's name, and
        prerequisites. (The one-line ``doc`` strings are left out: the names carry the meaning, and the tiny
        profile's working context has no room for them.)"""
        lines = []
        for name in self.graph:
            t = self.graph[name]
            req = f" Requires {', '.join(t.requires)}." if t.requires else ""
            lines.append(f"- {t.signature()}.{req}")
        return lines


def _pick(rng: random.Random, xs, k: int | None = None):
    xs = sorted(xs)
    if k is None:
        return rng.choice(xs) if xs else None
    return rng.sample(xs, k)


# ======================================================================================================================
# files: a small directory tree with a current directory (BFCL-like: pwd, ls, cd, cat, wc, mkdir, cp)

FOLDERS = ("docs", "work", "music", "photos", "old", "tmp", "logs", "misc", "alpha", "beta", "drafts", "backup")
FILES = ("notes.txt", "todo.txt", "plan.txt", "data.csv", "log.txt", "list.txt")
MAX_ENTRIES = 3  # subfolders (and, separately, files) per folder: keeps a listing short
WORDS = ("red", "blue", "green", "apple", "river", "stone", "light", "fast", "quiet", "north", "seven", "paper")
ROOT = "/home"


class FilesBackend(Backend):
    def _dir(self) -> dict[str, Any]:
        return self.state["dirs"][self.state["cwd"]]

    def t_pwd(self) -> str:
        return self.state["cwd"]

    def t_ls(self) -> str:
        d = self._dir()
        entries = [f"{x}/" for x in sorted(d["dirs"])] + sorted(d["files"])
        return " ".join(entries) if entries else "empty"

    def t_cd(self, folder: str) -> str:
        cwd = self.state["cwd"]
        if folder in self._dir()["dirs"]:
            self.state["cwd"] = f"{cwd}/{folder}"
        elif folder == "..":
            if cwd == ROOT:
                raise ToolFailure(f"already at the top folder {ROOT}")
            self.state["cwd"] = cwd.rsplit("/", 1)[0]
        elif folder != cwd.rsplit("/", 1)[1]:  # cd into the folder you are in: stay
            raise ToolFailure(f"no folder {folder[:40]!r} in {cwd}")
        return self.state["cwd"]

    def _file(self, file: str) -> str:
        files = self._dir()["files"]
        if file not in files:
            raise ToolFailure(f"no file {file[:40]!r} in {self.state['cwd']}")
        return files[file]

    def t_cat(self, file: str) -> str:
        return self._file(file)

    def t_wc(self, file: str) -> str:
        return str(len(self._file(file).split()))

    def t_mkdir(self, folder: str) -> str:
        if not _NAME_RE.match(folder):
            raise ToolFailure(f"bad folder name {folder[:40]!r}: use lowercase letters, digits, _")
        d, cwd = self._dir(), self.state["cwd"]
        if folder in d["files"]:
            raise ToolFailure(f"{folder} is a file")
        if folder not in d["dirs"]:
            d["dirs"].append(folder)
            d["dirs"].sort()
            self.state["dirs"][f"{cwd}/{folder}"] = {"dirs": [], "files": {}}
        return f"{cwd}/{folder}"

    def t_cp(self, file: str, folder: str) -> str:
        content = self._file(file)
        cwd = self.state["cwd"]
        if folder not in self._dir()["dirs"]:
            raise ToolFailure(f"no folder {folder[:40]!r} in {cwd}")
        self.state["dirs"][f"{cwd}/{folder}"]["files"][file] = content
        return f"{cwd}/{folder}/{file}"

    def verified(self) -> Any:
        return self.state["dirs"]


@dataclass
class FilesFamily(Family):
    name: str = "files"
    tools: tuple[Tool, ...] = (
        Tool("pwd", "the current folder", (), "path"),
        Tool("ls", "entries of the current folder", (), "entries", ("pwd",)),
        Tool("cd", "enter a subfolder", (Param("folder", str),), "path", ("ls",)),
        Tool("cat", "text of a file here", (Param("file", str),), "text", ("ls",)),
        Tool("wc", "word count of a file here", (Param("file", str),), "words", ("cat",)),
        Tool("mkdir", "make a subfolder here", (Param("folder", str),), "path", ("ls",), effect=True),
        Tool("cp", "copy a file here into a subfolder", (Param("file", str), Param("folder", str)), "path",
             ("mkdir",), effect=True),
    )
    goal_tools: tuple[str, ...] = ("cd", "mkdir", "cp")
    final_tools: tuple[str, ...] = ("cat", "wc", "mkdir", "cp")
    goal_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "pwd": ("tell me which folder we are in", "show the current location"),
        "ls": ("list what this folder holds", "show me the contents of this folder"),
        "cd": ("go into the {folder} folder", "open the folder {folder}", "move into {folder}"),
        "cat": ("show me what {file} says", "read {file} to me", "print the text of {file}"),
        "wc": ("count the words in {file}", "tell me how many words {file} has"),
        "mkdir": ("create a folder named {folder}", "make a new directory called {folder}",
                  "set up an empty folder {folder}"),
        "cp": ("copy {file} into the {folder} folder", "put a copy of {file} in {folder}",
               "back up {file} into a folder named {folder}"),
    })
    follow_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "pwd": ("tell me which folder we are in",),
        "ls": ("list what this folder holds",),
        "cd": ("go into {folder}",),
        "cat": ("show me what {file} says",),
        "wc": ("count the words in {file}",),
        "mkdir": ("create a folder named {folder}",),
        "cp": ("put a copy of {file} in {folder}",),
    })
    distractors: tuple[str, ...] = ("I wrote {file} last week.", "My old {folder} folder is gone.",
                                    "Someone renamed {file} once.")
    backend_cls: type[Backend] = FilesBackend

    def make_state(self, rng: random.Random) -> dict[str, Any]:
        names = _pick(rng, FOLDERS, rng.randint(4, 6))
        dirs: dict[str, Any] = {ROOT: {"dirs": [], "files": {}}}
        paths = [ROOT]
        for n in names:
            parent = rng.choice([p for p in paths if p.count("/") <= 2 and len(dirs[p]["dirs"]) < 2])
            dirs[parent]["dirs"].append(n)
            dirs[parent]["dirs"].sort()
            dirs[f"{parent}/{n}"] = {"dirs": [], "files": {}}
            paths.append(f"{parent}/{n}")
        for p in paths:
            for f in _pick(rng, FILES, rng.randint(1 if p == ROOT else 0, 2)):
                dirs[p]["files"][f] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        return {"dirs": dirs, "cwd": ROOT}

    def _new_folder(self, backend: Backend, rng: random.Random) -> str | None:
        used = {p.rsplit("/", 1)[1] for p in backend.state["dirs"]}
        return _pick(rng, [f for f in FOLDERS if f not in used])

    def sample_goal(self, tool, backend, rng):
        here = backend.state["dirs"][backend.state["cwd"]]
        if tool in ("pwd", "ls"):
            return {}
        if tool == "cd":
            return {"folder": _pick(rng, here["dirs"])} if here["dirs"] else None
        if tool in ("cat", "wc"):
            return {"file": _pick(rng, here["files"])} if here["files"] else None
        if tool == "mkdir":
            new = self._new_folder(backend, rng) if len(here["dirs"]) < MAX_ENTRIES else None
            return {"folder": new} if new else None
        if tool == "cp":
            if not here["files"]:
                return None
            if here["dirs"] and (rng.random() < 0.5 or len(here["dirs"]) >= MAX_ENTRIES):
                folder = _pick(rng, here["dirs"])
            else:
                folder = self._new_folder(backend, rng)
            file = _pick(rng, here["files"])
            if folder is None or self._full(backend, folder, file):
                return None
            return {"file": file, "folder": folder}
        raise ValueError(tool)

    def sample_follow(self, tool, backend, ctx, rng):
        here = backend.state["dirs"][backend.state["cwd"]]
        if tool == "cp":  # the folder must exist already (mkdir ran for another folder)
            if not here["files"] or not here["dirs"]:
                return None
            file, folder = _pick(rng, here["files"]), _pick(rng, here["dirs"])
            return None if self._full(backend, folder, file) else {"file": file, "folder": folder}
        return self.sample_goal(tool, backend, rng)

    @staticmethod
    def _full(backend: Backend, folder: str, file: str) -> bool:
        """True when copying ``file`` into ``folder`` would leave it with more than MAX_ENTRIES files."""
        there = backend.state["dirs"].get(f"{backend.state['cwd']}/{folder}", {"files": {}})["files"]
        return file not in there and len(there) >= MAX_ENTRIES

    def entities(self, state):
        return {"file": list(FILES), "folder": list(FOLDERS)}


# ======================================================================================================================
# travel: zip codes, airports, flights, passports and bookings

CITIES = ("Rivermist", "Stonebrook", "Oakdale", "Pinecrest", "Lakeview", "Fairhaven", "Maplewood", "Cedarton",
          "Brightport", "Westfield")
PEOPLE = ("Ana", "Ben", "Cleo", "Dev", "Eli", "Faye", "Gus", "Hana", "Ivo", "Jun")


class TravelBackend(Backend):
    def _city_of_airport(self, airport: str) -> str | None:
        for city, z in self.state["zips"].items():
            if self.state["airports"][str(z)] == airport:
                return city
        return None

    def t_get_zipcode(self, city: str) -> str:
        if city not in self.state["zips"]:
            raise ToolFailure(f"unknown city {city[:40]!r}")
        return str(self.state["zips"][city])

    def t_get_airport(self, zip: str) -> str:  # noqa: A002 - the parameter name is the API's
        if zip not in self.state["airports"]:
            raise ToolFailure(f"no airport for zip {zip[:40]!r}")
        return self.state["airports"][zip]

    def t_find_flight(self, airport: str, destination: str) -> str:
        origin = self._city_of_airport(airport)
        cities = self.state["cities"]
        if origin is None:
            raise ToolFailure(f"unknown airport {airport[:40]!r}")
        if destination not in cities:
            raise ToolFailure(f"unknown destination {destination[:40]!r}")
        if destination == origin:
            raise ToolFailure(f"{airport} is in {destination} already")
        return flight_id(cities, origin, destination)

    def t_get_passport(self, passenger: str) -> str:
        if passenger not in self.state["passports"]:
            raise ToolFailure(f"unknown passenger {passenger[:40]!r}")
        return self.state["passports"][passenger]

    def _flights(self) -> set[str]:
        c = self.state["cities"]
        return {flight_id(c, a, b) for a in c for b in c if a != b}

    def t_buy_ticket(self, flight: str, passport: str) -> str:
        if flight not in self._flights():
            raise ToolFailure(f"unknown flight {flight[:40]!r}")
        if passport not in self.state["passports"].values():
            raise ToolFailure(f"unknown passport {passport[:40]!r}")
        for b in self.state["bookings"]:
            if b["active"] and b["flight"] == flight and b["passport"] == passport:
                return b["ticket"]
        ticket = f"TK{self.state['next_ticket']}"
        self.state["next_ticket"] += 1
        self.state["bookings"].append({"ticket": ticket, "flight": flight, "passport": passport, "active": True})
        return ticket

    def t_get_booking(self, passport: str) -> str:
        active = [b for b in self.state["bookings"] if b["passport"] == passport and b["active"]]
        if not active:
            raise ToolFailure(f"no active booking for passport {passport[:40]!r}")
        return active[-1]["ticket"]

    def t_cancel_ticket(self, ticket: str) -> str:
        for b in self.state["bookings"]:
            if b["ticket"] == ticket:
                b["active"] = False
                return ticket
        raise ToolFailure(f"unknown ticket {ticket[:40]!r}")

    def verified(self) -> Any:
        return sorted((b["flight"], b["passport"], b["active"]) for b in self.state["bookings"])  # ids: order-dependent


def flight_id(cities: list[str], origin: str, destination: str) -> str:
    return f"FL{10 + 9 * cities.index(origin) + cities.index(destination)}"


@dataclass
class TravelFamily(Family):
    name: str = "travel"
    tools: tuple[Tool, ...] = (
        Tool("get_zipcode", "zip code of a city", (Param("city", str),), "zip"),
        Tool("get_airport", "airport serving a zip code", (Param("zip", str),), "airport", ("get_zipcode",)),
        Tool("find_flight", "flight from an airport to a city", (Param("airport", str), Param("destination", str)),
             "flight", ("get_airport",)),
        Tool("get_passport", "passport of a passenger", (Param("passenger", str),), "passport"),
        Tool("buy_ticket", "book a flight", (Param("flight", str), Param("passport", str)), "ticket",
             ("find_flight", "get_passport"), effect=True),
        Tool("get_booking", "latest ticket of a passport", (Param("passport", str),), "ticket", ("get_passport",)),
        Tool("cancel_ticket", "cancel a ticket", (Param("ticket", str),), "cancelled", ("get_booking",),
             effect=True),
    )
    goal_tools: tuple[str, ...] = ("buy_ticket", "cancel_ticket")
    final_tools: tuple[str, ...] = ("buy_ticket", "cancel_ticket", "find_flight", "get_airport", "get_booking",
                                    "get_zipcode", "get_passport")
    goal_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "get_zipcode": ("look up the zip code of {city}", "tell me the postal code of {city}"),
        "get_airport": ("find the airport near {city}", "tell me which airport serves {city}"),
        "find_flight": ("find a flight from {city} to {destination}", "look for a plane from {city} to {destination}"),
        "get_passport": ("get the passport number of {passenger}", "tell me {passenger}'s passport number"),
        "buy_ticket": ("book {passenger} on a flight from {city} to {destination}",
                       "buy {passenger} a ticket from {city} to {destination}",
                       "get {passenger} a seat flying {city} to {destination}"),
        "get_booking": ("look up the latest ticket of {passenger}", "tell me {passenger}'s current ticket"),
        "cancel_ticket": ("cancel the latest booking of {passenger}", "call off {passenger}'s most recent trip"),
    })
    follow_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "get_zipcode": ("look up the zip code of {city}",),
        "get_airport": ("find the airport for that zip",),
        "find_flight": ("check for a flight from there to {destination}",),
        "get_passport": ("get the passport number of {passenger}",),
        "buy_ticket": ("book that flight",),
        "get_booking": ("look up their latest ticket",),
        "cancel_ticket": ("cancel that ticket",),
    })
    distractors: tuple[str, ...] = ("{passenger} flew to {city} last spring.", "The weather in {city} is mild.",
                                    "{passenger} prefers window seats.")
    backend_cls: type[Backend] = TravelBackend

    def make_state(self, rng: random.Random) -> dict[str, Any]:
        cities = _pick(rng, CITIES, rng.randint(6, 8))
        zips = dict(zip(cities, rng.sample(range(10, 100), len(cities))))
        airports = {str(z): c[:3].upper() for c, z in zips.items()}
        people = _pick(rng, PEOPLE, rng.randint(5, 7))
        passports = dict(zip(people, [f"P{n}" for n in rng.sample(range(10, 100), len(people))]))
        bookings, n = [], rng.randint(10, 60)
        for p in rng.sample(people, rng.randint(2, 3)):
            a, b = rng.sample(cities, 2)
            bookings.append({"ticket": f"TK{n}", "flight": flight_id(cities, a, b), "passport": passports[p],
                             "active": True})
            n += 1
        return {"cities": cities, "zips": zips, "airports": airports, "passports": passports, "bookings": bookings,
                "next_ticket": n}

    def _booked(self, backend: Backend) -> list[str]:
        s = backend.state
        return [p for p, pp in s["passports"].items()
                if any(b["passport"] == pp and b["active"] for b in s["bookings"])]

    def sample_goal(self, tool, backend, rng):
        s = backend.state
        city, dest = rng.sample(s["cities"], 2)
        person = _pick(rng, s["passports"])
        if tool in ("get_zipcode", "get_airport"):
            return {"city": city}
        if tool == "find_flight":
            return {"city": city, "destination": dest}
        if tool == "get_passport":
            return {"passenger": person}
        if tool == "buy_ticket":
            flight, pp = flight_id(s["cities"], city, dest), s["passports"][person]
            if any(b["active"] and b["flight"] == flight and b["passport"] == pp for b in s["bookings"]):
                return None
            return {"city": city, "destination": dest, "passenger": person}
        if tool in ("get_booking", "cancel_ticket"):
            booked = self._booked(backend)
            return {"passenger": _pick(rng, booked)} if booked else None
        raise ValueError(tool)

    def sample_follow(self, tool, backend, ctx, rng):
        s = backend.state
        if tool == "get_zipcode":
            return {"city": _pick(rng, s["cities"])}
        if tool == "get_passport":
            return {"passenger": _pick(rng, s["passports"])}
        if tool == "find_flight":
            here = backend._city_of_airport(ctx.get("get_airport", ""))  # type: ignore[attr-defined]
            return {"destination": _pick(rng, [c for c in s["cities"] if c != here])}
        return {}  # get_airport, buy_ticket, get_booking, cancel_ticket: every argument is a reference

    def entities(self, state):
        return {"city": list(state["cities"]), "passenger": list(state["passports"])}


# ======================================================================================================================
# bank: accounts, invoices, payees, transfer quotes and spending limits

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


# ======================================================================================================================
# inventory: products, warehouses, stock, reservations and shipments

ITEMS = ("bolts", "gears", "valves", "cables", "pumps", "hinges", "filters", "springs", "lamps", "fans")
SITES = ("Rivermist", "Stonebrook", "Oakdale", "Pinecrest", "Lakeview", "Fairhaven")


class InventoryBackend(Backend):
    def t_lookup_sku(self, item: str) -> str:
        if item not in self.state["skus"]:
            raise ToolFailure(f"unknown item {item[:40]!r}")
        return self.state["skus"][item]

    def t_find_warehouse(self, city: str) -> str:
        if city not in self.state["warehouses"]:
            raise ToolFailure(f"no warehouse in {city[:40]!r}")
        return self.state["warehouses"][city]

    def _key(self, sku: str, warehouse: str) -> str:
        if sku not in self.state["skus"].values():
            raise ToolFailure(f"unknown sku {sku[:40]!r}")
        if warehouse not in self.state["warehouses"].values():
            raise ToolFailure(f"unknown warehouse {warehouse[:40]!r}")
        return f"{sku}@{warehouse}"

    def t_get_stock(self, sku: str, warehouse: str) -> str:
        return str(self.state["stock"][self._key(sku, warehouse)])

    def t_reserve(self, sku: str, warehouse: str, qty: int) -> str:
        key = self._key(sku, warehouse)
        for rid, r in self.state["reservations"].items():
            if [r["sku"], r["warehouse"], r["qty"]] == [sku, warehouse, qty] and not r["shipped"]:
                return rid
        if not 0 < qty <= self.state["stock"][key]:
            raise ToolFailure(f"cannot reserve {qty}: {self.state['stock'][key]} in stock")
        self.state["stock"][key] -= qty
        rid = f"RS{self.state['next_id']}"
        self.state["next_id"] += 1
        self.state["reservations"][rid] = {"sku": sku, "warehouse": warehouse, "qty": qty, "shipped": False}
        return rid

    def t_ship(self, reservation: str) -> str:
        r = self.state["reservations"].get(reservation)
        if r is None:
            raise ToolFailure(f"unknown reservation {reservation[:40]!r}")
        if not r["shipped"]:
            r["shipped"] = True
            r["shipment"] = f"SH{self.state['next_id']}"
            self.state["next_id"] += 1
        return r["shipment"]

    def t_set_reorder(self, sku: str, level: int) -> str:
        if sku not in self.state["skus"].values():
            raise ToolFailure(f"unknown sku {sku[:40]!r}")
        if not 0 <= level <= 1000:
            raise ToolFailure("level must be between 0 and 1000")
        self.state["reorder"][sku] = level
        return str(level)

    def verified(self) -> Any:
        s = self.state
        return {"stock": s["stock"], "reorder": s["reorder"],
                "reservations": sorted((r["sku"], r["warehouse"], r["qty"], r["shipped"])
                                       for r in s["reservations"].values())}


@dataclass
class InventoryFamily(Family):
    name: str = "inventory"
    tools: tuple[Tool, ...] = (
        Tool("lookup_sku", "product code of an item", (Param("item", str),), "sku"),
        Tool("find_warehouse", "warehouse of a city", (Param("city", str),), "warehouse"),
        Tool("get_stock", "units in stock", (Param("sku", str), Param("warehouse", str)), "stock",
             ("lookup_sku", "find_warehouse")),
        Tool("reserve", "reserve units", (Param("sku", str), Param("warehouse", str), Param("qty", int)),
             "reservation", ("get_stock",), effect=True),
        Tool("ship", "ship a reservation", (Param("reservation", str),), "shipment", ("reserve",), effect=True),
        Tool("set_reorder", "set the reorder level", (Param("sku", str), Param("level", int)), "level",
             ("lookup_sku",), effect=True),
    )
    goal_tools: tuple[str, ...] = ("reserve", "ship", "set_reorder")
    final_tools: tuple[str, ...] = ("reserve", "ship", "set_reorder", "get_stock", "lookup_sku", "find_warehouse")
    goal_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "lookup_sku": ("look up the product code of {item}", "tell me the code for {item}"),
        "find_warehouse": ("find the warehouse id for {city}", "tell me which depot serves {city}"),
        "get_stock": ("tell me how many {item} the {city} warehouse has", "check the stock of {item} in {city}"),
        "reserve": ("hold {qty} {item} in the {city} warehouse", "set aside {qty} units of {item} at {city}"),
        "ship": ("dispatch {qty} {item} from the {city} warehouse", "send out {qty} units of {item} from {city}"),
        "set_reorder": ("set the reorder level of {item} to {level}", "restock {item} when it drops to {level}"),
    })
    follow_templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "lookup_sku": ("look up the product code of {item}",),
        "find_warehouse": ("find the warehouse id for {city}",),
        "get_stock": ("check the remaining stock",),
        "reserve": ("hold {qty} more",),
        "ship": ("dispatch that order",),
        "set_reorder": ("set its reorder level to {level}",),
    })
    distractors: tuple[str, ...] = ("Our {city} team counts {item} every Monday.", "The {item} supplier is late.",
                                    "Nobody in {city} likes {item}.")
    backend_cls: type[Backend] = InventoryBackend

    def make_state(self, rng: random.Random) -> dict[str, Any]:
        items = _pick(rng, ITEMS, rng.randint(4, 6))
        sites = _pick(rng, SITES, rng.randint(2, 4))
        skus = dict(zip(items, [f"SK{n}" for n in rng.sample(range(10, 100), len(items))]))
        whs = dict(zip(sites, [f"WH{n}" for n in rng.sample(range(1, 10), len(sites))]))
        stock = {f"{s}@{w}": rng.randint(5, 40) for s in skus.values() for w in whs.values()}
        return {"skus": skus, "warehouses": whs, "stock": stock, "reservations": {}, "reorder": {},
                "next_id": rng.randint(10, 60)}

    def sample_goal(self, tool, backend, rng):
        s = backend.state
        item, city = _pick(rng, s["skus"]), _pick(rng, s["warehouses"])
        if tool == "lookup_sku":
            return {"item": item}
        if tool == "find_warehouse":
            return {"city": city}
        if tool == "get_stock":
            return {"item": item, "city": city}
        if tool in ("reserve", "ship"):
            sku, wh = s["skus"][item], s["warehouses"][city]
            left = s["stock"][f"{sku}@{wh}"]
            if left < 1:
                return None
            qty = rng.randint(1, min(9, left))
            if any([r["sku"], r["warehouse"], r["qty"], r["shipped"]] == [sku, wh, qty, False]
                   for r in s["reservations"].values()):
                return None
            return {"item": item, "city": city, "qty": qty}
        if tool == "set_reorder":
            level = rng.randint(2, 20)
            return None if s["reorder"].get(s["skus"][item]) == level else {"item": item, "level": level}
        raise ValueError(tool)

    def sample_follow(self, tool, backend, ctx, rng):
        if tool in ("lookup_sku", "find_warehouse"):
            return self.sample_goal(tool, backend, rng)
        if tool == "reserve":
            return {"qty": rng.randint(1, 9)}
        if tool == "set_reorder":
            return {"level": rng.randint(2, 20)}
        return {}

    def entities(self, state):
        return {"item": list(state["skus"]), "city": list(state["warehouses"])}


FAMILIES: dict[str, Family] = {f.name: f for f in (FilesFamily(), TravelFamily(), BankFamily(), InventoryFamily())}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; choose from {', '.join(FAMILIES)}") from None
