"""The procedural function-calling environment (CodeGym-like): fold a hidden array through tools.

A hidden array of ``n`` values (0..value_max) is reachable only through tools. A *family* names the fold — ``sum``:
``(a + b) mod 100``; ``diff``: ``(b − a) mod 100``, an alternating sum; ``max`` — and the answer is the left fold of the
whole array. ``sum`` and ``diff`` answers are spread evenly over 0..99, so guessing pays 1 %; ``max`` over 0..99 is
mostly 9x, so an early guess pays (it is kept for comparison, not in the tiny profile). Two API graphs (``api``):

* ``get-fold``: ``Observe()`` (the length), ``Get(i)`` (value ``i``; requires Observe), the family's helper
  ``Add(a, b)`` / ``Diff(a, b)`` / ``Max(a, b)`` (requires Get) and ``Done(answer)``; the expert needs ``2n + 1`` calls;
* ``fold-index`` (leaner: one call and about half the tokens per value): ``Observe()`` (the length and the starting
  running value 0), the helper applied to an index,
  ``Add(i, acc)`` / ``Diff(i, acc)`` / ``Max(i, acc)`` = the fold of ``acc`` with value ``i`` (requires Observe), and
  ``Done(answer)``; the expert needs ``n + 2`` calls (``acc`` starts at 0, an identity of every family's fold).

Either way the history outgrows the working context while the state to carry (next index, running value) stays two
numbers. Tasks are synthesised from the graph: the target tool is ``Done``; the query names only the goal and hides
the prerequisite calls.
"""

from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass

from supo.envs.base import Tool, ToolCallError, ToolEnv, format_tool_call, parse_tool_call
from supo.envs.spec import EnvSpec
from supo.errors import require
from supo.fields import F
from supo.models import SUMMARY_CLOSE, SUMMARY_OPEN
from supo.types import Task

FAMILIES: dict[str, dict[str, str]] = {
    "max": {"fold": "Max", "goal": "the maximum", "value": "running max", "doc": "returns the larger of a and b",
            "doc_index": "returns the larger of acc and the value at index i"},
    "sum": {"fold": "Add", "goal": "the sum modulo 100", "value": "running sum", "doc": "returns (a + b) mod 100",
            "doc_index": "returns (acc + the value at index i) mod 100"},
    "diff": {"fold": "Diff", "goal": "the alternating difference modulo 100", "value": "running difference",
             "doc": "returns (b - a) mod 100", "doc_index": "returns (the value at index i - acc) mod 100"},
}
APIS = ("get-fold", "fold-index")

SYSTEM_PROMPT = (
    "You solve tasks by calling tools. Call exactly one tool per turn, written as "
    '<tool_call>{{"name": NAME, "parameters": {{...}}}}</tool_call>. Wait for each result.\nTools:\n{tools}'
)
USER_PROMPT = "Find {goal} of a hidden array of {n} values."


def op(family: str, a: int, b: int) -> int:
    """One step of the family's fold: the running value ``a`` combined with the next value ``b``."""
    if family == "max":
        return max(a, b)
    if family == "sum":
        return (a + b) % 100
    if family == "diff":
        return (b - a) % 100
    raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")


def fold(family: str, values: list[int]) -> int:
    """The answer: the left fold of the array (0 is an identity on the left of every family's step)."""
    acc = 0
    for v in values:
        acc = op(family, acc, v)
    return acc


class ArrayEnv(ToolEnv):
    """One episode over one task's hidden array."""

    def __init__(self, family: str, values: list[int], api: str = "get-fold") -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
        if api not in APIS:
            raise ValueError(f"unknown api {api!r}; choose one of {', '.join(APIS)}")
        if not values:
            raise ValueError("the hidden array is empty")
        self.family, self.values, self.api = family, list(values), api
        self.answer = fold(family, self.values)
        spec = FAMILIES[family]
        self.tools = {"Observe": Tool("Observe", "returns the length of the hidden array", fn=self._observe)}
        if api == "get-fold":
            self.tools["Get"] = Tool("Get", "returns the value at index i", {"i": int}, ("Observe",), fn=self._get)
            self.tools[spec["fold"]] = Tool(spec["fold"], spec["doc"], {"a": int, "b": int}, ("Get",),
                                            fn=lambda a, b: str(op(family, a, b)))
        else:
            self.tools[spec["fold"]] = Tool(spec["fold"], spec["doc_index"], {"i": int, "acc": int}, ("Observe",),
                                            fn=lambda i, acc: str(op(family, acc, int(self._get(i)))))
        self.tools["Done"] = Tool("Done", "submits the final answer and ends the task", {"answer": int},
                                  fn=self._done, final=True)

    def _observe(self) -> str:
        # fold-index: the running value starts at 0, and the observation says so (the first fold call copies it, as
        # every later one copies the last result)
        return f"length {len(self.values)}" + (", acc 0" if self.api == "fold-index" else "")

    def _get(self, i: int) -> str:
        if not 0 <= i < len(self.values):
            raise ToolCallError(f"index {i} out of range 0..{len(self.values) - 1}")
        return str(self.values[i])

    def _done(self, answer: int) -> str:
        self.reward = 1.0 if answer == self.answer else 0.0
        return "correct" if self.reward else "incorrect"


def make_env(task: Task) -> ArrayEnv:
    cfg = task.env_config
    try:
        return ArrayEnv(cfg["family"], [int(v) for v in cfg["values"]], cfg.get("api", "get-fold"))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"task {task.id}: bad env_config for the array env ({e})") from None


def task_prompt(family: str, n: int, api: str = "get-fold") -> list[dict[str, str]]:
    env = ArrayEnv(family, [0] * n, api)
    return [
        {"role": "system", "content": SYSTEM_PROMPT.format(tools=env.tool_specs())},
        {"role": "user", "content": USER_PROMPT.format(goal=FAMILIES[family]["goal"], n=n)},
    ]


def make_tasks(split: str, num: int, min_len: int, max_len: int, families: list[str], value_max: int,
               seed: int, api: str = "get-fold") -> list[Task]:
    """Synthesise ``num`` seeded tasks; array lengths uniform in [min_len, max_len]."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"env.families: unknown family {unknown}; choose from {', '.join(FAMILIES)}")
    if api not in APIS:
        raise ValueError(f"env.api: unknown api {api!r}; choose one of {', '.join(APIS)}")
    rng = random.Random(f"{seed}-{split}")
    tasks = []
    for k in range(num):
        family = families[k % len(families)]
        n = rng.randint(min_len, max_len)
        values = [rng.randint(0, value_max) for _ in range(n)]
        tasks.append(
            Task(
                id=f"{split}-{k:05d}",
                env="array",
                env_config={"family": family, "values": values, "value_max": value_max, "api": api},
                split=split,
                prompt=task_prompt(family, n, api),
                reference=str(fold(family, values)),
                difficulty=2 * n + 1 if api == "get-fold" else n + 2,
            )
        )
    return tasks


# ----------------------------------------------------------------------------------------------------------------------
# the scripted expert


@dataclass
class _ExpertState:
    observed: bool = False
    next: int = 0  # the next index to Get
    cur: int | None = None  # the running value over values[0:next]
    pending: int | None = None  # a value fetched by Get(next) but not yet folded


class ArrayExpert:
    """Solves the task with ``2n + 1`` calls (``n + 2`` with the ``fold-index`` API); its summaries carry a wrong
    running value at ``error_rate``.

    The rollout loop tells it what happened: :meth:`observe` after each (action, observation), :meth:`drop` when the
    trigger drops the last pair from the context, :meth:`summarize` when asked for a summary. After a summary the
    expert continues from what it wrote — a wrong summary leads to a wrong answer, the imperfection RL can fix.
    """

    def __init__(self, task: Task, error_rate: float = 0.0, seed: int = 0) -> None:
        self.family = task.env_config["family"]
        self.values = [int(v) for v in task.env_config["values"]]
        self.n = len(self.values)
        self.api = task.env_config.get("api", "get-fold")
        self.value_max = int(task.env_config.get("value_max", max(99, *self.values)))
        self.error_rate = error_rate
        self.rng = random.Random(f"expert-{seed}-{task.id}")
        self.state = _ExpertState()
        self._history: list[_ExpertState] = []
        self.summary_errors = 0

    def act(self) -> str:
        s = self.state
        if not s.observed:
            return format_tool_call("Observe")
        if self.api == "fold-index":
            if s.next >= self.n:
                return format_tool_call("Done", answer=s.cur if s.cur is not None else 0)
            return format_tool_call(FAMILIES[self.family]["fold"], i=s.next, acc=s.cur if s.cur is not None else 0)
        if s.pending is not None:
            return format_tool_call(FAMILIES[self.family]["fold"], a=s.cur, b=s.pending)
        if s.next >= self.n:
            return format_tool_call("Done", answer=s.cur if s.cur is not None else 0)
        return format_tool_call("Get", i=s.next)

    def observe(self, action: str, observation: str) -> None:
        self._history.append(copy.copy(self.state))
        s = self.state
        try:
            call = parse_tool_call(action)
        except ToolCallError:
            return
        if observation.startswith("Error"):
            return
        if call.name == "Observe":
            s.observed = True
        elif call.name == "Get":
            v = int(observation)
            if s.cur is None:
                s.cur, s.next = v, s.next + 1
            else:
                s.pending = v
        elif call.name == FAMILIES[self.family]["fold"]:  # both APIs: the observation is the new running value
            s.cur, s.pending, s.next = int(observation), None, s.next + 1

    def drop(self) -> None:
        """The last (action, observation) left the context: forget what it taught."""
        if self._history:
            self.state = self._history.pop()

    def _wrong_value(self, cur: int, nxt: int) -> int:
        """A running value that differs from ``cur`` and, where one exists, changes the final answer."""
        answer = fold(self.family, self.values)
        others = [v for v in range(self.value_max + 1) if v != cur]
        changing = [v for v in others if fold(self.family, [v, *self.values[nxt:]]) != answer]
        return self.rng.choice(changing or others)

    def summarize(self) -> str:
        s = self.state
        value = s.cur
        if value is not None and self.rng.random() < self.error_rate:
            value = self._wrong_value(s.cur, s.next)
            self.summary_errors += 1
        self.state = _ExpertState(observed=s.observed, next=s.next, cur=value, pending=None)
        self._history.clear()
        return summary_text(self.family, s.next, value)


def summary_text(family: str, next_index: int, value: int | None) -> str:
    shown = "none" if value is None else str(value)
    return f"{SUMMARY_OPEN}next index {next_index}, {FAMILIES[family]['value']} {shown}{SUMMARY_CLOSE}"


_SUMMARY_STATE = re.compile(r"next index\s+(\d+)\s*,\s*running \w+\s+(\d+|none)\b")


def summary_oracle(task: Task, text: str) -> bool:
    """Does a summary carry the state needed to continue (``EnvSpec.summary_oracle``)? The state is two numbers,
    the next index ``k`` and the running value over the values before it: the summary must name an index in
    ``0..n`` and the fold of ``values[0:k]`` (``none`` only at ``k = 0``), in the expert's wording
    (:func:`summary_text`). Continuing from a summary that passes gives the right answer; from one that fails, a wrong
    one (or none). A summary that restates an earlier, still correct state passes: it costs steps, not correctness."""
    m = _SUMMARY_STATE.search(text)
    if m is None:
        return False
    values = [int(v) for v in task.env_config["values"]]
    k = int(m.group(1))
    if not 0 <= k <= len(values):
        return False
    if m.group(2) == "none":
        return k == 0
    return int(m.group(2)) == fold(task.env_config["family"], values[:k])


def corpus(tasks: list[Task]) -> list[str]:
    """The text pieces the tokenizer is trained on: prompts, expert actions, observations and summaries."""
    texts: list[str] = []
    for t in tasks:
        texts.extend(m["content"] for m in t.prompt)
        env, expert = make_env(t), ArrayExpert(t)
        env.reset()
        for _ in range(2 * len(env.values) + 3):
            a = expert.act()
            obs, done, _, _ = env.step(a)
            texts.extend([a, obs])
            expert.observe(a, obs)
            if done:
                break
        for nxt in (0, len(env.values) // 2):
            texts.append(summary_text(t.env_config["family"], nxt, env.values[0]))
    return texts


def expert_factory(task: Task, error_rate: float, seed: int) -> ArrayExpert:
    return ArrayExpert(task, error_rate=error_rate, seed=seed)


@dataclass
class ArrayEnvConfig:
    """The array env's options and task splits (params.yaml keeps them in the ``env:`` section, beside ``env.name``)."""

    families: list[str] = F(["sum", "diff"], "array env: task families to draw from (sum, diff: answers spread "
                                             "evenly over 0..99; max: mostly 9x, so guessing early pays)")
    api: str = F("fold-index", "array env: the tools; get-fold (Get(i), then the fold helper on two values: 2n + 1 "
                               "calls) or fold-index (the fold helper on an index and the running value: n + 2 calls, "
                               "about half the tokens per value)")
    train_min_len: int = F(6, "shortest hidden array in the train split")
    train_max_len: int = F(24, "longest hidden array in the train split")
    test_min_len: int = F(16, "shortest hidden array in the test split (the test split must need more steps than the "
                                 "train split on average)")
    test_max_len: int = F(24, "longest hidden array in the test split")
    value_max: int = F(99, "array values are drawn from 0..value_max")
    num_train: int = F(2000, "tasks in the train split")
    num_test: int = F(128, "tasks in the test split")
    num_val: int = F(128, "tasks in the validation split (drawn like the test split, from its own seed): every tuning "
                          "decision is made on it, never on the test split")

    def validate(self) -> None:
        """Ranges, choices and the train/test conflict; ConfigError naming ``env.<field>``."""
        require(1 <= self.train_min_len <= self.train_max_len, "env.train_min_len/train_max_len",
                f"need 1 ≤ min ≤ max, got {self.train_min_len}..{self.train_max_len}")
        require(1 <= self.test_min_len <= self.test_max_len, "env.test_min_len/test_max_len",
                f"need 1 ≤ min ≤ max, got {self.test_min_len}..{self.test_max_len}")
        require(self.test_min_len + self.test_max_len > self.train_min_len + self.train_max_len, "env.test_min_len",
                f"the test split ({self.test_min_len}..{self.test_max_len}) must need more steps than the train split "
                f"({self.train_min_len}..{self.train_max_len}) on average")
        require(self.num_train >= 1 and self.num_test >= 1 and self.num_val >= 1, "env.num_train/num_val/num_test",
                "splits must not be empty")
        require(1 <= self.value_max <= ROW_VALUE_MAX, "env.value_max",
                f"must be in 1..{ROW_VALUE_MAX} (what a task row may hold), got {self.value_max}")
        require(max(self.train_max_len, self.test_max_len) <= ROW_MAX_VALUES, "env.train_max_len/test_max_len",
                f"a task row holds at most {ROW_MAX_VALUES} values, got {max(self.train_max_len, self.test_max_len)}")
        require(self.api in APIS, "env.api", f"must be get-fold or fold-index, got {self.api!r}")
        unknown = [f for f in self.families if f not in FAMILIES]
        require(bool(self.families) and not unknown, "env.families",
                f"unknown or empty {self.families}; choose from {', '.join(FAMILIES)}")


def make_split(options: ArrayEnvConfig, split: str, seed: int) -> list[Task]:
    """The ``split`` for ``options``: ``train``, ``test``, or ``val`` — drawn like the test split (same lengths),
    from its own seed, for tuning decisions."""
    e = options
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    lo, hi, num = {"train": (e.train_min_len, e.train_max_len, e.num_train),
                   "val": (e.test_min_len, e.test_max_len, e.num_val),
                   "test": (e.test_min_len, e.test_max_len, e.num_test)}[split]
    return make_tasks(split, num, lo, hi, e.families, e.value_max, seed, e.api)


def build_split(cfg, split: str) -> list[Task]:
    """The ``split`` of a run config (its ``env`` section and ``seed``)."""
    return SPEC.build_split(cfg, split)


SPLITS = ("train", "val", "test")


from supo.envs.base import check_env_field, is_int  # noqa: E402  (the env_config check, appended)

ROW_MAX_VALUES = 1000
"""Longest hidden array a task row may hold: an episode takes n + 2 tool calls at least, far beyond any budget."""
ROW_VALUE_MAX = 10_000
"""Largest ``value_max`` a task row may declare (the expert draws wrong values from 0..value_max)."""
DEFAULT_VALUE_MAX = 99
"""The value range of a row that does not declare ``value_max`` (``env.value_max``'s default)."""


def validate_env_config(cfg: dict) -> None:
    """What :func:`make_env` and the expert read: ``family`` (a fold of FAMILIES), ``values`` (a list of 1 to
    :data:`ROW_MAX_VALUES` integers, each in 0..value_max), ``value_max`` if present (an integer in
    1..:data:`ROW_VALUE_MAX`; :data:`DEFAULT_VALUE_MAX` when absent) and ``api`` if present. Raises ValueError naming
    the field."""
    check_env_field(cfg, "family", lambda v: v in FAMILIES, f"one of {', '.join(FAMILIES)}")
    check_env_field(cfg, "values", lambda v: isinstance(v, list) and v and all(map(is_int, v)),
                    "a non-empty list of integers")
    check_env_field(cfg, "value_max", lambda v: is_int(v) and 1 <= v <= ROW_VALUE_MAX,
                    f"an integer in 1..{ROW_VALUE_MAX}", required=False)
    check_env_field(cfg, "api", lambda v: v in APIS, f"one of {', '.join(APIS)}", required=False)
    values, top = cfg["values"], cfg.get("value_max", DEFAULT_VALUE_MAX)
    if len(values) > ROW_MAX_VALUES:
        raise ValueError(f"env_config.values: {len(values)} values; the array env takes at most {ROW_MAX_VALUES}")
    bad = next(((i, v) for i, v in enumerate(values) if not 0 <= v <= top), None)
    if bad is not None:
        shown = str(bad[1]) if len(str(bad[1])) <= 30 else str(bad[1])[:27] + "..."
        why = "its value_max" if "value_max" in cfg else "the default: the row gives no value_max"
        raise ValueError(f"env_config.values[{bad[0]}]: {shown} is outside 0..{top} ({why})")


SPEC = EnvSpec(name="array", section="env", options=ArrayEnvConfig, make_split=make_split, make_env=make_env,
               make_expert=expert_factory, corpus=corpus, validate_env_config=validate_env_config, splits=SPLITS,
               make_tasks=make_tasks, summary_oracle=summary_oracle)
