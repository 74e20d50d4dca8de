"""The agent loop's endings and faults, on the real tokenizer, env and expert policy: overlong at L, at H and at the
engine's limit; malformed actions, summaries without tags, an env that raises; per-item budgets; concurrent env steps;
per-rollout request seeds. The invariants R1–R6 and the views: tests/test_agent_loop.py.
"""

from __future__ import annotations

import random

import pytest
from agent_loop_helpers import Recording, action_starts, build_setup, run, settings

from supo.envs.array import make_env
from supo.models import IM_END
from supo.rollout.agent_loop import run_rollouts
from supo.rollout.templates import prompt_ids


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_setup(tmp_path_factory)


def test_grpo_s0_ends_overlong_at_L(setup):
    tasks, _, _ = setup
    rollouts, _ = run(setup, settings(L=240, S=0))
    long = [r for r, task in zip(rollouts, tasks) if len(task.env_config["values"]) >= 12]
    short = [r for r, task in zip(rollouts, tasks) if len(task.env_config["values"]) <= 6]
    assert long and all(r.overlong and r.overlong_reason == "max_summaries" for r in long)
    assert all(r.num_summaries == 0 and len(r.context_segments) == 1 for r in rollouts)
    assert all(r.finished for r in short)
    assert all(max(r.context_lengths) < 240 + 24 + 7 + 24 + 1 for r in rollouts)


def test_trigger_action_samples_are_optional(setup):
    rollouts, _ = run(setup, settings(trigger_action=False))
    assert all(s.kind == "segment" for r in rollouts for s in r.segments)
    assert sum(r.num_summaries for r in rollouts) > 0


def test_max_steps_ends_overlong(setup):
    rollouts, _ = run(setup, settings(H=5))
    assert all(r.overlong and r.overlong_reason == "max_steps" and r.tool_calls == 5 for r in rollouts)


def test_engine_limit_ends_overlong(setup):
    tasks, tok, _ = setup
    longest = max(len(prompt_ids(tok, task)) for task in tasks)
    rollouts, _ = run(setup, settings(L=10_000, max_len=longest + 40))
    assert any(r.overlong_reason == "engine_limit" for r in rollouts)
    assert all(r.finished or r.overlong_reason == "engine_limit" for r in rollouts)


def test_malformed_actions_become_errors_and_the_rollout_goes_on(setup):
    tasks, tok, t = setup
    rng = random.Random(0)

    def garbage(req, ids):
        if req.kind == "action":
            return [rng.randrange(len(tok)) for _ in range(5)] + [t.eos_id]
        return ids

    rollouts, _ = run(setup, settings(H=12), tasks=tasks[:6], mutate=garbage)
    for r in rollouts:
        assert r.tool_calls == 12 or r.overlong
        assert not r.finished
        assert r.first_failure == "action_error" and r.error_observations > 0


def test_summary_without_tags_is_used_whole_and_counted(setup):
    tasks, tok, t = setup

    def untagged(req, ids):
        if req.kind == "summary":
            return [i for i in ids if i not in (t.summary_open[0], t.summary_close[0])]
        return ids

    rollouts, pol = run(setup, settings(), tasks=tasks[:10], mutate=untagged)
    with_summaries = [(k, r) for k, r in enumerate(rollouts) if r.num_summaries]
    assert with_summaries
    for k, r in with_summaries:
        assert r.summary_format_misses == r.num_summaries
        s_ids = next(ids for kind, ids, _ in pol.sampled[k] if kind == "summary")
        seg1 = r.context_segments[1]
        assert seg1.prompt_ids[-len(t.continuation_suffix) - (len(s_ids) - 1): -len(t.continuation_suffix)] \
            == s_ids[:-1]


def test_summary_tags_made_of_several_tokens_are_found_as_id_sequences(setup):
    """With a tokenizer whose tags are not single tokens, the content is still sliced from the sampled ids."""
    from dataclasses import replace

    from supo.rollout.templates import summary_content

    _, tok, t = setup
    t2 = replace(t, summary_open=[901, 902, 903], summary_close=[904, 905])
    ids = [7, 901, 902, 903, 11, 12, 13, 904, 905, t.eos_id]
    assert summary_content(ids, t2) == ([11, 12, 13], True)
    assert summary_content([901, 902, 903, 11, 12, t.eos_id], t2) == ([11, 12], False)
    assert summary_content([11, 12, 904, 905, t.eos_id], t2) == ([11, 12], False)
    assert summary_content([11, 901, 12, t.eos_id], t2) == ([11, 901, 12], False)


def test_expert_policy_end_token(setup):
    _, tok, t = setup
    assert t.eos_id == tok.convert_tokens_to_ids(IM_END)


def test_an_environment_that_raises_becomes_an_error_observation(setup):
    """Fault injection: one rollout's env raises on its third step; that rollout sees an Error: and goes on."""
    tasks, tok, t = setup
    calls = {"n": 0}

    def make_faulty(task):
        env = make_env(task)
        if task.id != tasks[0].id:
            return env
        real_step = env.step

        def step(action):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("disk on fire")
            return real_step(action)

        env.step = step
        return env

    items = [(task, f"{task.id}@0", 0) for task in tasks[:4]]
    pol = Recording(tok, tasks[:4], t.eos_id)
    rollouts = run_rollouts(items, pol, tok, t, settings(), make_faulty, keep_transcript=True)
    assert any("Error: the environment failed: RuntimeError: disk on fire" in x for x in rollouts[0].transcript)
    assert all(r.finished for r in rollouts[1:]) and rollouts[0].tool_calls > 3


def test_per_item_settings_run_each_rollout_under_its_own_budgets(setup):
    """An eval sweep batches several S into one call: each rollout keeps its own S, and a rollout's result is the
    same as when it runs alone under those settings (the expert is deterministic)."""
    tasks, tok, t = setup
    long = [task for task in tasks if len(task.env_config["values"]) >= 12][:4]
    per = [settings(S=0)] * len(long) + [settings(S=1)] * len(long) + [settings(S=8)] * len(long)
    items = [(task, f"{task.id}@{j}", 0) for j in range(3) for task in long]
    mixed = run_rollouts(items, Recording(tok, long * 3, t.eos_id), tok, t, per, make_env)
    assert [r.num_summaries for r in mixed[:4]] == [0] * 4 and all(r.overlong for r in mixed[:4])
    assert all(r.num_summaries <= 1 for r in mixed[4:8]) and all(r.finished for r in mixed[8:])
    alone, _ = run(setup, settings(S=8), tasks=long)
    assert [(r.reward, r.num_summaries, r.tool_calls) for r in mixed[8:]] == \
           [(r.reward, r.num_summaries, r.tool_calls) for r in alone]
    with pytest.raises(ValueError, match="one per item"):
        run_rollouts(items, Recording(tok, long * 3, t.eos_id), tok, t, per[:-1], make_env)


def test_env_steps_of_one_turn_run_concurrently_and_change_nothing(setup):
    """With env_threads, the environment steps of one turn overlap (a turn of slow steps costs about the slowest
    step, not the sum) and the rollouts are exactly those of the sequential loop."""
    import threading
    import time

    tasks, tok, t = setup
    state = {"active": 0, "peak": 0}
    lock = threading.Lock()

    def make_slow(task):
        env = make_env(task)
        real_step = env.step

        def step(action):
            with lock:
                state["active"] += 1
                state["peak"] = max(state["peak"], state["active"])
            time.sleep(0.05)
            with lock:
                state["active"] -= 1
            return real_step(action)

        env.step = step
        return env

    few = tasks[:8]
    items = [(task, f"{task.id}@0", 0) for task in few]
    short = settings(H=3)  # three turns each: 8 rollouts × 3 steps × 0.05 s = 1.2 s when sequential
    t0 = time.perf_counter()
    sequential = run_rollouts(items, Recording(tok, few, t.eos_id), tok, t, short, make_slow)
    t_seq = time.perf_counter() - t0
    assert state["peak"] == 1
    t0 = time.perf_counter()
    threaded = run_rollouts(items, Recording(tok, few, t.eos_id), tok, t, short, make_slow, env_threads=8)
    t_thr = time.perf_counter() - t0
    assert state["peak"] == 8  # every rollout's step of a turn was in flight at once
    assert t_thr < 0.5 * t_seq  # about 3 × 0.05 s instead of 24 × 0.05 s
    for a, b in zip(sequential, threaded):
        assert a.to_record(with_tokens=True) == b.to_record(with_tokens=True)


def test_the_action_that_reaches_h_ends_the_rollout_even_at_a_trigger(setup):
    """R4: H actions without an answer end the rollout overlong (max_steps), also when the H-th action fires the
    summary trigger: no summary is written after it (and its pair is dropped, as at every trigger, R2)."""
    tasks, tok, t = setup
    long = [task for task in tasks if len(task.env_config["values"]) >= 12][:3]
    free, _ = run(setup, settings(), tasks=long)
    assert all(r.num_summaries >= 1 for r in free)
    # the step that first triggered: the first segment's mask-1 runs are its kept actions and its summary, so their
    # count is the kept actions plus one, the dropped action
    h_at_trigger = [len(action_starts(r.context_segments[0])) for r in free]
    for task, h in zip(long, h_at_trigger):
        (r,), _ = run(setup, settings(H=h), tasks=[task])
        assert r.overlong and r.overlong_reason == "max_steps" and r.tool_calls == h
        assert r.num_summaries == 0
        assert [s.kind for s in r.segments].count("trigger_action") == 1  # the H-th action was dropped as a trigger
        assert r.context_segments[-1].is_last


def test_request_seeds_depend_on_the_rollout_not_on_its_place_in_the_batch(setup):
    """Common random numbers: a generation's seed is a function of (run seed, group, index, turn) only."""
    from supo.rollout.agent_loop import request_seed

    tasks, tok, t = setup

    def seeds(order):
        pol = Recording(tok, order, t.eos_id)
        seen: dict[tuple[str, int], list[int]] = {}
        original = pol.generate

        def generate(requests):
            for r in requests:
                seen.setdefault((order[r.key].id, r.kind == "summary"), []).append(r.seed)
            return original(requests)

        pol.generate = generate
        items = [(task, f"{task.id}@0", 0) for task in order]
        run_rollouts(items, pol, tok, t, settings(), make_env, seed=5)
        return seen

    forward, backward, alone = seeds(tasks[:6]), seeds(tasks[:6][::-1]), seeds(tasks[2:3])
    assert forward == backward
    assert {k: v for k, v in forward.items() if k[0] == tasks[2].id} == alone
    assert forward[(tasks[0].id, False)][0] == request_seed(5, f"{tasks[0].id}@0", 0, 0)
    assert len({request_seed(5, "a@0", i, turn) for i in range(8) for turn in range(40)}) == 320
    assert request_seed(5, "a@0", 0, 0) != request_seed(6, "a@0", 0, 0)
