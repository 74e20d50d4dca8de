"""The inventory task family (:mod:`supo.synth.families`): products, warehouses, stock, reservations and
shipments."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from supo.synth.api_graph import Param, Tool
from supo.synth.family_base import Backend, Family, ToolFailure, _pick

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
