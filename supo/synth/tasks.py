"""FunReason-MT-style task synthesis (arXiv 2510.24645 §4.1–4.4) with deterministic programs for its four agents.

No LLM is involved: the Tooling, Querying, Reasoning and Critiquing agents (A_T, A_Q, A_R, A_C) are replaced by the
deterministic programs below. What each phase produces:

* **Phase I** (:func:`phase1`): a task is a sequence of requests (the paper's rounds, §4.4). For each request a target
  tool is drawn, its request arguments are sampled from the backend's current state (the family's parameter sampler),
  and a walk of :func:`~supo.synth.api_graph.directed_sample` calls (Eq. 2) runs from an empty called set until the
  target is called; then, with probability ``explore_prob`` (in the last request: when the call count needs it), one
  more Eq. 2 draw follows the target (branch 1: a random legal tool — exploration), with sampled arguments. Every
  call is executed against the family's backend; its observation is recorded and feeds later calls (a parameter
  named like an ancestor's output reads that output). The concatenated calls, then ``finish(answer)`` with the value
  of the last call, are the ground-truth call sequence ``G_truth``. The number of calls (``finish`` included) is the
  difficulty knob; at most ``MAX_REQUESTS`` requests per task.
* **Phase II** (:func:`advanced_tools`, :func:`write_query`): each request's walk is abstracted into an
  :class:`AdvancedTool` (``buy_ticket_adv(city, destination, passenger) -> ticket`` wrapping ``get_passport``,
  ``get_zipcode``, ``get_airport``, ``find_flight``, ``buy_ticket``; A_T's role). The hard query (A_Q's role) is written
  against the advanced tools: one sentence per request from a seeded choice of paraphrase templates that state the
  goal and its arguments but never the prerequisite calls, plus seeded noise ε (filler and distractor sentences, a
  closing line).
* **Phase III** (:func:`validate`): a scripted reasoning solver (:class:`ScriptedSolver`, A_R's role) that knows only
  the query, the family's tool specs and phrasebook, and the observations of its own calls on a fresh backend, plans
  each request from the documented prerequisites and executes it. The critic (:func:`critic`, A_C's role) compares
  its calls with ``G_truth`` and names the first mismatching call; the hint is added to the solver's prompt and it
  retries, up to ``k_max`` attempts. A candidate is **kept only when the solver's calls match** ``G_truth`` within
  ``k_max`` attempts. Mismatches come from choices the query cannot pin down: Eq. 2 breaks ties between equally
  distant prerequisites at random, while the solver takes them in documentation order.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from supo.synth.api_graph import APIGraph, directed_sample
from supo.synth.families import FAMILIES, Backend, Family, get_family, output_value

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


# ======================================================================================================================
# whole tasks


def make_candidate(family: Family, n_calls: int, rng: random.Random, *, explore_prob: float = 0.3,
                   noise_prob: float = 0.5, tries: int = 60) -> Candidate | None:
    """Phases I and II for one task of exactly ``n_calls`` calls (a fresh backend state per try)."""
    for _ in range(tries):
        state = family.make_state(rng)
        out = phase1(family, state, n_calls, rng, explore_prob)
        if out is None:
            continue
        calls, requests, backend = out
        query = write_query(family, requests, state, rng, noise_prob)
        last = calls[-2]
        return Candidate(family.name, state, calls, requests, advanced_tools(family, requests, calls), query,
                         output_value(last.observation), last.observation, backend.verified_json())
    return None


@dataclass
class SynthStats:
    """Counts of one family's synthesis: candidates validated, kept, kept on the first attempt, generation misses."""

    family: str
    candidates: int = 0
    kept: int = 0
    first_try: int = 0
    unbuildable: int = 0

    @property
    def kept_share(self) -> float:
        return self.kept / self.candidates if self.candidates else 0.0


def system_prompt(family: Family) -> str:
    return SYSTEM_PROMPT.format(tools="\n".join(family.spec_lines()))


def synthesize(family_name: str, split: str, num: int, min_calls: int, max_calls: int, seed: int, *,
               k_max: int = 3, explore_prob: float = 0.3, noise_prob: float = 0.5, solver: Solver | None = None,
               ) -> tuple[list[tuple[Candidate, Validation]], SynthStats]:
    """``num`` validated candidates of one family with difficulties uniform in [min_calls, max_calls]."""
    if not 2 <= min_calls <= max_calls:
        raise ValueError(f"need 2 ≤ min_calls ≤ max_calls, got {min_calls}..{max_calls}")
    family = get_family(family_name)
    solver = solver if solver is not None else ScriptedSolver()
    rng = random.Random(f"funcall-{seed}-{split}-{family_name}")
    stats = SynthStats(family_name)
    kept: list[tuple[Candidate, Validation]] = []
    while len(kept) < num:
        if stats.candidates + stats.unbuildable > 50 * num + 200:
            raise RuntimeError(f"family {family_name}: only {len(kept)} of {num} tasks survived "
                               f"({stats.candidates} candidates, {stats.unbuildable} unbuildable)")
        cand = make_candidate(family, rng.randint(min_calls, max_calls), rng, explore_prob=explore_prob,
                              noise_prob=noise_prob)
        if cand is None:
            stats.unbuildable += 1
            continue
        stats.candidates += 1
        v = validate(cand, solver, k_max)
        if v.passed:
            stats.kept += 1
            stats.first_try += v.attempts == 1
            kept.append((cand, v))
    return kept, stats


def candidate_to_task(cand: Candidate, v: Validation, task_id: str, split: str):
    from supo.types import Task

    family = get_family(cand.family)
    plan = [{"name": c.name, "params": c.params, "refs": c.refs, "role": c.role} for c in cand.calls]
    return Task(
        id=task_id,
        env="funcall",
        env_config={
            "family": cand.family,
            "state": cand.state,
            "plan": plan,
            "expected_state": cand.expected_state,
            "answer": cand.answer,
            "answer_observation": cand.answer_observation,
            "advanced_tools": [asdict(a) for a in cand.advanced],
            "validation_attempts": v.attempts,
        },
        split=split,
        prompt=[{"role": "system", "content": system_prompt(family)}, {"role": "user", "content": cand.query}],
        reference=cand.answer,
        difficulty=len(cand.calls),
    )


def make_tasks(split: str, num: int, min_calls: int, max_calls: int, families: Sequence[str], seed: int, *,
               k_max: int = 3, explore_prob: float = 0.3, noise_prob: float = 0.5, solver: Solver | None = None,
               return_stats: bool = False):
    """``num`` validated tasks, families interleaved (task k has family ``families[k % len(families)]``)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"funcall.families: unknown or empty {list(families)}; choose from {', '.join(FAMILIES)}")
    per = {f: sum(1 for k in range(num) if families[k % len(families)] == f) for f in dict.fromkeys(families)}
    pools, stats = {}, {}
    for f, n in per.items():
        pools[f], stats[f] = synthesize(f, split, n, min_calls, max_calls, seed, k_max=k_max,
                                        explore_prob=explore_prob, noise_prob=noise_prob, solver=solver)
    taken = {f: 0 for f in per}
    tasks = []
    for k in range(num):
        f = families[k % len(families)]
        cand, v = pools[f][taken[f]]
        taken[f] += 1
        tasks.append(candidate_to_task(cand, v, f"{split}-{k:05d}", split))
    return (tasks, stats) if return_stats else tasks
