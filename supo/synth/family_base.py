"""What every task family is made of (:mod:`supo.synth.families`): a :class:`Backend` (a JSON state and one
deterministic method per tool), a :class:`Family` (its tools as an API graph, its parameter samplers and phrasebook),
:class:`ToolFailure` and the helpers they share.
"""

from __future__ import annotations

import copy
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from supo.synth.api_graph import APIGraph, Tool

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
