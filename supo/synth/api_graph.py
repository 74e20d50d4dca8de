"""FunReason-MT Phase I (arXiv 2510.24645, §4.1): the API relation graph and the Directed Sampler (Eq. 2).

A :class:`Tool` spec has typed parameters, one named output and prerequisites. The tools of a task family form an
:class:`APIGraph`: an edge ``p -> t`` says that ``p`` must have run before ``t`` may (FunReason-MT's legality check
``I(T_i, T_called) = 1{Prerequisite(T_i) ⊆ T_called}``). The graph is validated when built: unknown prerequisites and
cycles are rejected with an error that names them.

Data flow follows the same edges: a parameter whose name is the output name of one of the tool's ancestors (its
transitive prerequisites) is a *reference* — its value is read from the latest observation of that ancestor. Every
other parameter is a *literal* taken from the user's request. (``get_airport(zip)`` reads ``zip`` from
``get_zipcode``'s output; ``get_zipcode(city)`` takes ``city`` from the request.)

:func:`directed_sample` is Eq. 2, given the target ``T_a`` and the called set ``T_called``:

1. ``T_a ∈ T_called``  →  a random legal tool (exploration after the target was reached);
2. ``T_a`` legal       →  ``T_a``;
3. otherwise           →  ``argmin dist(T_k, T_a)`` over the legal tools, ties broken by the seeded ``rng``.

``dist`` is the length of the shortest directed path ``T_k -> … -> T_a`` in the prerequisite graph (infinite when
``T_k`` is not an ancestor of ``T_a``). In branch 3 the minimum runs over the legal tools *not yet called* (the newly
legal frontier): read literally — called tools stay legal — the argmin can re-pick a called prerequisite forever at
a tool with two prerequisites of different depth (``buy_ticket`` needs ``find_flight`` at depth 3 and
``get_passport`` at depth 1: once ``get_passport`` ran, it would stay the argmin). On the frontier every step calls
a new ancestor of the target, so a walk reaches the target in at most ``|ancestors| + 1`` calls.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


class APIGraphError(ValueError):
    """A tool graph that cannot be used: duplicate names, unknown prerequisites, cycles, ambiguous data flow."""


@dataclass(frozen=True)
class Param:
    """One parameter: name, python type (``str`` or ``int``) and a short description."""

    name: str
    type: type
    doc: str = ""


@dataclass(frozen=True)
class Tool:
    """A tool spec: typed parameters, the name of the value it returns, prerequisites, and whether it changes the
    persistent state of the backend (``effect``)."""

    name: str
    doc: str
    params: tuple[Param, ...] = ()
    output: str = "result"
    requires: tuple[str, ...] = ()
    effect: bool = False

    @property
    def param_types(self) -> dict[str, type]:
        return {p.name: p.type for p in self.params}

    def signature(self) -> str:
        args = ", ".join(f"{p.name}: {p.type.__name__}" for p in self.params)
        return f"{self.name}({args}) -> {self.output}"


class APIGraph:
    """The prerequisite graph of a set of tools (a DAG), with legality, graph distance and data-flow references."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        tools = list(tools)
        self.tools: dict[str, Tool] = {}
        for t in tools:
            if not isinstance(t, Tool):
                raise APIGraphError(f"expected Tool specs, got {type(t).__name__}")
            if not t.name or not t.name.isidentifier():
                raise APIGraphError(f"tool name {t.name!r} is not an identifier")
            if t.name in self.tools:
                raise APIGraphError(f"duplicate tool {t.name!r}")
            self.tools[t.name] = t
        for t in tools:
            unknown = [r for r in t.requires if r not in self.tools]
            if unknown:
                raise APIGraphError(f"tool {t.name!r} requires unknown tool(s) {unknown}; "
                                    f"known: {', '.join(self.tools)}")
            if len(set(t.requires)) != len(t.requires):
                raise APIGraphError(f"tool {t.name!r} lists a prerequisite twice: {list(t.requires)}")
            for p in t.params:
                if p.type not in (int, str):
                    raise APIGraphError(f"tool {t.name!r}: parameter {p.name!r} has type {p.type!r}; use int or str")
        self._check_acyclic()
        self.order = list(self.tools)  # declaration order: every listing below follows it
        self._dependents: dict[str, list[str]] = {n: [] for n in self.order}
        for t in tools:
            for r in t.requires:
                self._dependents[r].append(t.name)
        self._ancestors = {n: self._collect_ancestors(n) for n in self.order}
        self._dist = {n: self._bfs_from(n) for n in self.order}
        self._refs = {n: self._collect_refs(n) for n in self.order}

    # ------------------------------------------------------------------------------------------------------------
    # validation

    def _check_acyclic(self) -> None:
        color: dict[str, int] = {}  # 0/absent = new, 1 = on the stack, 2 = done
        for root in self.tools:
            if color.get(root):
                continue
            stack: list[tuple[str, int]] = [(root, 0)]
            path: list[str] = []
            while stack:
                node, i = stack.pop()
                if i == 0:
                    color[node] = 1
                    path.append(node)
                reqs = self.tools[node].requires
                if i < len(reqs):
                    stack.append((node, i + 1))
                    nxt = reqs[i]
                    if color.get(nxt) == 1:
                        cycle = path[path.index(nxt):] + [nxt]
                        raise APIGraphError("prerequisite cycle: " + " requires ".join(cycle))
                    if not color.get(nxt):
                        stack.append((nxt, 0))
                else:
                    color[node] = 2
                    path.pop()

    def _collect_ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.tools[name].requires)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self.tools[n].requires)
        return seen

    def _bfs_from(self, src: str) -> dict[str, int]:
        """Shortest directed path lengths src -> dependents -> ... (edges prerequisite -> dependent)."""
        dependents = self._dependents
        dist = {src: 0}
        q = deque([src])
        while q:
            n = q.popleft()
            for d in dependents[n]:
                if d not in dist:
                    dist[d] = dist[n] + 1
                    q.append(d)
        return dist

    def _collect_refs(self, name: str) -> dict[str, str]:
        """{parameter: the ancestor whose output it reads} for the reference parameters of ``name``."""
        t = self.tools[name]
        refs: dict[str, str] = {}
        for p in t.params:
            producers = sorted(a for a in self._ancestors[name] if self.tools[a].output == p.name)
            if len(producers) > 1:
                raise APIGraphError(f"tool {name!r}: parameter {p.name!r} could come from any of {producers}; "
                                    f"give their outputs distinct names")
            if producers:
                refs[p.name] = producers[0]
        return refs

    # ------------------------------------------------------------------------------------------------------------
    # queries

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def __getitem__(self, name: str) -> Tool:
        return self.tools[name]

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)

    def _known(self, name: str) -> Tool:
        try:
            return self.tools[name]
        except KeyError:
            raise APIGraphError(f"unknown tool {name!r}; known: {', '.join(self.order)}") from None

    def is_legal(self, name: str, called: Iterable[str]) -> bool:
        """FunReason-MT's legality check: every prerequisite of ``name`` is in ``called``."""
        called = set(called)
        return all(r in called for r in self._known(name).requires)

    def legal(self, called: Iterable[str]) -> list[str]:
        """T_legal: the tools whose prerequisites all ran (called tools included), in declaration order."""
        called = set(called)
        return [n for n in self.order if all(r in called for r in self.tools[n].requires)]

    def distance(self, a: str, b: str) -> float:
        """Edges on the shortest directed path a -> ... -> b (a prerequisite chain); ``math.inf`` if none."""
        self._known(a)
        self._known(b)
        return self._dist[a].get(b, math.inf)

    def ancestors(self, name: str) -> set[str]:
        """The transitive prerequisites of ``name``."""
        return set(self._ancestors[self._known(name).name])

    def refs(self, name: str) -> dict[str, str]:
        """{parameter: producing ancestor} for the parameters read from earlier observations."""
        return dict(self._refs[self._known(name).name])

    def literals(self, name: str) -> list[str]:
        """The parameters of ``name`` that come from the request (not from an earlier observation)."""
        refs = self._refs[self._known(name).name]
        return [p.name for p in self.tools[name].params if p.name not in refs]

    def walk_literals(self, name: str) -> list[str]:
        """The literal parameters of ``name`` and all its ancestors (what a request for ``name`` must state)."""
        out: list[str] = []
        for n in self.order:
            if n == name or n in self._ancestors[name]:
                out.extend(p for p in self.literals(n) if p not in out)
        return out


def directed_sample(graph: APIGraph, target: str, called: Iterable[str], rng: random.Random) -> str:
    """Eq. 2 of FunReason-MT: the next tool of a walk toward ``target`` given the tools ``called`` so far.

    See the module docstring for the three branches and the reading of T_legal in branch 3. Ties in branch 3 are
    broken by ``rng`` among the tied tools in declaration order, so a walk is reproducible for a seed.
    """
    called = set(called)
    graph._known(target)
    legal = graph.legal(called)
    if target in called:  # branch 1: explore after the target was reached
        return rng.choice(legal)
    if graph.is_legal(target, called):  # branch 2
        return target
    frontier = [t for t in legal if t not in called and math.isfinite(graph.distance(t, target))]
    if not frontier:  # cannot happen in a validated DAG: a minimal uncalled ancestor is always legal
        raise APIGraphError(f"no legal step toward {target!r} from called={sorted(called)}")
    best = min(graph.distance(t, target) for t in frontier)
    ties = [t for t in frontier if graph.distance(t, target) == best]
    return ties[0] if len(ties) == 1 else rng.choice(ties)


def walk(graph: APIGraph, target: str, rng: random.Random, called: Iterable[str] = ()) -> list[str]:
    """The tool sequence of a Phase I walk from ``called`` until ``target`` is called (branches 2 and 3 of Eq. 2)."""
    called = set(called)
    seq: list[str] = []
    while target not in called:
        t = directed_sample(graph, target, called, rng)
        seq.append(t)
        called.add(t)
        if len(seq) > len(graph) + 1:  # unreachable for a DAG (each step calls a new ancestor)
            raise APIGraphError(f"walk toward {target!r} does not terminate")
    return seq
