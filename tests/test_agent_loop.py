"""Invariants of the summarization-augmented agent loop (R1–R6), on the real tokenizer, env and expert policy.

A recording wrapper around the scripted expert plays the policy: it records every token list it "samples" and gives
each token a distinct behaviour log-prob, so the tests can check that masks and log-probs land exactly on sampled
tokens, that nothing is re-tokenized, and that triggers, drops and resets follow R2–R5.
"""

from __future__ import annotations

import random

import pytest

from supo.config import load_config
from supo.envs.array import ArrayExpert, make_env, make_tasks
from supo.models import IM_END, build_tokenizer
from supo.rollout.agent_loop import GenResult, LoopSettings, run_rollouts
from supo.rollout.expert_policy import ExpertPolicy
from supo.rollout.templates import Templates, prompt_ids
from supo.envs.array import corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tasks = make_tasks("train", 40, 6, 14, ["max", "sum"], 99, seed=3)
    cfg = load_config(None)
    tok = build_tokenizer(corpus(tasks) + [cfg.prompts.summary_instruction, cfg.prompts.continuation + "\n"] * 20
                          + ["system\n", "user\n", "assistant\n", "tool\n"] * 50, 1024,
                          tmp_path_factory.mktemp("tok"))
    templates = Templates.build(tok, cfg.prompts.summary_instruction, cfg.prompts.continuation)
    return tasks, tok, templates


class Recording(ExpertPolicy):
    """The expert, recording what it samples; log-probs are distinct negative numbers per generated token."""

    def __init__(self, tok, tasks, eos, *, error_rate=0.0, mutate=None):
        super().__init__(tok, {k: ArrayExpert(t, error_rate=error_rate, seed=k) for k, t in enumerate(tasks)}, eos)
        self.sampled: dict[int, list[tuple[str, list[int], list[float]]]] = {}
        self.counter = 0
        self.mutate = mutate

    def generate(self, requests):
        results = super().generate(requests)
        out = []
        for req, res in zip(requests, results):
            ids = self.mutate(req, res.token_ids) if self.mutate else res.token_ids
            lps = [-(self.counter + i + 1) / 1000.0 for i in range(len(ids))]
            self.counter += len(ids)
            self.sampled.setdefault(req.key, []).append((req.kind, list(ids), lps))
            out.append(GenResult(ids, lps))
        return out


def settings(L=120, S=8, H=100, max_len=400, trigger_action=True):
    return LoopSettings(trigger=L, max_summaries=S, max_steps=H, max_turn_tokens=24, max_summary_tokens=24,
                        max_obs_tokens=24, engine_max_len=max_len, train_trigger_action=trigger_action)


def run(setup, st, policy=None, tasks=None, views=None, **kw):
    all_tasks, tok, t = setup
    tasks = tasks or all_tasks
    policy = policy or Recording(tok, tasks, t.eos_id, **kw)
    items = [(task, f"{task.id}@0", 0) for task in tasks]
    return run_rollouts(items, policy, tok, t, st, make_env, views=views), policy


def test_expert_rollouts_succeed_with_summaries(setup):
    rollouts, _ = run(setup, settings())
    assert all(r.finished and r.reward == 1.0 for r in rollouts)
    assert sum(r.num_summaries for r in rollouts) > 0
    for r in rollouts:
        assert len(r.context_segments) == r.num_summaries + 1  # R5: I summaries -> I + 1 segments
        assert len(r.context_lengths) == r.num_summaries + 1
        assert sum(s.is_last for s in r.context_segments) == 1 and r.context_segments[-1].is_last


def test_trigger_fires_at_L_and_drops_the_last_pair(setup):
    _, tok, t = setup
    L = 120
    rollouts, pol = run(setup, settings(L=L))
    checked = 0
    for r in rollouts:
        segs = r.context_segments
        triggers = [s for s in r.segments if s.kind == "trigger_action"]
        assert len(triggers) == r.num_summaries  # every summary had a dropped trigger action (R5b)
        for seg, trig in zip(segs[:-1], triggers):
            # the segment ends with: ... context-before-drop | v_sum | summary
            resp = seg.response_ids
            starts = [i for i in range(len(resp)) if resp[i:i + len(t.summary_request)] == t.summary_request]
            assert len(starts) == 1
            i = starts[0]
            before = seg.prompt_ids + resp[:i]
            assert len(before) < L, "after the drop the context is below L"
            # the trigger sample was sampled from exactly that context, and re-adding its pair reaches L
            assert trig.prompt_ids == before
            dropped_len = len(trig.response_ids) + t.obs_overhead + 1
            assert len(before) + dropped_len >= L
            assert all(m == 1 for m in trig.response_mask)
            checked += 1
    assert checked > 0


def test_reset_prompt_is_initial_prompt_plus_continuation_plus_summary(setup):
    tasks, tok, t = setup
    rollouts, pol = run(setup, settings())
    checked = 0
    for key, r in enumerate(rollouts):
        p0 = prompt_ids(tok, tasks[key])
        base = p0[: len(p0) - len(t.assistant_header)]
        summaries = [ids for kind, ids, _ in pol.sampled[key] if kind == "summary"]
        segs = r.context_segments
        assert segs[0].prompt_ids == p0
        for prev_summary, seg in zip(summaries, segs[1:]):
            ids = prev_summary[:-1]  # drop the end-of-turn token
            content = ids[ids.index(t.summary_open[0]) + 1: ids.index(t.summary_close[0])]
            assert seg.prompt_ids == base + t.continuation_prefix + content + t.continuation_suffix
            checked += 1
    assert checked > 0


def test_masks_and_logprobs_exactly_on_sampled_tokens(setup):
    rollouts, pol = run(setup, settings())
    for key, r in enumerate(rollouts):
        sampled = pol.sampled[key]
        # every sampled token list appears, in order, as a maximal mask-1 run with its own log-probs
        runs = []
        for seg in r.segments:
            cur_ids, cur_lp = [], []
            for tid, m, lp in zip(seg.response_ids, seg.response_mask, seg.logprobs):
                if m:
                    cur_ids.append(tid)
                    cur_lp.append(lp)
                else:
                    assert lp == 0.0, "log-probs only on sampled tokens"
                    if cur_ids:
                        runs.append((seg.kind, cur_ids, cur_lp))
                        cur_ids, cur_lp = [], []
            if cur_ids:
                runs.append((seg.kind, cur_ids, cur_lp))
        # trigger actions are duplicated: once in their sample; they were removed from the context segment
        ctx_runs = [(ids, lp) for kind, ids, lp in runs if kind == "segment"]
        trig_runs = [(ids, lp) for kind, ids, lp in runs if kind == "trigger_action"]
        sampled_pairs = [(ids, lp) for _, ids, lp in sampled]
        assert sorted(map(str, ctx_runs + trig_runs)) == sorted(map(str, sampled_pairs))


def test_no_retokenization_of_sampled_ids(setup):
    """A policy that samples a non-canonical tokenization: the loop must store those exact ids."""
    tasks, tok, t = setup

    def charwise(req, ids):
        if req.kind != "action":
            return ids
        text = tok.decode(ids[:-1], skip_special_tokens=False)
        chars = []
        for ch in text.replace("<tool_call>", "\0").replace("</tool_call>", "\1"):
            if ch == "\0":
                chars.append(tok.convert_tokens_to_ids("<tool_call>"))
            elif ch == "\1":
                chars.append(tok.convert_tokens_to_ids("</tool_call>"))
            else:
                chars.extend(tok.encode(ch, add_special_tokens=False))
        return chars + [ids[-1]]

    rollouts, pol = run(setup, settings(L=600, max_len=1000), tasks=tasks[:4], mutate=charwise)
    for key, r in enumerate(rollouts):
        assert r.finished and r.reward == 1.0  # the char-level ids decode to the same actions
        first_action = pol.sampled[key][0][1]
        assert r.context_segments[0].response_ids[: len(first_action)] == first_action
        canonical = tok.encode(tok.decode(first_action[:-1], skip_special_tokens=False), add_special_tokens=False)
        assert canonical != first_action[:-1], "the test must use a non-canonical tokenization"


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


@pytest.mark.parametrize("error_rate", [0.0, 0.5])
def test_views_equal_runs_at_each_smaller_s(setup, error_rate):
    """One run at S = 8 read at S = b (views) is exactly the run at S = b: same records, segment for segment."""
    tasks, tok, t = setup
    views = {0: [], 1: [], 2: []}
    full, _ = run(setup, settings(S=8), error_rate=error_rate, views=views)
    assert any(r.num_summaries > 2 for r in full)
    for b, view in views.items():
        direct, _ = run(setup, settings(S=b), error_rate=error_rate)
        assert [v.to_record() for v in view] == [r.to_record() for r in direct], f"S = {b}"
        tokens = lambda rs: [[(s.kind, s.index, s.is_last, s.prompt_ids, s.response_ids, s.response_mask)  # noqa: E731
                              for s in r.segments] for r in rs]
        assert tokens(view) == tokens(direct)
    assert [r.to_record() for r in full] == [r.to_record() for r in run(setup, settings(S=8),
                                                                         error_rate=error_rate)[0]]
    with pytest.raises(ValueError, match="not below"):
        run(setup, settings(S=2), views={2: []})


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
    h_at_trigger = [len(_action_starts(r.context_segments[0])) for r in free]
    for task, h in zip(long, h_at_trigger):
        (r,), _ = run(setup, settings(H=h), tasks=[task])
        assert r.overlong and r.overlong_reason == "max_steps" and r.tool_calls == h
        assert r.num_summaries == 0
        assert [s.kind for s in r.segments].count("trigger_action") == 1  # the H-th action was dropped as a trigger
        assert r.context_segments[-1].is_last


def _action_starts(seg):
    """(start, length) of each run of mask-1 tokens in a segment's response (one per action or summary)."""
    out, start = [], None
    for i, m in enumerate(seg.response_mask + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i - start))
            start = None
    return out


@pytest.mark.parametrize("error_rate", [0.0, 0.5])
def test_views_with_their_own_h_equal_runs_at_each_smaller_s_and_h(setup, error_rate):
    """H grows with S_eval (``eval.scale_max_steps``): one run at S = 8, H = 60 read at S = b with a smaller H_b is
    exactly the run at (S = b, H = H_b) — including views that end by H before their S does."""
    tasks, tok, t = setup
    hs = {0: 6, 1: 9, 2: 12}
    views = {b: [] for b in hs}
    full_settings = settings(S=8, H=60)
    full_settings.view_max_steps = hs
    full, _ = run(setup, full_settings, error_rate=error_rate, views=views)
    ended_by_h = 0
    for b, view in views.items():
        direct, _ = run(setup, settings(S=b, H=hs[b]), error_rate=error_rate)
        assert [v.to_record() for v in view] == [r.to_record() for r in direct], f"S = {b}, H = {hs[b]}"
        ended_by_h += sum(r.overlong_reason == "max_steps" for r in direct)
    assert ended_by_h > 0, "some views must end by their H for the test to check that path"
    bad = settings(S=8, H=10)
    bad.view_max_steps = {0: 11}
    with pytest.raises(ValueError, match="view's H above"):
        run(setup, bad, views={0: []})


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


def test_summaries_are_judged_by_the_oracle_and_generation_peaks_recorded(setup):
    """The env's oracle counts each summary (the expert's deliberate errors are the wrong ones); each context segment
    records the longest context it generated in, the summary turn included."""
    from supo.envs.array import summary_oracle

    all_tasks, tok, t = setup
    pol = Recording(tok, all_tasks, t.eos_id, error_rate=0.5)
    items = [(task, f"{task.id}@0", 0) for task in all_tasks]
    rollouts = run_rollouts(items, pol, tok, t, settings(), make_env, judge_summary=summary_oracle)
    assert sum(r.summaries_judged for r in rollouts) == sum(r.num_summaries for r in rollouts) > 0
    assert sum(e.summary_errors for e in pol.experts.values()) > 0
    for k, r in enumerate(rollouts):  # a deliberate error is judged wrong (and so is every summary that carries it)
        deliberate = pol.experts[k].summary_errors
        assert (r.summaries_correct < r.num_summaries) == (deliberate > 0), r.task_id
        assert r.first_failure == ("wrong_summary" if deliberate else None)
        assert len(r.generation_peaks) == len(r.context_segments)
        for seg, peak in zip(r.context_segments, r.generation_peaks):
            assert peak <= len(seg.prompt_ids) + len(seg.response_ids) + 24  # at most one dropped action more
    unjudged = run_rollouts(items[:4], Recording(tok, all_tasks[:4], t.eos_id), tok, t, settings(), make_env)
    assert all(r.summaries_judged == 0 for r in unjudged)
