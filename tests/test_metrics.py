"""The metric vocabulary computed from rollouts (hand-checked numbers)."""

import pytest

from supo.metrics import rollout_metrics
from supo.types import Rollout


def _r(task, reward, *, finished=True, overlong=False, summaries=0, misses=0, calls=4, ctx=(100,), gen=10, proc=50):
    return Rollout(task_id=task, group_id=f"{task}@0", index=0, reward=reward, finished=finished, overlong=overlong,
                   num_summaries=summaries, summary_format_misses=misses, tool_calls=calls,
                   context_lengths=list(ctx), tokens_generated=gen, tokens_processed=proc)


def test_rollout_metrics_hand_computed():
    rs = [
        _r("a", 1.0, summaries=2, misses=1, calls=10, ctx=(200, 210, 150)),
        _r("a", 0.0, finished=False, overlong=True, summaries=3, calls=12, ctx=(205, 211, 209, 212)),
        _r("b", 0.0, calls=6, ctx=(120,)),
        _r("b", 0.0, calls=2, ctx=(80,)),
    ]
    for i, r in enumerate(rs):
        r.index = i
    m = rollout_metrics(rs, working_context=224, max_summaries=3)
    assert m["success_rate"] == 0.25 and m["mean_reward"] == 0.25
    assert m["mean_tool_calls"] == 7.5 and m["mean_summaries"] == 1.25
    assert m["summary_format_miss_rate"] == pytest.approx(1 / 5)
    assert m["max_working_context_tokens"] == 212
    assert m["mean_working_context_tokens"] == pytest.approx(sum([200, 210, 150, 205, 211, 209, 212, 120, 80]) / 9)
    assert m["effective_context_tokens"] == 224 * 4
    assert m["overlong_rate"] == 0.25
    assert m["degenerate_group_frac"] == 0.5  # group b: all rewards equal
    assert m["tokens_generated"] == 40 and m["tokens_processed"] == 200


def test_a_reward_without_an_answer_is_not_a_success():
    m = rollout_metrics([_r("a", 1.0, finished=False)], working_context=10, max_summaries=0)
    assert m["success_rate"] == 0.0 and m["summary_format_miss_rate"] == 0.0


def test_no_rollouts_is_an_error():
    with pytest.raises(ValueError, match="no rollouts"):
        rollout_metrics([], working_context=10, max_summaries=0)


def test_overlong_rollouts_split_into_error_loops_and_budget_cuts():
    rs = [_r("a", 1.0, calls=10), _r("a", 0.0, finished=False, overlong=True, calls=12),
          _r("b", 0.0, finished=False, overlong=True, calls=8), _r("b", 0.0, calls=10)]
    rs[1].error_observations = 5  # an error loop
    rs[3].error_observations = 2  # errors, but it finished: not a loop
    m = rollout_metrics(rs, working_context=224, max_summaries=3)
    assert m["overlong_rate"] == 0.5
    assert m["error_loop_rate"] == 0.25 and m["budget_cut_rate"] == 0.25
    assert m["error_observation_rate"] == pytest.approx(7 / 40)


def test_summary_accuracy_failures_and_segments_over_w():
    rs = [
        _r("a", 1.0, summaries=2),
        _r("a", 0.0, summaries=2),
        _r("b", 0.0, finished=False, overlong=True),
        _r("b", 0.0, finished=False, overlong=True),
    ]
    rs[0].summaries_judged, rs[0].summaries_correct, rs[0].generation_peaks = 2, 2, [120, 130, 90]
    rs[1].first_failure = "wrong_summary"
    rs[2].first_failure = "action_error"
    rs[1].summaries_judged, rs[1].summaries_correct, rs[1].generation_peaks = 2, 1, [120, 129, 100]
    rs[2].error_observations, rs[2].overlong_reason, rs[2].generation_peaks = 2, "max_steps", [110]
    rs[3].overlong_reason, rs[3].generation_peaks = "max_summaries", [127]
    m = rollout_metrics(rs, working_context=128, max_summaries=3)
    assert m["summary_state_accuracy"] == 0.75
    assert (m["failure_wrong_summary_rate"], m["failure_action_error_rate"], m["failure_wrong_answer_rate"],
            m["failure_budget_cut_rate"]) == (0.25, 0.25, 0.0, 0.25)
    assert m["success_rate"] + sum(m[f"failure_{k}_rate"] for k in
                                   ("wrong_summary", "action_error", "wrong_answer", "budget_cut")) == 1.0
    assert m["over_w_segment_frac"] == 0.25 and m["max_generation_peak_tokens"] == 130  # 2 of 8 segments above 128
    assert m["max_steps_rate"] == 0.25
    assert "summary_state_accuracy" not in rollout_metrics(rs[2:], working_context=128, max_summaries=3)
