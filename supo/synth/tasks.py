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

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from supo.synth.families import FAMILIES, get_family
from supo.synth.family_base import Family, output_value
from supo.synth.phases import SYSTEM_PROMPT, Candidate, advanced_tools, phase1, write_query
from supo.synth.solver import ScriptedSolver, Solver, Validation, validate

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


__all__ = ["SynthStats", "candidate_to_task", "make_candidate", "make_tasks", "synthesize", "system_prompt"]
