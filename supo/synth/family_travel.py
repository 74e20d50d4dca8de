"""The travel task family (:mod:`supo.synth.families`): zip codes, airports, flights, passports and
bookings."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from supo.synth.api_graph import Param, Tool
from supo.synth.family_base import Backend, Family, ToolFailure, _pick

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
