"""The synthesised function-calling environment (FunReason-MT style, ``env.name: funcall``).

Tasks come from :mod:`supo.synth.tasks`: a family's API graph over a small stateful backend (files, travel, bank,
inventory), a ground-truth call sequence built by Eq. 2 walks toward target tools, a hard query that names the goals
and hides the prerequisite calls, kept only when a scripted solver reproduced the calls (Phase III).

An episode runs the family's tools on a fresh copy of the task's backend. The API graph is enforced: a tool whose
prerequisites have not run returns an ``Error:`` observation, as does any malformed or refused call; the episode goes
on. ``finish(answer)`` ends it with reward 1 iff the backend's persistent state equals the ground truth's final state
**and** the answer is the result of the last request (its value, e.g. ``TK12``, or the whole line ``ticket TK12``),
else 0 — binary and checkable without the call sequence: any route that leaves the same persistent state (issued ids
and cursors such as the current folder do not count) and gives the same answer scores 1.

The scripted expert (a deterministic program, like the synthesis agents) replays the validated call sequence from
what it has seen: literal arguments come from the plan,
referenced ones (a zip code, a ticket id) from its own memory of earlier observations. Its summaries state how many
calls are done and the remembered values still needed; with probability ``error_rate`` a summary loses or corrupts a
needed value, or claims a step done that is not, and the expert then continues from what it wrote, so it fails.
The env's summary oracle (:func:`summary_oracle`) checks a summary against the error-free expert's own at its count.
"""

from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass, field
from typing import Any

from supo.envs.base import Tool, ToolCallError, ToolEnv, format_tool_call, parse_tool_call
from supo.envs.spec import EnvSpec
from supo.errors import require
from supo.fields import F
from supo.models import SUMMARY_CLOSE, SUMMARY_OPEN
from supo.synth.families import FAMILIES as _FAMILIES
from supo.synth.families import get_family
from supo.synth.family_base import ToolFailure, output_value
from supo.synth.phases import FINISH
from supo.synth.tasks import make_tasks
from supo.types import Task

UNKNOWN = "unknown"


def _norm(text: str) -> str:
    return " ".join(str(text).split())


class FuncallEnv(ToolEnv):
    """One episode over one task's backend."""

    def __init__(self, family: str, state: dict[str, Any], expected_state: str, answer: str,
                 answer_observation: str = "") -> None:
        super().__init__()
        self.family = get_family(family)
        self.initial_state = copy.deepcopy(state)
        self.backend = self.family.backend(self.initial_state)
        self.expected_state = expected_state
        self.answers = {_norm(answer)} | ({_norm(answer_observation)} if answer_observation else set())
        graph = self.family.graph
        self.tools = {
            name: Tool(name, graph[name].doc, graph[name].param_types, graph[name].requires, fn=self._runner(name))
            for name in graph
        }
        self.tools[FINISH] = Tool(FINISH, "submit the result of the last request and end the task", {"answer": str},
                                  fn=self._finish, final=True)

    def reset(self) -> str:
        self.backend = self.family.backend(self.initial_state)
        return super().reset()

    def _runner(self, name: str):
        def run(**params: Any) -> str:
            try:
                return self.backend.call(name, params)
            except ToolFailure as e:
                raise ToolCallError(str(e)) from None

        return run

    def _finish(self, answer: str) -> str:
        ok = self.backend.verified_json() == self.expected_state and _norm(answer) in self.answers
        self.reward = 1.0 if ok else 0.0
        return "correct" if ok else "incorrect"


def make_env(task: Task) -> FuncallEnv:
    cfg = task.env_config
    try:
        return FuncallEnv(cfg["family"], cfg["state"], cfg["expected_state"], cfg["answer"],
                          cfg.get("answer_observation", ""))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"task {task.id}: bad env_config for the funcall env ({e})") from None


# ----------------------------------------------------------------------------------------------------------------------
# the scripted expert

_SUMMARY_RE = re.compile(r"^(\d+) calls done((?:; [^;]+)*)$")
_WORDS = ("none", "misc", "other", "blank")


@dataclass
class _ExpertState:
    pos: int = 0  # the next plan step
    mem: dict[int, str] = field(default_factory=dict)  # plan step -> the value its observation gave


def summary_text(pos: int, facts: list[tuple[str, str]]) -> str:
    body = f"{pos} calls done" + "".join(f"; {name} {value}" for name, value in facts)
    return f"{SUMMARY_OPEN}{body}{SUMMARY_CLOSE}"


def read_summary(text: str) -> tuple[int, list[tuple[str, str]]] | None:
    """The (calls done, [(name, value), ...]) of a summary in :func:`summary_text`'s wording, with or without the
    summary tags around it; None when the text does not follow the wording."""
    body = text.strip().removeprefix(SUMMARY_OPEN).removesuffix(SUMMARY_CLOSE).strip()
    m = _SUMMARY_RE.match(body)
    if not m:
        return None
    facts = [fact.partition(" ") for fact in filter(None, m.group(2).split("; "))]
    return int(m.group(1)), [(name, value) for name, _, value in facts]


def wrong_value(value: str, rng: random.Random) -> str:
    """A plausible but different value: another number in the last digit run, else another last word."""
    runs = list(re.finditer(r"\d+", value))
    if runs:
        m = runs[-1]
        width, cur = len(m.group()), int(m.group())
        lo, hi = 10 ** (width - 1) if width > 1 else 0, 10**width - 1
        choices = [n for n in range(lo, hi + 1) if n != cur]
        n = rng.choice(choices) if choices else cur + 1
        return value[: m.start()] + str(n) + value[m.end():]
    words = value.split()
    if not words:
        return rng.choice(_WORDS)
    words[-1] = rng.choice([w for w in _WORDS if w != words[-1]])
    return " ".join(words)


class FuncallExpert:
    """Replays the task's validated call sequence; see the module docstring. Same protocol as ``ArrayExpert``:
    :meth:`act`, :meth:`observe`, :meth:`drop` (forget the last pair) and :meth:`summarize`."""

    def __init__(self, task: Task, error_rate: float = 0.0, seed: int = 0) -> None:
        cfg = task.env_config
        self.family = get_family(cfg["family"])
        self.plan: list[dict[str, Any]] = cfg["plan"]
        self.error_rate = error_rate
        self.rng = random.Random(f"expert-{seed}-{task.id}")
        self.state = _ExpertState()
        self._history: list[_ExpertState] = []
        self.summary_errors = 0
        graph, n = self.family.graph, len(self.plan)
        self.out_name = [graph[s["name"]].output if s["name"] in graph else "answer" for s in self.plan]
        self.consumers: list[list[int]] = [[] for _ in range(n)]
        for j, s in enumerate(self.plan):
            for i in s["refs"].values():
                self.consumers[i].append(j)
        answer_src = self.plan[-1]["refs"].get("answer", n - 2)
        self.checked = [s["name"] == FINISH or (s["name"] in graph and graph[s["name"]].effect) or i == answer_src
                        for i, s in enumerate(self.plan)]
        self.answer_src = answer_src
        # does the value of step i reach a checked step (the state or the answer)?
        self.matters = [False] * n
        for i in reversed(range(n)):
            self.matters[i] = any(self.checked[j] or self.matters[j] for j in self.consumers[i])

    # the protocol -----------------------------------------------------------------------------------------------
    def act(self) -> str:
        step = self.plan[min(self.state.pos, len(self.plan) - 1)]
        params = dict(step["params"])
        for p, i in step["refs"].items():
            params[p] = self.state.mem.get(i, UNKNOWN)
        return format_tool_call(step["name"], **params)

    def observe(self, action: str, observation: str) -> None:
        self._history.append(copy.deepcopy(self.state))
        try:
            parse_tool_call(action)
        except ToolCallError:
            return
        s = self.state
        if s.pos < len(self.plan) and not observation.startswith("Error"):
            s.mem[s.pos] = output_value(observation)
        s.pos += 1  # a refused call counts as done: the expert goes on (refusals only follow a bad summary)

    def drop(self) -> None:
        """The last (action, observation) left the context: forget what it taught."""
        if self._history:
            self.state = self._history.pop()

    def live(self, pos: int) -> list[int]:
        """Steps before ``pos`` whose values later steps still read."""
        return sorted({i for j in range(pos, len(self.plan)) for i in self.plan[j]["refs"].values() if i < pos})

    def summarize(self) -> str:
        s = self.state
        pos = s.pos
        facts = {i: s.mem[i] for i in self.live(pos) if i in s.mem}
        if self.error_rate > 0 and self.rng.random() < self.error_rate:
            bad = self._corrupt(pos, facts)
            if bad is not None:
                pos, facts = bad
                self.summary_errors += 1
        text = summary_text(pos, [(self.out_name[i], v) for i, v in sorted(facts.items())])
        self.state = self.parse_summary(text)  # continue from what was written
        self._history.clear()
        return text

    # summaries ----------------------------------------------------------------------------------------------------
    def parse_summary(self, text: str) -> _ExpertState:
        """The state a summary describes (:func:`read_summary`; nothing done when it does not follow the wording):
        each value goes to the last step still read later whose output has its name; other names are ignored."""
        read = read_summary(text)
        if read is None:
            return _ExpertState()
        pos, facts = read
        live = self.live(pos)
        mem = {}
        for name, value in facts:
            match = [i for i in live if self.out_name[i] == name]
            if match:
                mem[match[-1]] = value
        return _ExpertState(pos, mem)

    def _corrupt(self, pos: int, facts: dict[int, str]) -> tuple[int, dict[int, str]] | None:
        """A summary error that changes the outcome: a needed value lost or wrong, or a checked step skipped."""
        def hurts(j: int) -> bool:  # step j, still to run (the step at pos may have run before a drop), matters
            return (j > pos or self.plan[j]["name"] == FINISH) and (self.checked[j] or self.matters[j])

        needed = [i for i in facts if any(hurts(j) for j in self.consumers[i] if j >= pos)]
        if needed:
            i = self.rng.choice(needed)
            facts = dict(facts)
            if self.rng.random() < 0.5:
                del facts[i]
            else:
                facts[i] = wrong_value(facts[i], self.rng)
            return pos, facts
        ahead = [j for j in range(pos + 1, len(self.plan) - 1) if self.checked[j]]
        if ahead:
            new = ahead[0] + 1
        elif pos == self.answer_src:
            new = pos + 1
        else:
            return None
        keep = set(self.live(new))
        return new, {i: v for i, v in facts.items() if i in keep}


def corpus(tasks: list[Task]) -> list[str]:
    """The text pieces the tokenizer is trained on: prompts, expert actions, observations and summaries."""
    texts: list[str] = []
    for t in tasks:
        texts.extend(m["content"] for m in t.prompt)
        env, expert = make_env(t), FuncallExpert(t)
        env.reset()
        snapshots = []
        for _ in range(len(expert.plan) + 1):
            snapshots.append(copy.deepcopy(expert.state))
            a = expert.act()
            obs, done, _, _ = env.step(a)
            texts.extend([a, obs])
            if done:
                break
            expert.observe(a, obs)
        for snap in snapshots[1::3]:
            facts = [(expert.out_name[i], snap.mem[i]) for i in expert.live(snap.pos) if i in snap.mem]
            texts.append(summary_text(snap.pos, facts))
    return texts


def expert_factory(task: Task, error_rate: float, seed: int) -> FuncallExpert:
    return FuncallExpert(task, error_rate=error_rate, seed=seed)


@dataclass
class FuncallEnvConfig:
    """The FunReason-MT-style synthesised function-calling environment's options (params.yaml section ``funcall``;
    ``env.name: funcall``)."""

    families: list[str] = F(["files", "travel", "bank", "inventory"],
                            "task families (API graphs over simulated backends, supo.synth.families) to draw from; "
                            "tasks alternate between them")
    train_min_calls: int = F(4, "fewest tool calls (finish included) the ground-truth solution needs in the train split")
    train_max_calls: int = F(10, "most tool calls in the train split")
    test_min_calls: int = F(8, "fewest tool calls in the test split (the test split must need more calls than the "
                               "train split on average)")
    test_max_calls: int = F(14, "most tool calls in the test split")
    num_train: int = F(2000, "tasks in the train split")
    num_test: int = F(128, "tasks in the test split")
    k_max: int = F(3, "Phase III: solver attempts per candidate (each failed one adds the critic's hint); a candidate "
                      "is kept only when the solver's calls match the ground truth within k_max attempts")
    explore_prob: float = F(0.3, "probability that a request goes on after its target with one exploration call "
                                 "(Eq. 2: a random legal tool)")
    noise_prob: float = F(0.5, "probability of noise sentences (filler, distractors) and, separately, of a closing "
                               "line in a query")

    def validate(self) -> None:
        """Families, call ranges (the test split needs more calls), probabilities; ConfigError naming
        ``funcall.<field>``."""
        unknown = [f for f in self.families if f not in _FAMILIES]
        require(bool(self.families) and not unknown, "funcall.families",
                f"unknown or empty {self.families}; choose from {', '.join(_FAMILIES)}")
        require(2 <= self.train_min_calls <= self.train_max_calls, "funcall.train_min_calls/train_max_calls",
                f"need 2 ≤ min ≤ max, got {self.train_min_calls}..{self.train_max_calls}")
        require(2 <= self.test_min_calls <= self.test_max_calls, "funcall.test_min_calls/test_max_calls",
                f"need 2 ≤ min ≤ max, got {self.test_min_calls}..{self.test_max_calls}")
        require(self.test_min_calls + self.test_max_calls > self.train_min_calls + self.train_max_calls,
                "funcall.test_min_calls", f"the test split ({self.test_min_calls}..{self.test_max_calls}) must need "
                f"more calls than the train split ({self.train_min_calls}..{self.train_max_calls}) on average")
        require(self.num_train >= 1 and self.num_test >= 1, "funcall.num_train/num_test", "splits must not be empty")
        require(self.k_max >= 1, "funcall.k_max", f"must be ≥ 1, got {self.k_max}")
        require(0.0 <= self.explore_prob <= 1.0, "funcall.explore_prob", f"must be in [0, 1], got {self.explore_prob}")
        require(0.0 <= self.noise_prob <= 1.0, "funcall.noise_prob", f"must be in [0, 1], got {self.noise_prob}")


def make_split(options: FuncallEnvConfig, split: str, seed: int) -> list[Task]:
    """The ``split`` ("train" or "test") for ``options`` and ``seed``."""
    f = options
    lo, hi, num = ((f.train_min_calls, f.train_max_calls, f.num_train) if split == "train"
                   else (f.test_min_calls, f.test_max_calls, f.num_test))
    return make_tasks(split, num, lo, hi, f.families, seed, k_max=f.k_max, explore_prob=f.explore_prob,
                      noise_prob=f.noise_prob)


def build_split(cfg, split: str) -> list[Task]:
    """The ``split`` of a run config (its ``funcall`` section and ``seed``)."""
    return SPEC.build_split(cfg, split)


from supo.envs.base import check_env_field  # noqa: E402  (the env_config check, appended)


def _is_plan(value) -> bool:
    return isinstance(value, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                           and isinstance(s.get("refs", {}), dict) for s in value)


def validate_env_config(cfg: dict) -> None:
    """What :func:`make_env` and the expert read: ``family`` (a synthesis family), the backend's ``state`` (an
    object), ``expected_state`` and ``answer`` (strings), and if present ``answer_observation`` (a string) and
    ``plan`` (a list of calls, each with a ``name`` and ``refs``). Raises ValueError naming the field."""
    check_env_field(cfg, "family", lambda v: v in _FAMILIES, f"one of {', '.join(_FAMILIES)}")
    check_env_field(cfg, "state", lambda v: isinstance(v, dict), "an object (the backend's state)")
    for name in ("expected_state", "answer"):
        check_env_field(cfg, name, lambda v: isinstance(v, str), "a string")
    check_env_field(cfg, "answer_observation", lambda v: isinstance(v, str), "a string", required=False)
    check_env_field(cfg, "plan", _is_plan, "a list of calls ({name, refs, ...})", required=False)


def faithful_summary(task: Task, calls_done: int) -> str | None:
    """The summary the error-free expert writes after the first ``calls_done`` ground-truth calls (the task's
    ``plan``) on a fresh environment; None without a plan, outside ``0..len(plan) - 1`` or where a call is refused."""
    plan = task.env_config.get("plan")
    if not plan or not 0 <= calls_done < len(plan):
        return None
    env, expert = make_env(task), FuncallExpert(task)
    env.reset()
    for _ in range(calls_done):
        action = expert.act()
        observation, done, _, _ = env.step(action)
        if done or observation.startswith("Error"):
            return None
        expert.observe(action, observation)
    return expert.summarize()


def summary_oracle(task: Task, text: str) -> bool | None:
    """Does a summary carry the state needed to continue (``EnvSpec.summary_oracle``: the summaries themselves
    measured)? The text must follow the expert's wording (:func:`read_summary`) with ``k`` in ``0..n - 1`` calls done,
    else False; for every name the faithful summary at ``k`` writes (:func:`faithful_summary`: the expert alone
    decides wording and values), the values written under it must be exactly the faithful ones, in order — a needed
    value missing, wrong or doubled is False; other names are ignored (no later call reads them). Ids a backend
    issues at run time are judged as the plan's first ``k`` calls issue them (every tool is repeat-safe), so a run
    that issued other ids on a detour is judged False. Invisible here: a summary claiming calls not made whose text
    equals the faithful one at the claimed ``k``. None (not judged) only where the right state cannot be had."""
    read = read_summary(text)
    if read is None:
        return False
    calls_done, facts = read
    plan = task.env_config.get("plan")
    if not plan:
        return None
    if not 0 <= calls_done < len(plan):
        return False
    right = faithful_summary(task, calls_done)
    right_read = read_summary(right) if right is not None else None
    if right_read is None:
        return None
    needed = right_read[1]
    names = {name for name, _ in needed}
    values = lambda fs: {n: [_norm(v) for m, v in fs if m == n] for n in names}  # noqa: E731
    return values(facts) == values(needed)


SPEC = EnvSpec(name="funcall", options=FuncallEnvConfig, make_split=make_split, make_env=make_env,
               make_expert=expert_factory, corpus=corpus, validate_env_config=validate_env_config,
               make_tasks=make_tasks, summary_oracle=summary_oracle)
