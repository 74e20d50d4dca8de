"""Task synthesis, Phase III (:mod:`supo.synth.tasks` describes the whole): the scripted reasoning solver (A_R's
role), the critic (A_C's role) and the validation loop that keeps a candidate only when the solver's calls match its
ground truth within ``k_max`` attempts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from supo.synth.api_graph import APIGraph
from supo.synth.families import get_family
from supo.synth.family_base import Family, output_value
from supo.synth.phases import FINISH, FIRST, JOINS, NEXT, VALUE_RE, Call, Candidate, Request, _fill, _Reject

# ======================================================================================================================
# Phase III: the scripted reasoning solver, the critic and the validation loop


@dataclass
class Hint:
    """A_C's corrective hint: the call expected at ``position`` (0-based)."""

    position: int
    expected: Call
    got: Call | None

    def text(self) -> str:
        got = self.got.text() if self.got is not None else "nothing"
        return f"Call {self.position + 1} should be {self.expected.text()}, not {got}."


def _template_regex(template: str) -> re.Pattern:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos:m.start()]) + f"(?P<{m.group(1)}>{VALUE_RE})"
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]))


class ScriptedSolver:
    """A_R (deterministic): parse the query with the family's phrasebook, plan each request from the documented
    prerequisites, execute, and read values from the observations. It sees no ground truth — only the query, the
    tool specs (the family), the observations of its own calls and the critic's hints.

    Planning: within a request, call the target once its prerequisites ran; before that, the not-yet-called
    prerequisite closest to the target (ties: documentation order). A hint fixes the call at its position.
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[list, list, dict[str, type]]] = {}

    def _phrasebook(self, family: Family):
        if family.name not in self._cache:
            goal = [(t, _template_regex(tpl)) for t in family.graph for tpl in family.goal_templates[t]]
            follow = [(t, _template_regex(tpl)) for t in family.graph for tpl in family.follow_templates[t]]
            types = {p.name: p.type for n in family.graph for p in family.graph[n].params}
            self._cache[family.name] = (goal, follow, types)
        return self._cache[family.name]

    def parse(self, query: str, family: Family) -> list[Request]:
        goal, follow, types = self._phrasebook(family)
        conv = lambda d: {k: (int(v) if types.get(k) is int and v.isdigit() else v) for k, v in d.items()}  # noqa: E731
        out = []
        for sent in re.split(r"(?<=\.)\s+", query.strip()):
            conn = next((c for c in FIRST + NEXT if sent.startswith(c + " ")), None)
            if conn is None or not sent.endswith("."):
                continue  # not a request (noise)
            body = sent[len(conn) + 1:-1]
            req = None
            for tool, rx in goal:
                m = rx.match(body)
                if not m:
                    continue
                rest = body[m.end():]
                if rest == "":
                    req = Request(tool, conv(m.groupdict()))
                    break
                jm = re.match(r", (?:" + "|".join(map(re.escape, JOINS)) + r") (.*)$", rest)
                if jm:
                    for ftool, frx in follow:
                        fm = frx.fullmatch(jm.group(1))
                        if fm:
                            req = Request(tool, conv(m.groupdict()), follow=ftool, follow_args=conv(fm.groupdict()))
                            break
                if req is not None:
                    break
            if req is not None:
                out.append(req)
        return out

    @staticmethod
    def choose(graph: APIGraph, target: str, called: set[str]) -> str:
        if graph.is_legal(target, called):
            return target
        frontier = [t for t in graph.legal(called) if t not in called and graph.distance(t, target) < float("inf")]
        return min(frontier, key=lambda t: graph.distance(t, target))  # min keeps the first of ties

    def __call__(self, query: str, family: Family, execute: Callable[[str, dict[str, Any]], str],
                 hints: dict[int, Hint], max_calls: int = 60) -> list[Call]:
        graph = family.graph
        calls: list[Call] = []

        def run(name: str, params: dict[str, Any], ctx: dict[str, tuple[str, int]], called: set[str]) -> bool:
            obs = execute(name, params) if name in graph else ""
            calls.append(Call(name, params, observation=obs))
            if obs.startswith("Error"):
                return False
            called.add(name)
            ctx[name] = (output_value(obs), len(calls) - 1)
            return True

        def planned(name: str, args: dict[str, Any], ctx) -> tuple[str, dict[str, Any]]:
            pos = len(calls)
            if pos in hints:
                return hints[pos].expected.name, dict(hints[pos].expected.params)
            try:
                return name, _fill(graph, name, args, ctx)[0]
            except _Reject:
                return name, {}

        for req in self.parse(query, family):
            called: set[str] = set()
            ctx: dict[str, tuple[str, int]] = {}
            while req.target not in called and len(calls) < max_calls:
                name, params = planned(self.choose(graph, req.target, called), req.args, ctx)
                if name == FINISH or not run(name, params, ctx, called):
                    break
            if req.follow is not None and len(calls) < max_calls:
                name, params = planned(req.follow, req.follow_args, ctx)
                run(name, params, ctx, called)
        pos = len(calls)
        if pos in hints:
            calls.append(copy.deepcopy(hints[pos].expected))
        else:
            last = output_value(calls[-1].observation) if calls else ""
            calls.append(Call(FINISH, {"answer": last}, role=FINISH))
        return calls


def critic(got: Sequence[Call], truth: Sequence[Call]) -> Hint | None:
    """A_C (deterministic): the first position where ``got`` differs from ``truth`` (``None`` when they match)."""
    for i, want in enumerate(truth):
        if i >= len(got) or not got[i].same_call(want):
            return Hint(i, want, got[i] if i < len(got) else None)
    if len(got) > len(truth):
        return Hint(len(truth), Call("(end)", {}), got[len(truth)])
    return None


@dataclass
class Validation:
    passed: bool
    attempts: int
    hints: list[str]


Solver = Callable[[str, Family, Callable[[str, dict[str, Any]], str], dict[int, Hint]], list[Call]]


def validate(cand: Candidate, solver: Solver, k_max: int = 3) -> Validation:
    """Phase III: up to ``k_max`` solver attempts, each on a fresh backend; kept iff the calls match ``G_truth``."""
    family = get_family(cand.family)
    hints: dict[int, Hint] = {}
    texts: list[str] = []
    for k in range(1, k_max + 1):
        backend = family.backend(cand.state)
        got = solver(cand.query, family, backend.execute, dict(hints))
        hint = critic(got, cand.calls)
        if hint is None:
            return Validation(True, k, texts)
        if hint.position in hints:  # the solver ignored the hint: more attempts cannot help
            return Validation(False, k, texts)
        hints[hint.position] = hint
        texts.append(hint.text())
    return Validation(False, k_max, texts)
