"""Task synthesis, Phases I and II (:mod:`supo.synth.tasks` describes the whole): the records a candidate task is made
of (:class:`Call`, :class:`Request`, :class:`AdvancedTool`, :class:`Candidate`), the seeded walks toward target tools
that make its ground-truth calls (:func:`phase1`), and the advanced tools and hard query written over them
(:func:`advanced_tools`, :func:`write_query`).
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from supo.synth.api_graph import APIGraph, directed_sample
from supo.synth.family_base import Backend, Family, output_value

FINISH = "finish"
FIRST = ("First,", "To begin,", "Please")
NEXT = ("Then", "Next,", "After that,", "Now")
JOINS = ("and then", "and after that", "and also")
FILLERS = ("Thanks in advance.", "This is urgent.", "I am new to this system.", "Keep it simple.",
           "It is for a weekly report.")
CLOSINGS = ("Reply with the last result when done.", "Tell me what the last step returns.",
            "I only need the final result.")
VALUE_RE = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9]+)*"
MAX_REQUESTS = 4  # requests (rounds) per task
NOISE_CHARS = 200  # noise is added only while the query stays this short (prompts must fit small working contexts)

SYSTEM_PROMPT = (
    'Use tools, one per turn: <tool_call>{{"name": NAME, "parameters": {{...}}}}</tool_call>. '
    "A tool runs once the tools it requires ran; a parameter named like a tool's output takes that output. "
    "End with finish(answer), the last result.\nTools:\n{tools}\n- finish(answer: str): submit and end."
)


@dataclass
class Call:
    """One call of a sequence: literal parameters, references (parameter → index of the call whose value it reads),
    the observation it got, and its role (``prereq``, ``target``, ``explore`` or ``finish``)."""

    name: str
    params: dict[str, Any]
    refs: dict[str, int] = field(default_factory=dict)
    observation: str = ""
    role: str = "prereq"

    def same_call(self, other: "Call") -> bool:
        return self.name == other.name and _typed(self.params) == _typed(other.params)

    def text(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


def _typed(params: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return sorted((k, type(v).__name__, v) for k, v in params.items())


@dataclass
class Request:
    """One request (round): its target, its literal arguments, its calls, and an optional exploration call."""

    target: str
    args: dict[str, Any]
    calls: list[int] = field(default_factory=list)
    follow: str | None = None
    follow_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdvancedTool:
    """A_T's output: one request's walk abstracted into a single composite tool (FunReason-MT Phase II)."""

    name: str
    description: str
    params: dict[str, str]
    output: str
    sub_tools: list[str]
    arguments: dict[str, Any]


@dataclass
class Candidate:
    """A synthesised task before validation."""

    family: str
    state: dict[str, Any]
    calls: list[Call]
    requests: list[Request]
    advanced: list[AdvancedTool]
    query: str
    answer: str
    answer_observation: str
    expected_state: str


# ======================================================================================================================
# Phase I


class _Reject(Exception):
    pass


def _fill(graph: APIGraph, tool: str, args: dict[str, Any], ctx: dict[str, tuple[str, int]]
          ) -> tuple[dict[str, Any], dict[str, int]]:
    params, refs = {}, {}
    tool_refs = graph.refs(tool)
    for p in graph[tool].params:
        if p.name in tool_refs:
            src = tool_refs[p.name]
            if src not in ctx:
                raise _Reject(f"{tool}.{p.name}: {src} has not run in this request")
            params[p.name], refs[p.name] = ctx[src]
        else:
            if p.name not in args:
                raise _Reject(f"{tool}.{p.name}: no argument")
            params[p.name] = args[p.name]
    return params, refs


def _walk_lengths(graph: APIGraph) -> dict[str, int]:
    return {t: len(graph.ancestors(t)) + 1 for t in graph}


def phase1(family: Family, state: dict[str, Any], n_calls: int, rng: random.Random, explore_prob: float = 0.3
           ) -> tuple[list[Call], list[Request], Backend] | None:
    """One attempt at a ground-truth call sequence of exactly ``n_calls`` calls (``finish`` included), or ``None``."""
    graph = family.graph
    lengths = _walk_lengths(graph)
    min_final = min(lengths[t] for t in family.final_tools)
    backend = family.backend(state)
    calls: list[Call] = []
    requests: list[Request] = []
    need = n_calls - 1
    try:
        while True:
            rem = need - len(calls)
            finals = [t for t in family.final_tools if lengths[t] in (rem, rem - 1)]
            middles = [t for t in family.goal_tools if rem - lengths[t] >= min_final]
            last = len(requests) + 1 >= MAX_REQUESTS
            if finals and (last or not middles or rng.random() < 0.4):
                final, pool = True, finals
            elif middles and not last:
                final, pool = False, middles
            else:
                return None
            pool = list(pool)
            rng.shuffle(pool)
            target, args = None, None
            for t in pool:
                args = family.sample_goal(t, backend, rng)
                if args is not None:
                    target = t
                    break
            if target is None:
                return None
            if final:
                explore = lengths[target] == rem - 1
            else:
                explore = rng.random() < explore_prob and rem - lengths[target] - 1 >= min_final
            req = Request(target, dict(args))
            called: set[str] = set()
            ctx: dict[str, tuple[str, int]] = {}
            while target not in called:
                t = directed_sample(graph, target, called, rng)
                params, refs = _fill(graph, t, args, ctx)
                before = json.dumps(backend.state, sort_keys=True) if t == target else None
                obs = backend.execute(t, params)
                if obs.startswith("Error"):
                    return None
                if before is not None and (graph[t].effect or not final):
                    if json.dumps(backend.state, sort_keys=True) == before:
                        return None  # a request that does nothing
                req.calls.append(len(calls))
                calls.append(Call(t, params, refs, obs, "target" if t == target else "prereq"))
                called.add(t)
                ctx[t] = (output_value(obs), len(calls) - 1)
            if explore:
                if not _explore(family, backend, target, called, ctx, req, calls, rng):
                    if final:
                        return None
            requests.append(req)
            if final:
                break
    except _Reject:
        return None
    if len(calls) != need:
        return None
    last = calls[-1]
    calls.append(Call(FINISH, {"answer": output_value(last.observation)}, {"answer": len(calls) - 1}, "", FINISH))
    return calls, requests, backend


def _explore(family: Family, backend: Backend, target: str, called: set[str], ctx: dict[str, tuple[str, int]],
             req: Request, calls: list[Call], rng: random.Random) -> bool:
    """Eq. 2 branch 1 after the target: a random legal tool with sampled arguments (declined when none fit)."""
    graph = family.graph
    for _ in range(4):
        t = directed_sample(graph, target, called, rng)
        own = family.sample_follow(t, backend, {k: v for k, (v, _) in ctx.items()}, rng)
        if own is None:
            continue
        try:
            params, refs = _fill(graph, t, own, ctx)
        except _Reject:
            continue
        probe = Call(t, params)
        if any(probe.same_call(calls[i]) for i in req.calls):
            continue
        snapshot = copy.deepcopy(backend.state)
        obs = backend.execute(t, params)
        if obs.startswith("Error"):
            backend.state = snapshot
            continue
        req.calls.append(len(calls))
        req.follow, req.follow_args = t, dict(own)
        calls.append(Call(t, params, refs, obs, "explore"))
        called.add(t)
        ctx[t] = (output_value(obs), len(calls) - 1)
        return True
    return False


# ======================================================================================================================
# Phase II


def advanced_tools(family: Family, requests: Sequence[Request], calls: Sequence[Call]) -> list[AdvancedTool]:
    """A_T (deterministic): each request's calls abstracted into one composite tool with the request's arguments."""
    graph = family.graph
    out = []
    for r in requests:
        types = {p.name: p.type.__name__ for n in graph for p in graph[n].params}
        params = {k: types[k] for k in r.args}
        desc = family.goal_templates[r.target][0]
        name = f"{r.target}_adv"
        args = dict(r.args)
        if r.follow is not None:
            name = f"{r.target}_then_{r.follow}_adv"
            desc += ", then " + family.follow_templates[r.follow][0]
            for k, v in r.follow_args.items():
                params[f"then_{k}"] = types[k]
                args[f"then_{k}"] = v
        subs = [calls[i].name for i in r.calls]
        out.append(AdvancedTool(name, f"{desc}. Wraps {', '.join(subs)}.", params,
                                graph[calls[r.calls[-1]].name].output, subs, args))
    return out


def _render(template: str, args: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(args[m.group(1)]), template)


def write_query(family: Family, requests: Sequence[Request], state: dict[str, Any], rng: random.Random,
                noise_prob: float = 0.5) -> str:
    """A_Q (deterministic): the hard query — one sentence per request, goal only, plus seeded noise ε."""
    sentences = []
    for k, r in enumerate(requests):
        conn = rng.choice(FIRST if k == 0 else NEXT)
        text = f"{conn} {_render(rng.choice(family.goal_templates[r.target]), r.args)}"
        if r.follow is not None:
            text += f", {rng.choice(JOINS)} {_render(rng.choice(family.follow_templates[r.follow]), r.follow_args)}"
        sentences.append(text + ".")
    if rng.random() < noise_prob:
        if rng.random() < 0.5:
            noise = rng.choice(FILLERS)
        else:
            ents = family.entities(state)
            noise = re.sub(r"\{(\w+)\}", lambda m: rng.choice(sorted(ents[m.group(1)])), rng.choice(family.distractors))
        where = rng.randint(0, len(sentences))
        if len(" ".join(sentences)) + len(noise) < NOISE_CHARS:
            sentences.insert(where, noise)
    if rng.random() < noise_prob / 2:
        closing = rng.choice(CLOSINGS)
        if len(" ".join(sentences)) + len(closing) < NOISE_CHARS:
            sentences.append(closing)
    return " ".join(sentences)
