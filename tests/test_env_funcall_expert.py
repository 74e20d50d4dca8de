"""Tests for supo.envs.funcall's scripted expert, through ``env.step`` and through the real agent loop: it acts only
through ``env.step`` on the text it writes (the parser the policy's actions go through); faithful summaries and drops
lose nothing, wrong summaries make it fail at about their rate, its text fits the turn budgets.
"""

from __future__ import annotations

import dataclasses
import random
import statistics

import pytest
from env_contract import run_expert
from funcall_fixtures import funcall_tasks, task_of

from supo.config import load_config
from supo.envs import get_env_spec
from supo.envs.funcall import (
    FuncallExpert,
    corpus,
    faithful_summary,
    make_env,
    read_summary,
    summary_oracle,
    summary_text,
    wrong_value,
)
from supo.models import (
    SUMMARY_CLOSE,
    SUMMARY_OPEN,
    build_tokenizer,
)
from supo.types import Task


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return funcall_tasks()


def _run_expert(task: Task, error_rate: float = 0.0, summarize_at=frozenset(), drop_before_summary=False,
                env=None, expert=None, max_actions: int = 200, allow_errors: bool = False):
    return run_expert(task, make_env, lambda t: FuncallExpert(t, error_rate=error_rate, seed=1),
                      summarize_at=summarize_at, drop_before_summary=drop_before_summary, env=env, expert=expert,
                      max_actions=max_actions, allow_errors=allow_errors)


# ---------------------------------------------------------------------------------------------------------------------
# the expert


def test_expert_solves_tasks_through_env_step(tasks):
    results = [_run_expert(t) for t in tasks]
    solved = sum(r == 1.0 for r, _ in results)
    assert solved >= 0.99 * len(tasks)
    assert all(k == t.difficulty for (_, k), t in zip(results, tasks))  # exactly the validated calls


def test_expert_with_faithful_summaries_and_drops_still_solves(tasks):
    """error_rate 0: drop + summary + continue (the trigger protocol, R2) loses nothing, even though the dropped
    action's side effect stays in the environment and the expert redoes it."""
    for every in (2, 3, 5):
        results = [_run_expert(t, summarize_at=set(range(every, 200, every)), drop_before_summary=True)
                   for t in tasks[::3]]
        assert all(r == 1.0 for r, _ in results), every


def test_expert_with_wrong_summaries_usually_fails(tasks):
    rewards = []
    for t in tasks:
        ex_reward, _ = _run_expert(t, error_rate=1.0, summarize_at={t.difficulty // 2}, drop_before_summary=True,
                                   allow_errors=True)
        rewards.append(ex_reward)
    wrong = sum(r != 1.0 for r in rewards) / len(rewards)
    assert wrong >= 0.9, f"only {wrong:.0%} wrong after a wrong summary"


def test_expert_error_rate_is_roughly_the_failure_rate(tasks):
    """One summary per episode at error_rate e: the expert fails on about a share e of the episodes."""
    for rate in (0.2, 0.5):
        fails = 0
        for k, t in enumerate(tasks):
            env = make_env(t)
            env.reset()
            ex = FuncallExpert(t, error_rate=rate, seed=k)
            r, _ = _run_expert(t, summarize_at={t.difficulty // 2}, env=env, expert=ex, allow_errors=True)
            fails += r != 1.0
        assert abs(fails / len(tasks) - rate) < 0.1, (rate, fails)


def test_summary_states_progress_and_needed_values(tasks):
    t = task_of(tasks, "travel", 7)
    env = make_env(t)
    env.reset()
    ex = FuncallExpert(t)
    plan = t.env_config["plan"]
    for pos in range(len(plan) - 1):
        live = ex.live(ex.state.pos)
        text = ex.summarize()
        assert text.startswith(f"{SUMMARY_OPEN}{pos} calls done")
        for i in live:  # every value a later call needs is written, with the output's name
            assert f"; {ex.out_name[i]} {ex.state.mem[i]}" in text
        assert ex.parse_summary(text).pos == pos and ex.parse_summary(text).mem == ex.state.mem
        a = ex.act()
        ex.observe(a, env.step(a)[0])
    assert ex.summary_errors == 0
    assert FuncallExpert(t).parse_summary("garbage").pos == 0


def test_summary_error_is_counted_and_changes_the_summary(tasks):
    for t in tasks[:40]:
        env = make_env(t)
        env.reset()
        ex = FuncallExpert(t, error_rate=1.0, seed=2)
        for _ in range(t.difficulty // 2):
            a = ex.act()
            ex.observe(a, env.step(a)[0])
        faithful = summary_text(ex.state.pos, [(ex.out_name[i], ex.state.mem[i]) for i in ex.live(ex.state.pos)])
        text = ex.summarize()
        assert (text != faithful) == (ex.summary_errors == 1)
    assert wrong_value("TK12", __import__("random").Random(0)) != "TK12"
    assert wrong_value("red fox", __import__("random").Random(0)) != "red fox"


def test_expert_drop_restores_state_before_last_action(tasks):
    t = task_of(tasks, "bank", 8)
    env = make_env(t)
    env.reset()
    ex = FuncallExpert(t)
    for _ in range(t.difficulty - 4):
        before = (ex.state.pos, dict(ex.state.mem))
        a = ex.act()
        ex.observe(a, env.step(a)[0])
        after = (ex.state.pos, dict(ex.state.mem))
        ex.drop()
        assert (ex.state.pos, ex.state.mem) == before
        assert ex.act() == a  # it will redo the dropped action
        ex.observe(a, env.step(a)[0])  # redoing it is harmless: every tool is repeat-safe
        assert (ex.state.pos, ex.state.mem) == after
    s2 = (ex.state.pos, dict(ex.state.mem))
    for _ in range(2):
        a = ex.act()
        ex.observe(a, env.step(a)[0])
    ex.drop()
    ex.drop()
    assert (ex.state.pos, ex.state.mem) == s2
    assert _run_expert(t, env=env, expert=ex)[0] == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# the summary oracle (EnvSpec.summary_oracle): the summaries themselves measured


class _Recorded(FuncallExpert):
    """The expert, keeping each summary it writes as (text, calls it had really made, deliberately wrong, its state
    faithful before)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.written: list[tuple[str, int, bool, bool]] = []

    def summarize(self) -> str:
        pos, errors = self.state.pos, self.summary_errors
        text = super().summarize()
        self.written.append((text, pos, self.summary_errors > errors, errors == 0))
        return text


def _written(task: Task, error_rate: float, every: int, seed: int = 1) -> list[tuple[str, int, bool, bool]]:
    """Every summary the expert writes in one episode through env.step, summarizing (after dropping the last pair,
    as the loop's trigger does) before every ``every``-th action."""
    env, ex = make_env(task), _Recorded(task, error_rate=error_rate, seed=seed)
    env.reset()
    _run_expert(task, summarize_at=set(range(every, 200, every)), drop_before_summary=True, env=env, expert=ex,
                allow_errors=True)
    return ex.written


def test_summary_oracle_passes_every_faithful_summary(tasks):
    written = [w for t in tasks[::5] for every in (2, 3) for w in ((t, x) for x in _written(t, 0.0, every))]
    assert len(written) > 300
    assert sum(bool(read_summary(text)[1]) for _, (text, *_) in written) > 200  # most carry values to check
    assert all(summary_oracle(t, text) is True for t, (text, *_) in written)
    assert get_env_spec("funcall").summary_oracle is summary_oracle


def test_summary_oracle_fails_deliberately_wrong_summaries(tasks):
    """error_rate 1: a needed value lost or wrong at the count really reached is always judged wrong; a claimed extra
    step is judged wrong unless the text is exactly the faithful summary at the claimed count (what a text cannot
    show: the skipped calls' values are read by no later call)."""
    kinds = {"value": 0, "skip caught": 0, "skip unseen": 0}
    for t in tasks[::5]:
        for every in (2, 3):
            for text, pos, wrong, clean_before in _written(t, 1.0, every):
                if not (wrong and clean_before):
                    continue
                claimed = read_summary(text)[0]
                verdict = summary_oracle(t, text)
                if claimed == pos:
                    assert verdict is False, (t.id, text)
                    kinds["value"] += 1
                else:
                    assert claimed > pos and verdict is (text == faithful_summary(t, claimed)), (t.id, text)
                    kinds["skip caught" if verdict is False else "skip unseen"] += 1
    assert min(kinds.values()) > 5, kinds


def test_summary_oracle_refuses_text_not_in_the_experts_wording(tasks):
    t = task_of(tasks, "travel", 7)
    right = next(s for k in range(t.difficulty) if read_summary(s := faithful_summary(t, k))[1])  # carries values
    assert summary_oracle(t, right) is True
    body = right.removeprefix(SUMMARY_OPEN).removesuffix(SUMMARY_CLOSE)
    for text in ("garbage", "", "<summary></summary>", "3 calls", "three calls done", "calls done 3",
                 f"So far: {body}", f"{body};", body.replace(" calls done", " steps done"),
                 body.replace("; ", ", ")):
        assert summary_oracle(t, text) is False, text


def _ground_truth(task: Task) -> tuple[list[dict], dict[int, str]]:
    """The plan and, by hand, each step's value that a later call reads: the argument the plan passes it with."""
    plan = task.env_config["plan"]
    values = {i: str(step["params"][p]) for step in plan for p, i in step["refs"].items()}
    return plan, values


def _needed(plan: list[dict], k: int) -> list[int]:
    """The steps before ``k`` that a step from ``k`` on reads."""
    return sorted({i for step in plan[k:] for i in step["refs"].values() if i < k})


def test_summary_oracle_on_hand_made_summaries(tasks):
    t, k = next((t, k) for t in tasks for k in range(t.difficulty) if len(_needed(t.env_config["plan"], k)) >= 2)
    plan, values = _ground_truth(t)
    ex = FuncallExpert(t)
    name = lambda i: ex.out_name[i]  # noqa: E731 - the output's name, as the tool list documents it
    live = _needed(plan, k)
    facts = [(name(i), values[i]) for i in live]
    assert summary_oracle(t, summary_text(k, facts)) is True
    assert summary_oracle(t, f"  {k} calls done" + "".join(f"; {n} {v}" for n, v in facts) + " ") is True  # no tags
    assert summary_oracle(t, summary_text(k, [*facts, ("note", "anything")])) is True  # a name no call reads
    assert summary_oracle(t, summary_text(0, [])) is True
    wrong = [(n, v) if j else (n, wrong_value(v, random.Random(0))) for j, (n, v) in enumerate(facts)]
    assert summary_oracle(t, summary_text(k, wrong)) is False
    assert summary_oracle(t, summary_text(k, facts[1:])) is False  # a needed value lost
    assert summary_oracle(t, summary_text(k, [*facts, (facts[0][0], "X1")])) is False  # and another under its name
    assert summary_oracle(t, summary_text(len(plan), facts)) is False  # more calls than the plan has
    no_plan = dataclasses.replace(t, env_config={k: v for k, v in t.env_config.items() if k != "plan"})
    assert summary_oracle(no_plan, summary_text(k, facts)) is None  # nothing to judge against
    assert summary_oracle(no_plan, "garbage") is False


# ---------------------------------------------------------------------------------------------------------------------
# through the real agent loop, with a tokenizer trained on the corpus


@pytest.fixture(scope="module")
def loop_setup(tmp_path_factory, tasks):
    from supo.rollout.templates import Templates

    cfg = load_config(None)
    # as `supo-cli prepare` builds it: the corpus of some train and test tasks (every family), v_sum, roles
    texts = corpus(tasks[:120] + tasks[150:200])
    texts += [cfg.prompts.summary_instruction, cfg.prompts.continuation + "\n"] * 50
    texts += ["system\n", "user\n", "assistant\n", "tool\n"] * 200
    tok = build_tokenizer(texts, 1024, tmp_path_factory.mktemp("tok_funcall"))
    return tok, Templates.build(tok, cfg.prompts.summary_instruction, cfg.prompts.continuation)


def test_expert_text_fits_the_turn_budgets(tasks, loop_setup):
    """Actions and summaries fit max_turn_tokens / max_summary_tokens (24, one kept for the end of turn) and
    observations fit max_obs_tokens (24), so nothing the expert relies on is cut in the agent loop."""
    tok, _ = loop_setup
    n = lambda s: len(tok.encode(s, add_special_tokens=False))  # noqa: E731
    acts, obs, sums = [], [], []
    for t in tasks:
        env, ex = make_env(t), FuncallExpert(t)
        env.reset()
        while True:
            a = ex.act()
            o, done, _, _ = env.step(a)
            acts.append(n(a))
            obs.append(n(o))
            if done:
                break
            ex.observe(a, o)
            sums.append(n(summary_text(ex.state.pos, [(ex.out_name[i], ex.state.mem[i])
                                                      for i in ex.live(ex.state.pos)])))
    assert max(acts) <= 23 and max(sums) <= 23 and max(obs) <= 24, (max(acts), max(sums), max(obs))


def _loop(tasks, loop_setup, error_rate: float, L: int):
    from supo.rollout.agent_loop import LoopSettings, run_rollouts
    from supo.rollout.expert_policy import ExpertPolicy

    tok, templates = loop_setup
    st_ = LoopSettings(trigger=L, max_summaries=20, max_steps=100, max_turn_tokens=24, max_summary_tokens=24,
                       max_obs_tokens=24, engine_max_len=L + 200)
    experts = {k: FuncallExpert(t, error_rate=error_rate, seed=k) for k, t in enumerate(tasks)}
    policy = ExpertPolicy(tok, experts, templates.eos_id)
    rollouts = run_rollouts([(t, f"{t.id}@0", 0) for t in tasks], policy, tok, templates, st_, make_env,
                            judge_summary=summary_oracle)
    return rollouts, experts


def test_expert_solves_through_the_agent_loop_with_summaries(tasks, loop_setup):
    from supo.rollout.templates import prompt_ids

    tok, _ = loop_setup
    longest_prompt = max(len(prompt_ids(tok, t)) for t in tasks)
    L = longest_prompt + 70  # small: most episodes need one or more summaries
    rollouts, experts = _loop(tasks, loop_setup, 0.0, L)
    assert sum(r.finished and r.reward == 1.0 for r in rollouts) >= 0.99 * len(tasks)
    assert statistics.mean(r.num_summaries for r in rollouts) > 0.5
    assert sum(r.num_summaries > 0 for r in rollouts) > len(tasks) // 2
    assert sum(r.summary_format_misses for r in rollouts) == 0
    assert all(max(r.context_lengths) < L + 24 + 7 + 24 + 1 for r in rollouts)
    # the oracle judges every summary, as the loop decodes it, and finds each faithful one right
    assert all(r.summaries_judged == r.summaries_correct == r.num_summaries for r in rollouts)
    # with imperfect summaries the expert fails about as often as a summary goes wrong
    rollouts, experts = _loop(tasks, loop_setup, 0.5, L)
    success = sum(r.reward == 1.0 for r in rollouts) / len(rollouts)
    errs = sum(e.summary_errors for e in experts.values())
    assert errs > 0 and success < 0.85
    assert sum(r.summaries_correct for r in rollouts) < sum(r.summaries_judged for r in rollouts)
