"""Tests for supo.envs: the tool-call parser, the array environment, its tasks and its scripted expert.

The expert acts only through ``env.step`` on the text it writes, i.e. through the same parser the policy's actions go
through. Hostile and fuzzed actions must each come back as an ``Error:`` observation, never as an exception.
"""

from __future__ import annotations

import json

import pytest
from env_contract import run_expert, tagged

from supo.envs.array import (
    APIS,
    FAMILIES,
    ArrayEnv,
    ArrayExpert,
    fold,
    make_env,
    make_tasks,
    task_prompt,
)
from supo.envs.base import ToolCall, ToolCallError, format_tool_call, parse_tool_call
from supo.models import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from supo.types import Task


def _task(family: str = "max", values: list[int] | None = None, tid: str = "t-0") -> Task:
    values = [3, 9, 4] if values is None else values
    return Task(id=tid, env="array", env_config={"family": family, "values": values}, split="train",
                prompt=task_prompt(family, len(values)), reference=str(fold(family, values)),
                difficulty=2 * len(values) + 1)


def _run_expert(task: Task, error_rate: float = 0.0, summarize_at: set[int] = frozenset(), drop_before_summary=False,
                env=None, expert=None, max_actions: int = 500):
    """Drive the array expert through ``env.step`` until the episode ends; returns (reward, actions taken)."""
    return run_expert(task, make_env, lambda t: ArrayExpert(t, error_rate=error_rate, seed=1),
                      summarize_at=summarize_at, drop_before_summary=drop_before_summary, env=env, expert=expert,
                      max_actions=max_actions)


# ---------------------------------------------------------------------------------------------------------------------
# tasks


def test_make_tasks_is_deterministic_for_a_seed():
    a = make_tasks("train", 50, 6, 14, ["max", "sum"], 99, seed=7)
    b = make_tasks("train", 50, 6, 14, ["max", "sum"], 99, seed=7)
    assert a == b
    c = make_tasks("train", 50, 6, 14, ["max", "sum"], 99, seed=8)
    assert [t.env_config for t in a] != [t.env_config for t in c]
    # the split is part of the seed: train and test tasks differ
    d = make_tasks("test", 50, 6, 14, ["max", "sum"], 99, seed=7)
    assert [t.env_config for t in a] != [t.env_config for t in d]


@pytest.mark.parametrize(("split", "lo", "hi"), [("train", 6, 14), ("test", 18, 24), ("train", 1, 1)])
def test_make_tasks_follow_split_bounds(split, lo, hi):
    tasks = make_tasks(split, 200, lo, hi, ["max", "sum"], 99, seed=0)
    lengths = [len(t.env_config["values"]) for t in tasks]
    assert all(lo <= n <= hi for n in lengths)
    if hi - lo >= 2:
        assert min(lengths) == lo and max(lengths) == hi  # the whole range is drawn
    assert all(t.split == split and t.id.startswith(split) for t in tasks)
    assert len({t.id for t in tasks}) == len(tasks)


def test_make_tasks_values_in_range_and_families_alternate():
    tasks = make_tasks("train", 100, 3, 9, ["max", "sum"], 9, seed=1)
    assert all(0 <= v <= 9 for t in tasks for v in t.env_config["values"])
    assert [t.env_config["family"] for t in tasks[:4]] == ["max", "sum", "max", "sum"]
    assert all(t.env == "array" for t in tasks)


def test_reference_is_fold_of_values_and_difficulty_is_2n_plus_1():
    tasks = make_tasks("train", 300, 1, 24, ["max", "sum"], 99, seed=3)
    for t in tasks:
        values = t.env_config["values"]
        expected = max(values) if t.env_config["family"] == "max" else sum(values) % 100
        assert t.reference == str(expected)
        assert t.difficulty == 2 * len(values) + 1


def test_sum_and_diff_answers_are_not_guessable_but_max_is():
    """An early Done with the most common answer pays about 1 % for sum and diff, and a lot for max over 0..99."""
    from collections import Counter

    for family, most in (("sum", 0.03), ("diff", 0.03)):
        answers = Counter(int(t.reference) for t in make_tasks("train", 2000, 16, 24, [family], 99, seed=4))
        assert answers.most_common(1)[0][1] / 2000 < most, family
    answers = Counter(int(t.reference) for t in make_tasks("train", 2000, 16, 24, ["max"], 99, seed=4))
    assert answers.most_common(1)[0][1] / 2000 > 0.15


def test_fold_index_tools():
    env = ArrayEnv("diff", [7, 3, 10], "fold-index")
    env.reset()
    assert env.step(tagged('{"name": "Diff", "parameters": {"i": 0, "acc": 0}}'))[0].startswith("Error")  # no Observe
    assert env.step(tagged('{"name": "Observe", "parameters": {}}'))[0] == "length 3, acc 0"
    assert env.step(tagged('{"name": "Diff", "parameters": {"i": 0, "acc": 0}}'))[0] == "7"
    assert env.step(tagged('{"name": "Diff", "parameters": {"i": 1, "acc": 7}}'))[0] == "96"  # (3 - 7) mod 100
    assert env.step(tagged('{"name": "Diff", "parameters": {"i": 3, "acc": 7}}'))[0].startswith("Error: ")
    assert "Get" not in env.tools and fold("diff", [7, 3, 10]) == (10 - 96) % 100
    obs, done, reward, _ = env.step(tagged('{"name": "Done", "parameters": {"answer": 14}}'))
    assert done and reward == 1.0


def test_make_tasks_unknown_family_raises():
    with pytest.raises(ValueError, match="family"):
        make_tasks("train", 3, 1, 2, ["min"], 9, seed=0)


def test_prompt_hides_the_values():
    a, b = _task("sum", [1, 2, 3]), _task("sum", [70, 80, 90])
    assert a.prompt == b.prompt
    assert [m["role"] for m in a.prompt] == ["system", "user"]
    assert "Observe" in a.prompt[0]["content"] and "Done" in a.prompt[0]["content"]


def test_array_env_rejects_no_values_and_an_unknown_family():
    with pytest.raises(ValueError):
        ArrayEnv("max", [])
    with pytest.raises(ValueError):
        ArrayEnv("min", [1])


# ---------------------------------------------------------------------------------------------------------------------
# the expert


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_expert_solves_tasks_through_env_step(family, api):
    tasks = make_tasks("train", 300, 1, 24, [family], 99, seed=11, api=api)
    results = [_run_expert(t) for t in tasks]
    solved = sum(r == 1.0 for r, _ in results)
    assert solved >= 0.99 * len(tasks)
    # it needs exactly 2n + 1 calls (n + 2 calls with fold-index)
    assert all(k == t.difficulty for (_, k), t in zip(results, tasks))
    assert all(t.difficulty == (2 * len(t.env_config["values"]) + 1 if api == "get-fold"
                                else len(t.env_config["values"]) + 2) for t in tasks)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_expert_with_faithful_summaries_still_solves(family, api):
    """With error_rate 0, drop + summary + continue (the trigger protocol, R2) loses nothing."""
    tasks = make_tasks("train", 100, 4, 24, [family], 99, seed=12, api=api)
    for every in (3, 5, 7):
        results = [_run_expert(t, summarize_at=set(range(every, 500, every)), drop_before_summary=True)
                   for t in tasks]
        assert all(r == 1.0 for r, _ in results), every


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_expert_with_wrong_summaries_usually_answers_wrong(family, api):
    """error_rate 1.0 and one forced summary midway: the expert continues from a wrong running value."""
    tasks = make_tasks("train", 300, 6, 24, [family], 99, seed=13, api=api)
    rewards = []
    for t in tasks:
        reward, _ = _run_expert(t, error_rate=1.0, summarize_at={t.difficulty // 2})  # midway through its calls
        rewards.append(reward)
    wrong = sum(r == 0.0 for r in rewards) / len(rewards)
    assert wrong >= 0.75, f"{family}: only {wrong:.0%} of answers wrong after a wrong summary"


def test_expert_summary_error_is_counted_and_stated():
    t = _task("sum", [10, 20, 30, 40])
    env = make_env(t)
    env.reset()
    ex = ArrayExpert(t, error_rate=1.0, seed=0)
    for _ in range(4):  # Observe, Get(0), Get(1), Add -> running sum 30, next index 2
        a = ex.act()
        ex.observe(a, env.step(a)[0])
    text = ex.summarize()
    assert ex.summary_errors == 1
    assert "next index 2" in text and "running sum 30" not in text
    ex0 = ArrayExpert(t, error_rate=0.0)
    ex0.state = ex.state.__class__(observed=True, next=2, cur=30)
    assert "running sum 30" in ex0.summarize() and ex0.summary_errors == 0


def test_expert_drop_restores_state_before_last_action():
    t = _task("max", [5, 7, 2, 8])
    env = make_env(t)
    env.reset()
    ex = ArrayExpert(t)
    for _ in range(6):  # Observe, Get(0), Get(1), Max, Get(2), Max
        before = (ex.state.observed, ex.state.next, ex.state.cur, ex.state.pending)
        a = ex.act()
        obs = env.step(a)[0]
        ex.observe(a, obs)
        after = (ex.state.observed, ex.state.next, ex.state.cur, ex.state.pending)
        ex.drop()
        assert (ex.state.observed, ex.state.next, ex.state.cur, ex.state.pending) == before
        assert ex.act() == a  # it will redo the dropped action
        ex.observe(a, env.step(a)[0])  # redo it (the env keeps its side effects; redoing is harmless)
        assert (ex.state.observed, ex.state.next, ex.state.cur, ex.state.pending) == after
    # two drops in a row go back two actions
    s2 = (ex.state.observed, ex.state.next, ex.state.cur, ex.state.pending)
    a = ex.act()
    ex.observe(a, env.step(a)[0])
    b = ex.act()
    ex.observe(b, env.step(b)[0])
    ex.drop()
    ex.drop()
    assert (ex.state.observed, ex.state.next, ex.state.cur, ex.state.pending) == s2
    # finish from there
    reward, _ = _run_expert(t, env=env, expert=ex)
    assert reward == 1.0


def test_expert_drop_of_observe_forgets_it():
    t = _task("max", [1, 2])
    env = make_env(t)
    env.reset()
    ex = ArrayExpert(t)
    a = ex.act()
    assert json.loads(a[len(TOOL_CALL_OPEN):-len(TOOL_CALL_CLOSE)])["name"] == "Observe"
    ex.observe(a, env.step(a)[0])
    assert ex.state.observed
    ex.drop()
    assert not ex.state.observed and ex.act() == a


# ---------------------------------------------------------------------------------------------------------------------
# the parser


def test_format_and_parse_round_trip():
    text = format_tool_call("Get", i=3)
    assert parse_tool_call(text) == ToolCall("Get", {"i": 3})
    assert parse_tool_call("I will observe. " + format_tool_call("Observe") + " ok") == ToolCall("Observe", {})


@pytest.mark.parametrize(
    "text",
    ["", "Get(0)", tagged("not json"), tagged("[1, 2]"), tagged('{"parameters": {}}'), tagged('{"name": 5}'),
     tagged('{"name": "Get", "parameters": [1]}'), tagged('{"name": "Get", "parameters": {}, "x": 1}'),
     format_tool_call("Observe") + format_tool_call("Observe")],
)
def test_parse_rejects_malformed(text):
    with pytest.raises(ToolCallError):
        parse_tool_call(text)


# ---------------------------------------------------------------------------------------------------------------------
# hostile actions: each is an Error observation, the episode goes on


def _observed_env(values=(3, 9, 4), family="max") -> ArrayEnv:
    env = ArrayEnv(family, list(values))
    env.reset()
    obs, done, _, _ = env.step(format_tool_call("Observe"))
    assert obs == f"length {len(values)}" and not done
    obs, done, _, _ = env.step(format_tool_call("Get", i=0))  # every tool is callable from here
    assert obs == str(values[0]) and not done
    return env


def _assert_error_then_env_works(env: ArrayEnv, action: str, fragment: str | None = None) -> None:
    obs, done, reward, info = env.step(action)
    assert isinstance(obs, str) and obs.startswith("Error:"), obs[:200]
    assert done is False and reward == 0.0 and "error" in info
    if fragment is not None:
        assert fragment in obs, obs[:200]
    # the environment still works: finish the episode correctly
    values = env.values
    obs, done, _, _ = env.step(format_tool_call("Observe"))
    assert obs == f"length {len(values)}" and not done
    cur = int(env.step(format_tool_call("Get", i=0))[0])
    fold_tool = FAMILIES[env.family]["fold"]
    for i in range(1, len(values)):
        v = int(env.step(format_tool_call("Get", i=i))[0])
        cur = int(env.step(format_tool_call(fold_tool, a=cur, b=v))[0])
    obs, done, reward, _ = env.step(format_tool_call("Done", answer=cur))
    assert (obs, done, reward) == ("correct", True, 1.0)


HOSTILE = {
    "missing_param": (format_tool_call("Get"), "missing"),
    "extra_param": (format_tool_call("Get", i=0, j=1), "unknown parameter"),
    "string_for_int": (format_tool_call("Get", i="0"), "integer"),
    "bool_for_int": (format_tool_call("Get", i=True), "integer"),
    "float_for_int": (format_tool_call("Get", i=0.0), "integer"),
    "null_for_int": (format_tool_call("Get", i=None), "integer"),
    "nan_for_int": (tagged('{"name": "Get", "parameters": {"i": NaN}}'), "integer"),
    "list_for_int": (format_tool_call("Get", i=[0]), "integer"),
    "huge_int": (format_tool_call("Get", i=10**300), "out of range"),
    "python_injection_param": (format_tool_call("Get", i="__import__('os').system('echo hi')"), "integer"),
    "index_too_large": (format_tool_call("Get", i=3), "out of range"),
    "negative_index": (format_tool_call("Get", i=-1), "out of range"),
    "fold_wrong_type": (format_tool_call("Max", a="9", b=3), "integer"),
    "done_wrong_type": (format_tool_call("Done", answer="9"), "integer"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_action_returns_error_and_env_continues(name, capfd):
    action, fragment = HOSTILE[name]
    env = _observed_env()
    _assert_error_then_env_works(env, action, fragment)
    out, err = capfd.readouterr()
    assert "hi" not in out.split()  # nothing was executed


def test_get_before_observe_is_a_prerequisite_error():
    env = ArrayEnv("max", [3, 9, 4])
    env.reset()
    _assert_error_then_env_works(env, format_tool_call("Get", i=0), "requires Observe")


def test_fold_before_get_is_a_prerequisite_error():
    env = ArrayEnv("sum", [3, 9, 4])
    env.reset()
    env.step(format_tool_call("Observe"))
    _assert_error_then_env_works(env, format_tool_call("Add", a=1, b=2), "requires Get")


def test_wrong_family_fold_tool_is_unknown():
    env = _observed_env(family="sum")
    _assert_error_then_env_works(env, format_tool_call("Max", a=1, b=2), "unknown tool")


def test_step_after_done_is_an_error():
    env = _observed_env()
    env.step(format_tool_call("Done", answer=1))
    obs, done, reward, _ = env.step(format_tool_call("Observe"))
    assert obs.startswith("Error:") and done is True and reward == 0.0


def test_wrong_answer_gets_zero_reward():
    env = _observed_env([3, 9, 4])
    obs, done, reward, _ = env.step(format_tool_call("Done", answer=4))
    assert (obs, done, reward) == ("incorrect", True, 0.0)


def test_array_summary_oracle_judges_the_state_a_summary_carries():
    """A summary must name the next index k and the fold of values[0:k] (``none`` only at k = 0)."""
    from supo.envs.array import fold, make_tasks, summary_oracle, summary_text
    from supo.envs.spec import get_env_spec

    task = make_tasks("val", 1, 12, 12, ["diff"], 99, seed=1)[0]
    values = task.env_config["values"]
    for k in range(len(values) + 1):
        right = fold("diff", values[:k])
        assert summary_oracle(task, summary_text("diff", k, right))
        assert not summary_oracle(task, summary_text("diff", k, (right + 1) % 100))
    assert summary_oracle(task, summary_text("diff", 0, None))
    assert not summary_oracle(task, summary_text("diff", 3, None))
    assert not summary_oracle(task, summary_text("diff", len(values) + 1, 0))
    assert not summary_oracle(task, "I have done some work")
    assert summary_oracle(task, "<summary>next index 2, running difference "
                                f"{fold('diff', values[:2])}</summary>")
    assert get_env_spec("array").summary_oracle is summary_oracle


@pytest.mark.parametrize("body, key", [
    ('{"name": "Add", "name": "Done", "parameters": {"answer": 1}}', "name"),
    ('{"name": "Done", "parameters": {"answer": 1, "answer": 2}}', "answer"),
    ('{"name": "Done", "parameters": {"answer": 1}, "parameters": {"answer": 9}}', "parameters"),
])
def test_a_tool_call_with_a_duplicate_key_is_an_error_not_the_last_key(body, key):
    """Issue 18: `{"name":"Add","name":"Done",…}` was accepted with the last key winning, and the episode ended. A key
    given twice is an Error observation and the episode goes on."""
    with pytest.raises(ToolCallError, match=f"gives the key '{key}' twice"):
        parse_tool_call(tagged(body))
    env = _observed_env()
    obs, done, reward, _ = env.step(tagged(body))
    assert obs.startswith("Error: tool call gives the key") and not done and reward == 0.0 and not env.done
    _assert_error_then_env_works(env, tagged(body), "twice")
