"""Invariants of the advantage estimators and their broadcast onto segments (R7, R8, R9, R5b).

Every expected number is computed by hand (plain Python in ``algo_helpers``) or written out, never by calling the code
under test a second way.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algo_helpers import EPS, grpo_advantages, make_rollout, weighted_advantages
from supo.algo.advantage import ADVANTAGE_ESTIMATORS, broadcast, check_groups, compute_advantages
from supo.algo.overlong import OVERLONG_TREATMENTS

SETTINGS = settings(max_examples=40, deadline=None)

rewards_st = st.lists(st.sampled_from([0.0, 1.0, 0.5, -1.0, 2.0]), min_size=2, max_size=8)


def _group(gid: str, rewards, seg_counts=None, **kw):
    seg_counts = seg_counts or [1] * len(rewards)
    return [make_rollout(gid, j, r, [3 + k for k in range(n)], **kw) for j, (r, n) in
            enumerate(zip(rewards, seg_counts))]


# ---------------------------------------------------------------------------------------------------------------------
# 1. group = task


def test_advantages_are_normalised_within_each_group():
    a = _group("task-a/step-0", [1.0, 0.0, 0.0, 1.0, 1.0])
    b = _group("task-b/step-0", [0.0, 0.0, 2.0])
    res = compute_advantages(a + b)
    assert res.num_groups == 2
    np.testing.assert_allclose(res.advantages[:5], grpo_advantages([1.0, 0.0, 0.0, 1.0, 1.0]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.advantages[5:], grpo_advantages([0.0, 0.0, 2.0]), rtol=0, atol=1e-12)
    # normalised per group: each group's advantages have mean 0
    assert abs(res.advantages[:5].sum()) < 1e-9 and abs(res.advantages[5:].sum()) < 1e-9


@SETTINGS
@given(rewards_a=rewards_st, rewards_b=rewards_st, interleave=st.booleans(),
       estimator=st.sampled_from(sorted(ADVANTAGE_ESTIMATORS)))
def test_other_groups_do_not_affect_a_groups_advantages(rewards_a, rewards_b, interleave, estimator):
    a = _group("A", rewards_a, [1 + (j % 3) for j in range(len(rewards_a))])
    b = _group("B", rewards_b, [1 + (j % 2) for j in range(len(rewards_b))])
    alone = compute_advantages(a, estimator).advantages
    if interleave:
        mixed = [x for pair in zip(a, b) for x in pair] + a[len(b):] + b[len(a):]
    else:
        mixed = b + a
    adv = compute_advantages(mixed, estimator).advantages
    got = {id(r): adv[i] for i, r in enumerate(mixed)}
    assert [got[id(r)] for r in a] == list(alone)


def test_check_groups_rejects_a_group_mixing_task_ids():
    rs = [make_rollout("g0", 0, 1.0, task_id="task-1"), make_rollout("g0", 1, 0.0, task_id="task-2")]
    with pytest.raises(ValueError, match="mixes tasks"):
        check_groups(rs)
    with pytest.raises(ValueError):
        compute_advantages(rs)


def test_check_groups_rejects_duplicate_rollout_index():
    rs = [make_rollout("g0", 0, 1.0), make_rollout("g0", 1, 0.0), make_rollout("g0", 1, 1.0)]
    with pytest.raises(ValueError, match="index 1"):
        check_groups(rs)
    with pytest.raises(ValueError):
        compute_advantages(rs)


def test_check_groups_accepts_same_index_in_different_groups():
    rs = [make_rollout("g0", 0, 1.0), make_rollout("g0", 1, 0.0), make_rollout("g1", 0, 1.0),
          make_rollout("g1", 1, 0.0)]
    check_groups(rs)  # no exception


def test_unknown_estimator_raises_naming_choices():
    with pytest.raises(ValueError, match="rollout") as e:
        compute_advantages([make_rollout("g", 0, 1.0)], "bogus")
    assert "segment" in str(e.value) and "bogus" in str(e.value)


# ---------------------------------------------------------------------------------------------------------------------
# 2. one outcome per rollout (Eq. 3)


@SETTINGS
@given(rewards=rewards_st, data=st.data())
def test_rollout_estimator_ignores_segment_count(rewards, data):
    seg_counts = data.draw(st.lists(st.integers(1, 6), min_size=len(rewards), max_size=len(rewards)))
    triggers = data.draw(st.lists(st.integers(0, 2), min_size=len(rewards), max_size=len(rewards)))
    one = _group("g", rewards)
    many = [make_rollout("g", j, r, [2] * n, trigger_actions=t)
            for j, (r, n, t) in enumerate(zip(rewards, seg_counts, triggers))]
    a1 = compute_advantages(one, "rollout").advantages
    a2 = compute_advantages(many, "rollout").advantages
    assert list(a1) == list(a2)
    np.testing.assert_allclose(a2, grpo_advantages(rewards), rtol=0, atol=1e-12)


def test_rollout_estimator_hand_computed_values():
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # mean 3/8, population std sqrt(15)/8
    rs = [make_rollout("g", j, r, [3] * (1 + j)) for j, r in enumerate(rewards)]
    adv = compute_advantages(rs).advantages
    std = math.sqrt(15) / 8
    expected = [(0.625 if r == 1.0 else -0.375) / (std + 1e-6) for r in rewards]
    assert expected[0] == pytest.approx(1.2909918, abs=1e-7)
    np.testing.assert_allclose(adv, expected, rtol=0, atol=1e-12)


def test_rollout_estimator_uses_population_std_and_eps():
    rs = [make_rollout("g", 0, 1.0), make_rollout("g", 1, 0.0)]
    # population std = 0.5 (sample std would be 0.7071); eps enters the denominator
    adv = compute_advantages(rs, eps=0.25).advantages
    np.testing.assert_allclose(adv, [0.5 / 0.75, -0.5 / 0.75], rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------------------
# 3. Eq. 3 vs Eq. 4


def test_segment_estimator_weights_by_context_segments_hand_computed():
    # rollout 0: reward 1 with 3 context segments; rollout 1: reward 0 with 1 context segment + 3 trigger samples
    rs = [make_rollout("g", 0, 1.0, [3, 3, 3]), make_rollout("g", 1, 0.0, [4], trigger_actions=3)]
    eq3 = compute_advantages(rs, "rollout").advantages
    eq4 = compute_advantages(rs, "segment").advantages
    # Eq. 3: over rollouts {1, 0}: mean 0.5, std 0.5
    np.testing.assert_allclose(eq3, [0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS)], rtol=0, atol=1e-12)
    # Eq. 4: over segments {1, 1, 1, 0}: mean 0.75, std sqrt(3)/4 — trigger samples do not count
    s = math.sqrt(3) / 4
    np.testing.assert_allclose(eq4, [0.25 / (s + EPS), -0.75 / (s + EPS)], rtol=0, atol=1e-12)
    assert eq4[0] == pytest.approx(1 / math.sqrt(3), rel=1e-5)
    assert eq4[1] == pytest.approx(-math.sqrt(3), rel=1e-5)
    assert not np.allclose(eq3, eq4)


@SETTINGS
@given(rewards=rewards_st, data=st.data())
def test_segment_estimator_matches_hand_formula(rewards, data):
    n = len(rewards)
    seg_counts = data.draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    triggers = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    rs = [make_rollout("g", j, r, [2] * c, trigger_actions=t)
          for j, (r, c, t) in enumerate(zip(rewards, seg_counts, triggers))]
    adv = compute_advantages(rs, "segment").advantages
    np.testing.assert_allclose(adv, weighted_advantages(rewards, seg_counts), rtol=0, atol=1e-12)


@SETTINGS
@given(rewards=rewards_st, data=st.data())
def test_segment_and_rollout_estimators_agree_with_one_segment_per_rollout(rewards, data):
    triggers = data.draw(st.lists(st.integers(0, 3), min_size=len(rewards), max_size=len(rewards)))
    rs = [make_rollout("g", j, r, [3], trigger_actions=t) for j, (r, t) in enumerate(zip(rewards, triggers))]
    eq3 = compute_advantages(rs, "rollout").advantages
    eq4 = compute_advantages(rs, "segment").advantages
    assert list(eq3) == list(eq4)


# ---------------------------------------------------------------------------------------------------------------------
# 4. broadcast onto each segment's own mask


def test_broadcast_uses_each_segments_own_mask():
    masks = [[1, 0, 0, 1, 1, 0], [0, 1], [1, 1, 1, 0, 0, 0, 0, 1, 0]]  # different lengths and patterns
    r0 = make_rollout("g", 0, 1.0, [6, 2, 9], masks=masks, trigger_actions=2)
    r1 = make_rollout("g", 1, 0.0, [5], masks=[[0, 0, 1, 1, 0]])
    rs = [r0, r1]
    res = compute_advantages(rs)
    samples = broadcast(rs, res)
    segs = [(0, s) for s in r0.segments] + [(1, s) for s in r1.segments]
    assert len(samples) == len(segs) == 6
    assert sum(s.kind == "trigger_action" for _, s in segs) == 2
    for sample, (j, seg) in zip(samples, segs):
        a = float(res.advantages[j])
        assert a != 0.0
        assert sample.rollout == j
        assert sample.prompt_ids == seg.prompt_ids and sample.response_ids == seg.response_ids
        assert sample.old_logprobs == seg.logprobs
        assert sample.loss_mask == seg.response_mask
        assert sample.advantages == [a * m for m in seg.response_mask]
        assert len(sample.advantages) == len(seg.response_ids)
    # trigger-action samples (all-ones masks) carry the rollout's advantage on every token
    for sample, (_, seg) in zip(samples, segs):
        if seg.kind == "trigger_action":
            assert sample.advantages == [float(res.advantages[0])] * len(seg.response_ids)


@SETTINGS
@given(data=st.data())
def test_broadcast_never_borrows_another_segments_mask(data):
    nseg = data.draw(st.integers(1, 5))
    lengths = data.draw(st.lists(st.integers(1, 8), min_size=nseg, max_size=nseg))
    masks = [data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)) for n in lengths]
    ntrig = data.draw(st.integers(0, 2))
    rs = [make_rollout("g", 0, 1.0, lengths, masks=masks, trigger_actions=ntrig),
          make_rollout("g", 1, 0.0, [3], masks=[[1, 1, 1]])]
    res = compute_advantages(rs)
    samples = broadcast(rs, res)
    a = float(res.advantages[0])
    for sample, seg in zip(samples, rs[0].segments):
        assert sample.loss_mask == seg.response_mask
        assert sample.advantages == [a * m for m in seg.response_mask]


# ---------------------------------------------------------------------------------------------------------------------
# 5. overlong rollouts (R9)


def test_overlong_mask_zeroes_mask_and_advantage_of_every_segment():
    rs = [make_rollout("g", 0, 1.0, [4, 4]), make_rollout("g", 1, 0.0, [4, 5, 3], overlong=True, trigger_actions=1),
          make_rollout("g", 2, 0.0, [4])]
    for treatment in ("loss-mask", "loss-mask-exclude-stats"):
        res = compute_advantages(rs, overlong=treatment)
        assert list(res.trainable) == [True, False, True]
        samples = broadcast(rs, res)
        masked = [s for s in samples if s.rollout == 1]
        assert len(masked) == 4
        for s in masked:
            assert s.loss_mask == [0] * len(s.response_ids)
            assert s.advantages == [0.0] * len(s.response_ids)
        # the other rollouts keep their own masks
        for s, seg in zip([s for s in samples if s.rollout == 0], rs[0].segments):
            assert s.loss_mask == seg.response_mask


def test_overlong_in_group_stats_true_counts_overlong_rewards():
    rs = [make_rollout("g", 0, 1.0), make_rollout("g", 1, 0.0), make_rollout("g", 2, 0.0, overlong=True),
          make_rollout("g", 3, 1.0)]
    res = compute_advantages(rs, overlong="loss-mask")
    # statistics over {1, 0, 0, 1}: mean 0.5, std 0.5
    exp = 0.5 / (0.5 + EPS)
    np.testing.assert_allclose(res.advantages[[0, 1, 3]], [exp, -exp, exp], rtol=0, atol=1e-12)


def test_overlong_in_group_stats_false_excludes_overlong_rollouts():
    rs = [make_rollout("g", 0, 1.0), make_rollout("g", 1, 0.0), make_rollout("g", 2, 1.0),
          make_rollout("g", 3, 0.0, overlong=True)]
    res = compute_advantages(rs, overlong="loss-mask-exclude-stats")
    # statistics over {1, 0, 1}: mean 2/3, std sqrt(2)/3
    std = math.sqrt(2) / 3
    np.testing.assert_allclose(res.advantages[[0, 1, 2]], [(1 / 3) / (std + EPS), (-2 / 3) / (std + EPS),
                                                           (1 / 3) / (std + EPS)], rtol=0, atol=1e-12)
    # and they differ from the "count them" numbers
    res_in = compute_advantages(rs, overlong="loss-mask")
    assert not np.allclose(res.advantages[:3], res_in.advantages[:3])


def test_overlong_rollouts_are_trained_when_masking_is_off():
    rs = [make_rollout("g", 0, 1.0, [4]), make_rollout("g", 1, 0.0, [4, 6], overlong=True, trigger_actions=1),
          make_rollout("g", 2, 0.0, [4])]
    res = compute_advantages(rs, overlong="none")
    assert list(res.trainable) == [True, True, True]
    a = float(res.advantages[1])
    assert a == pytest.approx(grpo_advantages([1.0, 0.0, 0.0])[1], abs=1e-12)
    samples = [s for s in broadcast(rs, res) if s.rollout == 1]
    assert len(samples) == 3
    for s, seg in zip(samples, rs[1].segments):
        assert s.loss_mask == seg.response_mask
        assert s.advantages == [a * m for m in seg.response_mask]
    assert any(any(s.loss_mask) for s in samples)


def test_group_with_every_rollout_excluded_gets_zero_advantage():
    rs = [make_rollout("g", j, r, overlong=True) for j, r in enumerate([0.0, 1.0, 0.0])]
    rs += [make_rollout("h", 0, 1.0), make_rollout("h", 1, 0.0)]
    for est in sorted(ADVANTAGE_ESTIMATORS):
        res = compute_advantages(rs, est, overlong="loss-mask-exclude-stats")
        assert np.all(np.isfinite(res.advantages))
        assert list(res.advantages[:3]) == [0.0, 0.0, 0.0]
        np.testing.assert_allclose(res.advantages[3:], grpo_advantages([1.0, 0.0]), rtol=0, atol=1e-12)


def test_degenerate_groups_counts_groups_with_all_equal_rewards():
    rs = _group("all-one", [1.0, 1.0, 1.0]) + _group("mixed", [0.0, 1.0, 0.0]) + _group("all-zero", [0.0, 0.0])
    res = compute_advantages(rs)
    assert res.num_groups == 3
    assert res.degenerate_groups == 2
    # a degenerate group has zero advantage (R − mean = 0), and no blow-up
    assert list(res.advantages[:3]) == [0.0] * 3 and list(res.advantages[6:]) == [0.0] * 2


def test_degenerate_groups_count_only_rewards_in_the_statistics():
    rs = [make_rollout("g", 0, 1.0), make_rollout("g", 1, 1.0), make_rollout("g", 2, 0.0, overlong=True)]
    assert compute_advantages(rs, overlong="loss-mask").degenerate_groups == 0
    assert compute_advantages(rs, overlong="loss-mask-exclude-stats").degenerate_groups == 1


def _error_loop(rollout, errors=3):
    rollout.error_observations = errors
    return rollout


def test_penalty_trains_overlong_rollouts_with_the_penalty_reward():
    rs = [make_rollout("g", 0, 1.0), make_rollout("g", 1, 0.0), make_rollout("g", 2, 0.0, [4, 4], overlong=True),
          _error_loop(make_rollout("g", 3, 0.0, overlong=True))]
    res = compute_advantages(rs, overlong="penalty", overlong_penalty=-0.5)
    assert list(res.trainable) == [True] * 4
    np.testing.assert_allclose(res.advantages, grpo_advantages([1.0, 0.0, -0.5, -0.5]), rtol=0, atol=1e-12)
    assert res.advantages[2] < res.advantages[1]  # never finishing is worse than a wrong answer


def test_budget_only_masks_budget_cuts_and_trains_error_loops():
    rs = [make_rollout("g", 0, 1.0), make_rollout("g", 1, 0.0), make_rollout("g", 2, 0.0, overlong=True),
          _error_loop(make_rollout("g", 3, 0.0, [4, 4], overlong=True))]
    res = compute_advantages(rs, overlong="budget-only")
    assert list(res.trainable) == [True, True, False, True]
    np.testing.assert_allclose(res.advantages, grpo_advantages([1.0, 0.0, 0.0, 0.0]), rtol=0, atol=1e-12)
    samples = broadcast(rs, res)
    assert all(not any(s.loss_mask) for s in samples if s.rollout == 2)
    loop = [s for s in samples if s.rollout == 3]
    assert any(any(s.loss_mask) for s in loop) and all(a <= 0 for s in loop for a in s.advantages)


@pytest.mark.parametrize("treatment", sorted(OVERLONG_TREATMENTS))
def test_every_treatment_leaves_finished_rollouts_alone(treatment):
    """Whatever the treatment, a group without overlong rollouts gets plain GRPO advantages, all trained."""
    rs = [make_rollout("g", j, r) for j, r in enumerate([1.0, 0.0, 0.0, 1.0, 0.0])]
    res = compute_advantages(rs, overlong=treatment)
    assert list(res.trainable) == [True] * 5
    np.testing.assert_allclose(res.advantages, grpo_advantages([1.0, 0.0, 0.0, 1.0, 0.0]), rtol=0, atol=1e-12)


def test_unknown_treatment_is_named():
    with pytest.raises(ValueError, match="unknown overlong treatment 'mask-all'"):
        compute_advantages([make_rollout("g", 0, 1.0), make_rollout("g", 1, 0.0)], overlong="mask-all")


def test_eq4_counts_a_masked_rollout_once_in_the_statistics():
    """Eq. 4 under masking: a trained rollout counts once per context segment, a masked (overlong) one once — as in
    Eq. 3 — so that masking adds no per-segment weight of zeros to the baseline (an overlong rollout has used every
    summary: counted per segment it would be S + 1 zeros, a hidden bonus for finishing)."""
    rs = [make_rollout("g", 0, 1.0, [4, 4]), make_rollout("g", 1, 0.0, [4]),
          make_rollout("g", 2, 0.0, [4, 4, 4, 4], overlong=True)]
    masked = compute_advantages(rs, "segment", overlong="loss-mask")
    # statistics over {1, 1, 0, 0}: the masked 4-segment rollout counts once
    np.testing.assert_allclose(masked.advantages[:2], weighted_advantages([1.0, 0.0, 0.0], [2, 1, 1])[:2], rtol=0,
                               atol=1e-12)
    trained = compute_advantages(rs, "segment", overlong="none")
    # trained, it counts once per segment: {1, 1, 0, 0, 0, 0, 0}
    np.testing.assert_allclose(trained.advantages, weighted_advantages([1.0, 0.0, 0.0], [2, 1, 4]), rtol=0,
                               atol=1e-12)
