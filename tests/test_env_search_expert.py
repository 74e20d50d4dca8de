"""Tests for supo.envs.search's scripted expert: it acts only through ``env.step`` on the text it writes (the parser
the policy's actions go through), and in the real agent loop (``run_rollouts`` + ``ExpertPolicy``) where the trigger
drops its last action and it summarizes; faithful summaries lose nothing, wrong ones mislead it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import pytest
from search_fixtures import search_tasks, search_world

from supo.config import load_config
from supo.envs import get_env_spec
from supo.envs import search as S
from supo.envs.base import format_tool_call, parse_tool_call
from supo.envs.search_expert import (
    NO_MATCH,
    ExpertState,
    SearchExpert,
    extract,
    parse_summary,
    summary_oracle,
    summary_text,
)
from supo.models import SUMMARY_CLOSE, SUMMARY_OPEN
from supo.types import Task


@pytest.fixture(scope="module")
def world():
    return search_world()


@pytest.fixture(scope="module")
def tasks():
    return search_tasks()


def _run(task: Task, error_rate: float = 0.0, summarize: Callable | None = None, drop_before_summary: bool = True,
         env=None, expert=None, max_actions: int = 80):
    """Drive the expert through ``env.step``; ``summarize(k, expert)`` says whether to summarize before action k.

    Returns (reward or None, actions taken, summaries made)."""
    env = env if env is not None else S.make_env(task)
    if expert is None:
        env.reset()
        expert = SearchExpert(task, error_rate=error_rate, seed=1)
    summaries = 0
    for k in range(max_actions):
        if summarize is not None and summarize(k, expert):
            if drop_before_summary:
                expert.drop()
            text = expert.summarize()
            assert text.startswith(SUMMARY_OPEN) and text.endswith(SUMMARY_CLOSE)
            summaries += 1
        action = expert.act()
        obs, done, reward, _ = env.step(action)
        assert not obs.startswith("Error"), (action, obs)
        expert.observe(action, obs)
        if done:
            return reward, k + 1, summaries
    return None, max_actions, summaries


# ---------------------------------------------------------------------------------------------------------------------
# the expert, through env.step


def test_expert_solves_tasks_through_env_step(tasks):
    results = [_run(t) for t in tasks]
    solved = sum(r == 1.0 for r, _, _ in results)
    assert len(tasks) == 300 and solved >= 0.99 * len(tasks)
    # 2 calls per hop, +1 per namesake opened, +1 to finish: the task's difficulty
    assert all(k == t.difficulty >= 2 * len(t.env_config["relations"]) + 1 for (_, k, _), t in zip(results, tasks))


def test_expert_actions_parse_and_fit_a_turn(tasks):
    for t in tasks[:50]:
        _, pairs = S.run_expert(t)
        for a, _ in pairs:
            call = parse_tool_call(a)
            assert call.name in ("search", "open", "finish") and a == format_tool_call(call.name, **call.parameters)
            assert len(a) < 160


@pytest.mark.parametrize("every", [2, 3, 5])
def test_expert_with_faithful_summaries_still_solves(tasks, every):
    """error_rate 0: drop + summary + continue from the summary (the trigger protocol, R2) loses nothing."""
    results = [_run(t, summarize=lambda k, ex: k > 0 and k % every == 0) for t in tasks[::3]]
    assert all(r == 1.0 for r, _, _ in results)
    assert sum(n for _, _, n in results) > 0


def _after_each_new_fact():
    """A summarize(k, expert) rule: summarize once each time the expert has found a new fact."""
    done: set[int] = set()

    def rule(k, ex):
        j = len(ex.state.facts)
        if j and j not in done:
            done.add(j)
            return True
        return False

    return rule


def test_expert_with_wrong_summaries_usually_answers_wrong(tasks):
    """error_rate 1: each summary replaces the last fact with what a namesake of its source states."""
    results = [_run(t, error_rate=1.0, summarize=_after_each_new_fact(), drop_before_summary=False) for t in tasks]
    assert all(n > 0 for _, _, n in results)
    assert sum(r is not None for r, _, _ in results) >= 0.95 * len(tasks)  # it still answers
    wrong = sum(r != 1.0 for r, _, _ in results) / len(results)
    assert wrong >= 0.95, f"only {wrong:.0%} of answers wrong after wrong summaries"


def test_summary_errors_happen_at_about_the_rate(tasks):
    """One summary per task once a fact is known: answers go wrong at about error_rate."""
    rate = 0.3
    results = []
    for t in tasks:
        once = _after_each_new_fact()
        results.append(_run(t, error_rate=rate, summarize=lambda k, ex, f=once: len(ex.state.facts) == 1 and f(k, ex),
                            drop_before_summary=False)[0])
    wrong = sum(r != 1.0 for r in results) / len(results)
    assert abs(wrong - rate) < 0.1, wrong


def test_summary_states_the_facts_and_the_expert_continues_from_it(tasks, world):
    t = next(t for t in tasks if len(t.env_config["relations"]) == 3)
    env = S.make_env(t)
    env.reset()
    ex = SearchExpert(t, error_rate=0.0)
    while len(ex.state.facts) < 2:
        a = ex.act()
        ex.observe(a, env.step(a)[0])
    rels, chain = t.env_config["relations"], t.env_config["chain"]
    text = ex.summarize()
    assert text == f"{SUMMARY_OPEN}hop 3 of 3; found: {rels[0]} = {chain[1]}, {rels[1]} = {chain[2]}{SUMMARY_CLOSE}"
    assert parse_summary(text, rels) == ex.state
    # a wrong summary: the last fact is what a namesake of its source states
    ex1 = SearchExpert(t, error_rate=1.0)
    ex1.state = ExpertState(facts=tuple(chain[1:3]))
    wrong = ex1.summarize()
    assert ex1.summary_errors == 1 and chain[2] not in wrong and chain[1] in wrong
    stated = {extract(world.texts[d], chain[1], rels[1]) for d in world.namesake_docs[world.by_name[chain[1]]]}
    assert ex1.state.facts[-1] in stated
    assert parse_summary(wrong, rels) == ex1.state
    # nothing found yet: nothing to corrupt
    ex2 = SearchExpert(t, error_rate=1.0)
    assert "found: nothing yet" in ex2.summarize() and ex2.summary_errors == 0


def test_summary_round_trips_every_state(tasks):
    for t in tasks[::5]:
        env = S.make_env(t)
        env.reset()
        ex = SearchExpert(t)
        for _ in range(40):
            snap = ex.state
            text = summary_text(ex.relations, snap)
            assert parse_summary(text, ex.relations) == ExpertState(facts=snap.facts, cands=snap.cands,
                                                                        attempt=min(snap.attempt, 1))
            a = ex.act()
            obs, done, _, _ = env.step(a)
            ex.observe(a, obs)
            if done:
                break


def test_expert_drop_restores_state_before_last_action(tasks):
    t = next(t for t in tasks if len(t.env_config["relations"]) == 3)
    env = S.make_env(t)
    env.reset()
    ex = SearchExpert(t)
    while True:
        before = ex.state
        a = ex.act()
        obs, done, _, _ = env.step(a)
        if done:
            break
        ex.observe(a, obs)
        after = ex.state
        ex.drop()
        assert ex.state == before and ex.act() == a  # it redoes the dropped action
        ex.observe(a, env.step(a)[0])  # searching and opening have no side effects: redoing is harmless
        assert ex.state == after
    # two drops go back two actions
    env2 = S.make_env(t)
    env2.reset()
    ex2 = SearchExpert(t)
    a = ex2.act()
    ex2.observe(a, env2.step(a)[0])
    s1 = ex2.state
    for _ in range(2):
        b = ex2.act()
        ex2.observe(b, env2.step(b)[0])
    ex2.drop()
    ex2.drop()
    assert ex2.state == s1
    reward, _, _ = _run(t, env=env2, expert=ex2)
    assert reward == 1.0


def test_expert_summary_keeps_documents_still_to_open(tasks):
    """A summary written after a search lists the hits to open, so one step per segment is enough to progress."""
    t = tasks[0]
    env = S.make_env(t)
    env.reset()
    ex = SearchExpert(t)
    a = ex.act()
    ex.observe(a, env.step(a)[0])
    assert ex.state.cands
    text = ex.summarize()
    assert f"open next: {' '.join(ex.state.cands)}" in text
    assert ex.act() == format_tool_call("open", doc_id=ex.state.cands[0])
    # summarize before every action: still solved
    reward, _, n = _run(t, summarize=lambda k, _ex: k > 0, drop_before_summary=False)
    assert reward == 1.0 and n > 0


# ---------------------------------------------------------------------------------------------------------------------
# the summary oracle (EnvSpec.summary_oracle): the summaries themselves measured


class _Recorded(SearchExpert):
    """The expert, keeping each summary it writes as (text, deliberately wrong, its state faithful before)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.written: list[tuple[str, bool, bool]] = []

    def summarize(self) -> str:
        errors = self.summary_errors
        text = super().summarize()
        self.written.append((text, self.summary_errors > errors, errors == 0))
        return text


def _written(task: Task, error_rate: float, summarize: Callable, drop_before_summary: bool = True):
    env, ex = S.make_env(task), _Recorded(task, error_rate=error_rate, seed=1)
    env.reset()
    _run(task, summarize=summarize, drop_before_summary=drop_before_summary, env=env, expert=ex)
    return ex.written


def test_summary_oracle_passes_every_faithful_summary(tasks):
    written = [(t, text) for t in tasks[::5] for every in (2, 3)
               for text, *_ in _written(t, 0.0, lambda k, ex, every=every: k > 0 and k % every == 0)]
    assert len(written) > 150
    assert sum("found: nothing yet" not in text for _, text in written) > 50  # most carry facts to check
    assert all(summary_oracle(t, text) is True for t, text in written)
    assert get_env_spec("search").summary_oracle is summary_oracle


def test_summary_oracle_fails_deliberately_wrong_summaries(tasks):
    """error_rate 1: each summary with a fact states a namesake's for the last one; from a faithful state, each such
    summary is judged wrong (the ones before any fact is found have nothing to corrupt and stay right)."""
    judged = []
    for t in tasks[::3]:
        for text, wrong, clean_before in _written(t, 1.0, _after_each_new_fact(), drop_before_summary=False):
            if wrong and clean_before:
                judged.append(summary_oracle(t, text))
    assert len(judged) >= 90 and all(v is False for v in judged)


def test_summary_oracle_refuses_text_not_in_the_experts_wording(tasks):
    t = next(t for t in tasks if len(t.env_config["relations"]) == 3)
    rels, chain = t.env_config["relations"], t.env_config["chain"]
    right = f"hop 3 of 3; found: {rels[0]} = {chain[1]}, {rels[1]} = {chain[2]}"
    assert summary_oracle(t, right) is True
    for text in ("garbage", "", f"{SUMMARY_OPEN}{SUMMARY_CLOSE}", f"So far: {right}", right + ";",
                 right.replace("hop 3 of 3", "hop 2 of 3"),  # the head miscounts the facts
                 right.replace("hop 3 of 3", "hop 3 of 4"),
                 right.replace(f"{rels[0]} = ", "first = "),  # a relation the question does not follow
                 f"hop 3 of 3; found: {rels[1]} = {chain[2]}, {rels[0]} = {chain[1]}",  # out of order
                 (f"all 3 hops done; found: {rels[0]} = {chain[1]}, {rels[1]} = {chain[2]}, {rels[2]} = {chain[3]}, "
                  f"{rels[2]} = {chain[3]}")):  # more facts than hops
        assert summary_oracle(t, text) is False, text


def test_summary_oracle_on_hand_made_summaries(tasks):
    t = next(t for t in tasks if len(t.env_config["relations"]) == 3)
    rels, chain = t.env_config["relations"], t.env_config["chain"]
    found = lambda *vs: ", ".join(f"{r} = {v}" for r, v in zip(rels, vs))  # noqa: E731
    for text in ("hop 1 of 3; found: nothing yet", f"hop 2 of 3; found: {found(chain[1])}",
                 f"{SUMMARY_OPEN}hop 3 of 3; found: {found(*chain[1:3])}; open next: d0001 d0002{SUMMARY_CLOSE}",
                 f"hop 3 of 3; found: {found(*chain[1:3])}; {NO_MATCH}",
                 f"all 3 hops done; found: {found(*chain[1:])}"):
        assert summary_oracle(t, text) is True, text
    other = next(e.name for e in search_world().entities if e.name not in chain)
    for text in (f"hop 2 of 3; found: {found(other)}", f"hop 3 of 3; found: {found(chain[1], other)}",
                 f"hop 2 of 3; found: {found(chain[2])}",  # a later fact in an earlier hop's place
                 f"hop 3 of 3; found: {found(chain[1], chain[2].upper())}",  # the exact name, as the expert writes
                 f"all 3 hops done; found: {found(*chain[1:3], other)}"):
        assert summary_oracle(t, text) is False, text


# ---------------------------------------------------------------------------------------------------------------------
# the expert through the real agent loop


@pytest.fixture(scope="module")
def loop_setup(tasks, tmp_path_factory):
    from supo.models import build_tokenizer
    from supo.prepare import tokenizer_corpus
    from supo.rollout.templates import Templates

    cfg = load_config(None, overrides={"env.name": "search"})
    tok = build_tokenizer(tokenizer_corpus(cfg, tasks[:150], tasks[150:]), 1024, tmp_path_factory.mktemp("tok"))
    return cfg, tok, Templates.build(tok, cfg.prompts.summary_instruction, cfg.prompts.continuation)


def _loop(loop_setup, tasks, L: int, error_rate: float = 0.0, S_max: int = 8):
    from supo.rollout.agent_loop import LoopSettings, run_rollouts
    from supo.rollout.expert_policy import ExpertPolicy

    _, tok, t = loop_setup
    st_ = LoopSettings(trigger=L, max_summaries=S_max, max_steps=100, max_turn_tokens=40, max_summary_tokens=80,
                       max_obs_tokens=400, engine_max_len=2048)
    experts = {k: SearchExpert(task, error_rate=error_rate, seed=k) for k, task in enumerate(tasks)}
    items = [(task, f"{task.id}@0", 0) for task in tasks]
    return run_rollouts(items, ExpertPolicy(tok, experts, t.eos_id), tok, t, st_, S.make_env,
                        judge_summary=summary_oracle), experts


def test_expert_solves_through_the_agent_loop_with_summaries(loop_setup, tasks):
    rollouts, experts = _loop(loop_setup, tasks, L=400)
    success = statistics.mean(r.reward for r in rollouts)
    mean_summaries = statistics.mean(r.num_summaries for r in rollouts)
    assert success >= 0.99, success
    assert mean_summaries > 0.5, mean_summaries
    assert not any(r.overlong for r in rollouts)
    assert any(r.num_summaries >= 2 for r in rollouts)
    assert sum(e.summary_errors for e in experts.values()) == 0
    # the oracle judges every summary, as the loop decodes it, and finds each faithful one right
    assert all(r.summaries_judged == r.summaries_correct == r.num_summaries for r in rollouts)


def test_wrong_summaries_through_the_agent_loop(loop_setup, tasks):
    rollouts, experts = _loop(loop_setup, tasks[::2], L=400, error_rate=1.0)
    summarized_with_facts = [r for r, e in zip(rollouts, experts.values()) if e.summary_errors]
    assert len(summarized_with_facts) >= 0.3 * len(rollouts)
    assert statistics.mean(r.reward for r in summarized_with_facts) <= 0.1
    assert all(r.summaries_correct < r.summaries_judged for r in summarized_with_facts)
