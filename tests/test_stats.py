"""The report's statistics (supo.report.stats): the paired two-way bootstrap's Monte-Carlo error and the borderline
verdict it implies (no verdict depends on the bootstrap RNG seed), the MDE, Holm's step-down, the variance
components of a paired difference matrix and the seeds a target MDE needs, and the ratio bootstrap.

The matrices are simulated like an evaluation: 4 or 8 seeds × 128 tasks of binary success, task difficulty shared by
both arms, a seed effect per arm (training randomness) and an effect of a few points — the regime of issue 21.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from supo.report.stats import (
    BORDERLINE,
    HELD,
    INCONCLUSIVE,
    NOT_HELD,
    VarianceComponents,
    bootstrap_effect,
    bootstrap_ratio,
    holm,
    mde,
    seeds_for_mde,
    verdict_greater,
    verdict_lower_bound,
    verdict_not_worse,
)


def _arms(seeds: int = 4, tasks: int = 128, effect: float = 0.03, seed_sd: float = 0.04, rng_seed: int = 1):
    rng = np.random.default_rng(rng_seed)
    p = rng.beta(1, 3, tasks)
    a = np.clip(p[None] + rng.normal(0, seed_sd, (seeds, 1)) + effect, 0, 1)
    b = np.clip(p[None] + rng.normal(0, seed_sd, (seeds, 1)), 0, 1)
    return rng.binomial(1, a).astype(float), rng.binomial(1, b).astype(float)


def _shifted(d: np.ndarray, at: float) -> np.ndarray:
    """``d`` shifted so that its bootstrap lower bound (seed 0) sits at ``at`` × its Monte-Carlo SE above 0 (a
    constant shift moves every resampled mean, and so every percentile, by exactly that constant)."""
    e = bootstrap_effect(d)
    return d - e.low + at * e.low_mc_se


def test_mde_is_2_8_standard_errors():
    assert mde(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert mde(0.02) == pytest.approx(0.0560, abs=1e-4)
    assert mde(0.01, alpha=0.1, power=0.9) == pytest.approx((1.644854 + 1.281552) * 0.01, abs=1e-6)
    e = bootstrap_effect(*_arms())
    assert e.se > 0 and e.mde == pytest.approx(mde(e.se))


@pytest.mark.parametrize("seeds", [4, 8])
def test_the_bounds_monte_carlo_error_is_small_and_measured(seeds):
    """Over 20 RNG seeds the bounds move by about their stated Monte-Carlo SE, which is ≤ 0.002 here."""
    a, b = _arms(seeds)
    effects = [bootstrap_effect(a, b, seed=s) for s in range(20)]
    for bound, se in (("low", "low_mc_se"), ("high", "high_mc_se")):
        spread = float(np.std([getattr(e, bound) for e in effects], ddof=1))
        stated = float(np.mean([getattr(e, se) for e in effects]))
        assert stated <= 0.002 and spread <= 0.002
        assert 0.3 * stated <= spread <= 3.0 * stated, (bound, spread, stated)


def test_borderline_fires_within_the_monte_carlo_error():
    d = np.subtract(*_arms())
    assert verdict_greater(bootstrap_effect(_shifted(d, 0.5))) == BORDERLINE
    assert verdict_greater(bootstrap_effect(_shifted(d, -1.0))) == BORDERLINE
    assert verdict_greater(bootstrap_effect(_shifted(d, 5.0))) == HELD
    assert verdict_greater(bootstrap_effect(_shifted(d, -5.0))) == INCONCLUSIVE
    lower = {at: verdict_lower_bound(bootstrap_effect(_shifted(d, at))) for at in (-5.0, 0.5, 5.0)}
    assert lower == {-5.0: NOT_HELD, 0.5: BORDERLINE, 5.0: HELD}  # C3's one-sided read: no "inconclusive"
    same = bootstrap_effect(d, d)  # a point interval at 0 has no Monte-Carlo error: not held, never borderline
    assert same.degenerate and same.low_mc_se == 0 and verdict_greater(same) == NOT_HELD


@pytest.mark.parametrize("at", [-3.0, -1.0, 0.0, 1.0, 3.0, 6.0])
def test_verdicts_do_not_depend_on_the_rng_seed(at):
    """The same matrices under 20 bootstrap RNG seeds: one verdict, or borderline — also with the deciding bound
    placed right at its threshold (at = 0) for seed 0."""
    d = _shifted(np.subtract(*_arms()), at)
    greater = {verdict_greater(bootstrap_effect(d, seed=s)) for s in range(20)}
    assert len(greater - {BORDERLINE}) <= 1, greater
    worse = {verdict_not_worse(bootstrap_effect(d - 0.05, seed=s), 0.05) for s in range(20)}
    assert len(worse - {BORDERLINE}) <= 1, worse


def test_holm_changes_a_verdict_when_it_should():
    """One comparison held at 95% whose one-sided p lies between 0.025/3 and 0.025, in a family of three with two
    null comparisons: it ranks first, is read at 0.025/3 and is no longer held. With strong comparisons ranked
    before it, it is read at 0.025 and stays held; a family of one is the unadjusted reading."""
    d = np.subtract(*_arms())
    e = bootstrap_effect(d)
    (q1, _), (q3, _) = e.bound(0.025), e.bound(0.025 / 3)
    target = d - (q1 + q3) / 2  # the 2.5% bound above 0, the 0.83% bound below it, each clear of the MC error
    marginal = bootstrap_effect(target)
    assert verdict_greater(marginal) == HELD and 0.025 / 3 < marginal.p_greater() < 0.025
    null = [bootstrap_effect(np.subtract(*_arms(rng_seed=s, effect=0.0))) for s in (2, 3)]
    steps = holm([marginal, *null])
    assert steps[0].rank == 1 and steps[0].level == pytest.approx(0.025 / 3)
    assert steps[0].verdict == INCONCLUSIVE and steps[0].low < 0 < steps[0].high
    strong = [bootstrap_effect(d + 0.2), bootstrap_effect(d + 0.3)]
    steps = holm([marginal, *strong])
    assert [s.rank for s in steps] == [3, 1, 2] or [s.rank for s in steps] == [3, 2, 1]
    assert [s.verdict for s in steps] == [HELD, HELD, HELD] and steps[0].level == pytest.approx(0.025)
    (alone,) = holm([marginal])
    assert alone.verdict == verdict_greater(marginal) and alone.low == pytest.approx(marginal.low)


def test_holm_stops_at_the_first_failure():
    """Step-down: a comparison after a failed one cannot be held, however small its own widened bound."""
    d = np.subtract(*_arms())
    e = bootstrap_effect(d)
    (q1, _), (q2, _) = e.bound(0.025 / 2), e.bound(0.025 / 3)
    first = bootstrap_effect(d - (q1 + q2) / 2)  # held at 0.025/2, not at 0.025/3: rank 1 fails
    second = bootstrap_effect(d - (q1 + q2) / 2 + 1e-4)  # nearly the same, a larger p-value: rank 2
    null = bootstrap_effect(np.subtract(*_arms(rng_seed=2, effect=0.0)))
    steps = holm([first, second, null])
    assert steps[0].rank in (1, 2) and steps[1].rank in (1, 2)
    assert all(s.verdict != HELD for s in steps)


def test_variance_components_recover_known_components():
    rng = np.random.default_rng(7)
    n_s, n_t, sd_seed, sd_task, sd_res = 200, 300, 0.05, 0.2, 0.3
    d = (0.02 + rng.normal(0, sd_seed, (n_s, 1)) + rng.normal(0, sd_task, (1, n_t))
         + rng.normal(0, sd_res, (n_s, n_t)))
    vc = VarianceComponents.of(d)
    assert math.sqrt(vc.seed) == pytest.approx(sd_seed, rel=0.15)
    assert math.sqrt(vc.task) == pytest.approx(sd_task, rel=0.1)
    assert math.sqrt(vc.residual) == pytest.approx(sd_res, rel=0.05)
    # the SE formula predicts the spread of the mean difference over replicate 4 × 128 designs
    truth = VarianceComponents(sd_seed ** 2, sd_task ** 2, sd_res ** 2, 4, 128)
    means = [(rng.normal(0, sd_seed, (4, 1)) + rng.normal(0, sd_task, (1, 128))
              + rng.normal(0, sd_res, (4, 128))).mean() for _ in range(2000)]
    assert float(np.std(means)) == pytest.approx(truth.se(), rel=0.1)
    assert VarianceComponents.of(d[:1]) is None


def test_seeds_for_mde():
    vc = VarianceComponents(seed=0.04 ** 2, task=0.1 ** 2, residual=0.3 ** 2, n_seeds=4, n_tasks=128)
    need = seeds_for_mde(vc, 128, 0.05)
    assert need is not None and mde(vc.se(need, 128)) <= 0.05 < mde(vc.se(need - 1, 128))
    assert seeds_for_mde(vc, 4, 0.05) is None  # task variance / 4 tasks alone exceeds the budget
    assert seeds_for_mde(VarianceComponents(0.0, 0.0, 0.0, 4, 128), 128, 0.05) == 2


def test_ratio_bootstrap():
    rng = np.random.default_rng(3)
    den = rng.integers(0, 4, (4, 64)).astype(float)
    num = rng.binomial(den.astype(int), 0.7).astype(float)
    e = bootstrap_ratio(num, den)
    assert e.effect == pytest.approx(num.sum() / den.sum()) and e.low < e.effect < e.high
    # with a denominator of 1 everywhere the ratio is the mean: the same resamples give the same interval
    plain, ratio = bootstrap_effect(num), bootstrap_ratio(num, np.ones_like(num))
    assert (ratio.low, ratio.high) == pytest.approx((plain.low, plain.high))
    better = rng.binomial(den.astype(int), 0.95).astype(float)
    diff = bootstrap_ratio(better, den, num, den)
    assert diff.effect == pytest.approx(better.sum() / den.sum() - num.sum() / den.sum())
    assert verdict_greater(diff) == HELD
    same = bootstrap_ratio(num, den, num, den)
    assert same.degenerate and verdict_greater(same) == NOT_HELD
    assert bootstrap_ratio(num, np.zeros_like(den)) is None
    sparse = np.zeros_like(den)
    sparse[0, 0] = 2.0  # most resamples miss the one judged cell: those are dropped, not read as 0/0
    one = bootstrap_ratio(sparse / 2, sparse)
    assert one.effect == 0.5 and one.low == one.high == 0.5
