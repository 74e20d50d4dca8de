"""supo.rollout.segments: a rollout's segment bookkeeping as pure operations — extend, drop the last pair (R2, with
its trigger-action sample R5b), close with a summary (R3), finish (R4/R5) — on plain token lists, no engine, env or
tokenizer."""

from __future__ import annotations

from supo.rollout.segments import OpenSegment, close_with_summary, drop_last_pair, ended_copy, finish
from supo.types import Rollout


def _open() -> tuple[OpenSegment, Rollout]:
    seg = OpenSegment([1, 2, 3])
    seg.extend([10, 11], 1, [-0.1, -0.2])  # an action
    seg.extend([20], 0)  # its observation
    return seg, Rollout("t", "g", 0)


def test_extend_masks_sampled_and_inserted_tokens():
    seg, _ = _open()
    assert (seg.resp, seg.mask, seg.lps) == ([10, 11, 20], [1, 1, 0], [-0.1, -0.2, 0.0])
    assert seg.context_len == 6 and seg.peak == 0
    seg.mark_peak()
    assert seg.peak == 6


def test_drop_last_pair_keeps_the_action_as_a_trigger_sample():
    seg, r = _open()
    start = len(seg.resp)
    seg.extend([12, 13], 1, [-0.3, -0.4])
    seg.extend([21, 22], 0)
    seg.mark_peak()
    drop_last_pair(seg, r, start, 2, train_trigger_action=True)
    (trig,) = r.segments
    assert trig.kind == "trigger_action" and trig.index == 0
    assert trig.prompt_ids == [1, 2, 3, 10, 11, 20]  # the context the action was sampled from
    assert (trig.response_ids, trig.response_mask, trig.logprobs) == ([12, 13], [1, 1], [-0.3, -0.4])
    assert seg.resp == [10, 11, 20] and seg.peak == 10  # the pair left the context; the peak stays
    drop_last_pair(seg, r, 0, 2, train_trigger_action=False)
    assert seg.resp == [] and len(r.segments) == 1


def test_a_summary_closes_the_segment_and_the_next_starts_from_the_given_prompt():
    seg, r = _open()
    seg.extend([30], 0)  # the summary instruction
    close_with_summary(seg, r, [40, 41], [-0.5, -0.6], next_prompt=[1, 2, 99])
    (first,) = r.context_segments
    assert first.response_ids == [10, 11, 20, 30, 40, 41] and first.response_mask == [1, 1, 0, 0, 1, 1]
    assert not first.is_last and r.context_lengths == [9]
    assert (seg.prompt, seg.resp, seg.index, seg.peak) == ([1, 2, 99], [], 1, 0)
    seg.extend([50], 1, [-0.7])
    finish(seg, r, reward=1.0, overlong=None)
    assert r.finished and r.reward == 1.0 and not r.overlong
    second = r.context_segments[1]
    assert second.prompt_ids == [1, 2, 99] and second.is_last and second.index == 1
    assert r.context_lengths == [9, 4]


def test_a_rollout_cut_right_after_a_reset_has_no_empty_segment():
    """When a rollout ends (R4) before its new segment holds a token — e.g. the engine limit right after a reset —
    no empty segment is written: the segment before it (ending with the summary) is the last, and every context
    length belongs to a segment."""
    seg, r = _open()
    close_with_summary(seg, r, [40], [-0.5], next_prompt=[1, 2, 99])
    assert [s.is_last for s in r.context_segments] == [False] and seg.resp == []
    finish(seg, r, reward=0.0, overlong="engine_limit")
    assert r.overlong_reason == "engine_limit" and r.overlong and not r.finished
    assert len(r.context_segments) == 1 and r.context_segments[0].is_last
    assert all(s.response_ids for s in r.segments) and len(r.context_lengths) == len(r.context_segments)


def test_an_ended_copy_leaves_the_open_rollout_as_it_was():
    seg, r = _open()
    seg.mark_peak()
    before = (list(seg.resp), seg.index, seg.peak)
    copy = ended_copy(seg, r)
    assert copy.overlong_reason == "max_summaries" and copy.reward == 0.0 and copy.context_segments[0].is_last
    assert (seg.resp, seg.index, seg.peak) == before and r.segments == [] and not r.overlong
