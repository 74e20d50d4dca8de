"""Invariants of the summarization-augmented agent loop (R1–R6), on the real tokenizer, env and expert policy.

A recording wrapper around the scripted expert plays the policy: it records every token list it "samples" and gives
each token a distinct behaviour log-prob, so the tests can check that masks and log-probs land exactly on sampled
tokens, that nothing is re-tokenized, and that triggers, drops and resets follow R2–R5.
"""

from __future__ import annotations

import pytest
from agent_loop_helpers import Recording, build_setup, run, settings

from supo.envs.array import make_env
from supo.rollout.agent_loop import run_rollouts
from supo.rollout.templates import prompt_ids


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_setup(tmp_path_factory)


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
