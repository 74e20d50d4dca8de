"""Statistics of the report: seed means, and effects with a 95 % confidence interval from a paired bootstrap.

An arm evaluated at one (W, S_eval) gives a success matrix ``[seed, task]`` (the mean over a task's samples). Two
cells compared on the same test tasks and seeds are *paired*: the effect is the mean over seeds and tasks of their
difference, and its confidence interval comes from a two-way bootstrap that resamples seeds and tasks independently
(with replacement), so it carries both the training randomness (seeds) and the finite test split (tasks). A cell
compared with a constant (the same arm at another S_eval is also a cell) uses the same machinery; a ratio of sums
(summary accuracy = correct / judged summaries) is resampled the same way (:func:`bootstrap_ratio`).

A verdict reads the interval, never the point estimate: a claim "A > B" is **held** when the whole interval lies
above 0, **not held** when it lies at or below 0, **inconclusive** when it straddles 0. A non-inferiority claim
"A ≥ B − δ" is held when the interval lies above −δ, not held when it lies below −δ. The interval's bounds are
percentiles of a finite number of resamples, so they carry a Monte-Carlo error of their own (:func:`quantile_mc_se`):
a bound within :data:`BORDERLINE_MC_SES` of those errors of its threshold is **borderline** (another bootstrap RNG
seed could move it across), so no verdict depends on the RNG seed (docs/design.md §7, "Deciding, not just reporting").

Power (issue 21, item 5): each effect carries its bootstrap standard error; :func:`mde` is the minimum detectable
effect at 80 % power for the design that ran, and :class:`VarianceComponents` splits a paired difference matrix into
seed, task and residual variance, from which the SE of any (seeds, tasks) design and the seeds a target MDE needs
(:func:`seeds_for_mde`) follow. A family of comparisons is adjusted by Holm's step-down (:func:`holm`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

HELD, NOT_HELD, INCONCLUSIVE, NOT_EVALUATED = "held", "not held", "inconclusive", "not evaluated"
BORDERLINE = "borderline"
BOOTSTRAP_SAMPLES = 20000
"""Resamples per interval: for 4–8 seeds × 128 tasks of success rates the bounds' Monte-Carlo SE is ≈ 0.0005–0.001
(measured: ``tests/test_stats.py``); with the resamples cached one interval takes ≈ 10 ms."""
CONFIDENCE = 0.95
POWER = 0.8
BORDERLINE_MC_SES = 2.0
"""A bound within this many of its Monte-Carlo SEs of its threshold makes the verdict borderline."""
_CHUNK = 4096  # resamples drawn at a time (bounds the memory of a large task count)


def _clean(x: float) -> float:
    return 0.0 if abs(x) < 1e-15 else float(x)  # no "-0.000" in the report


@dataclass(frozen=True)
class Stat:
    """Mean ± sample std (ddof = 1; 0 for one value) of a metric over seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        vals = [float(v) for v in values]
        if not vals:
            raise ValueError("no values")
        mean = float(np.mean(vals))
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        return cls(mean, std, len(vals))

    def fmt(self, decimals: int = 3, n: bool = False) -> str:
        text = f"{self.mean:.{decimals}f} ± {self.std:.{decimals}f}"
        return f"{text} (n={self.n})" if n else text


def mde(se: float, alpha: float = 1.0 - CONFIDENCE, power: float = POWER) -> float:
    """The minimum detectable effect of a two-sided test at level ``alpha`` with the given ``power``:
    (z_{1−α/2} + z_{power}) × SE ≈ 2.80 × SE for α = 0.05, power 0.8. A true effect of this size has an interval
    whose lower bound clears 0 with probability ``power`` (normal approximation; the bound sits at effect − z_{1−α/2}
    SE, which exceeds 0 with probability Φ(effect / SE − z_{1−α/2}))."""
    z = NormalDist()
    return (z.inv_cdf(1.0 - alpha / 2.0) + z.inv_cdf(power)) * se


def quantile_mc_se(draws: np.ndarray, q: float) -> float:
    """The Monte-Carlo standard error of the ``q`` percentile of ``draws``, by the order-statistic argument: the
    number of draws below the true quantile is Binomial(B, q), so the estimate's rank is uncertain by
    ±√(B q (1 − q)) ranks; the SE is half the spread of the draws over that band of ranks (distribution-free: it
    follows the local density, also where a few seeds make the bootstrap distribution lumpy)."""
    b = len(draws)
    if b < 2:
        return float("nan")
    delta = math.sqrt(q * (1.0 - q) / b)
    lo, hi = np.quantile(draws, [max(q - delta, 0.0), min(q + delta, 1.0)])
    return float(hi - lo) / 2.0


@dataclass(frozen=True)
class Effect:
    """A paired difference (or a mean, or a ratio) with its bootstrap confidence interval, the bootstrap SE and each
    bound's Monte-Carlo SE. ``draws`` (the resampled values, not compared) lets an interval be read at another level
    (:meth:`bound`, :func:`holm`)."""

    effect: float
    low: float
    high: float
    seeds: int
    tasks: int
    se: float = float("nan")
    low_mc_se: float = 0.0
    high_mc_se: float = 0.0
    confidence: float = CONFIDENCE
    draws: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def degenerate(self) -> bool:
        """Both sides were identical everywhere (e.g. both 0): the interval is a point at 0."""
        return self.low == self.high == self.effect == 0.0

    @property
    def mde(self) -> float:
        """The minimum detectable effect (80 % power, α = 0.05) of this design: :func:`mde` of :attr:`se`."""
        return mde(self.se, 1.0 - self.confidence)

    def bound(self, q: float) -> tuple[float, float]:
        """The ``q`` percentile of the resamples and its Monte-Carlo SE."""
        if self.draws is None:
            raise ValueError("this effect kept no resamples")
        return _clean(float(np.quantile(self.draws, q))), quantile_mc_se(self.draws, q)

    def p_greater(self, threshold: float = 0.0) -> float:
        """The bootstrap one-sided p-value of "effect > threshold": the share of resamples at or below it."""
        if self.draws is None:
            raise ValueError("this effect kept no resamples")
        return float(np.mean(self.draws <= threshold + 1e-12))

    def fmt(self) -> str:
        return (f"{self.effect:+.3f}, 95% CI [{self.low:+.3f}, {self.high:+.3f}] "
                f"({self.seeds} seeds × {self.tasks} tasks; SE {self.se:.3f}, MDE {self.mde:.3f})")


@functools.lru_cache(maxsize=8)
def _counts(n: int, samples: int, seed: int, axis: int) -> np.ndarray:
    """``samples`` resamples of ``n`` items with replacement, as counts per item (``[samples, n]``, read-only), from
    the stream (``seed``, ``axis``): seeds (axis 0) and tasks (axis 1) are drawn independently. Cached: every
    comparison of one shape meets the same resamples, and drawing them is most of a bootstrap's cost."""
    rng = np.random.default_rng([seed, axis])
    out = np.empty((samples, n), dtype=np.uint16 if n < 2 ** 16 else np.uint32)
    for start in range(0, samples, _CHUNK):
        b = min(_CHUNK, samples - start)
        picks = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        out[start:start + b] = np.bincount(picks.ravel(), minlength=b * n).reshape(b, n)
    out.setflags(write=False)
    return out


def resampled_sums(matrices: Sequence[np.ndarray], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[np.ndarray]:
    """The sum of each ``[seeds, tasks]`` matrix over ``samples`` two-way resamples (seeds and tasks drawn
    independently with replacement), the same resamples for every matrix (so paired quantities stay paired). The sum
    of a resampled grid = (seed counts) · m · (task counts). Deterministic for a ``seed``."""
    n_s, n_t = matrices[0].shape
    cs_all, ct_all = _counts(n_s, samples, seed, 0), _counts(n_t, samples, seed, 1)
    out = [np.empty(samples) for _ in matrices]
    for start in range(0, samples, _CHUNK):
        stop = min(start + _CHUNK, samples)
        cs, ct = cs_all[start:stop].astype(np.float64), ct_all[start:stop].astype(np.float64)
        for m, o in zip(matrices, out, strict=True):
            # einsum's own loops, not BLAS: a threaded matmul of this shape crawls on a machine whose cores are busy
            o[start:stop] = np.einsum("bs,bs->b", np.einsum("bt,st->bs", ct, m), cs)
    return out


def effect_from_draws(point: float, draws: np.ndarray, seeds: int, tasks: int,
                      confidence: float = CONFIDENCE) -> Effect:
    """An :class:`Effect` from a point estimate and its resampled values (NaNs — resamples where the quantity is
    undefined — dropped): the percentile interval, the bootstrap SD as SE, each bound's Monte-Carlo SE."""
    draws = draws[np.isfinite(draws)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Effect(_clean(point), _clean(float(low)), _clean(float(high)), seeds, tasks,
                  se=float(np.std(draws, ddof=1)), low_mc_se=quantile_mc_se(draws, tail),
                  high_mc_se=quantile_mc_se(draws, 1.0 - tail), confidence=confidence, draws=draws)


def _matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"expected a non-empty [seeds, tasks] matrix, got shape {x.shape}")
    return x


def bootstrap_effect(a: np.ndarray, b: np.ndarray | None = None, *, samples: int = BOOTSTRAP_SAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> Effect:
    """Effect = mean(a − b) over a ``[seeds, tasks]`` matrix (``b`` None: mean(a)), and its percentile interval from
    resampling seeds and tasks independently with replacement. Deterministic for a ``seed``."""
    d = _matrix(a) if b is None else _matrix(a) - _matrix(b)
    n_s, n_t = d.shape
    (sums,) = resampled_sums([d], samples, seed)
    return effect_from_draws(float(d.mean()), sums / (n_s * n_t), n_s, n_t, confidence)


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, num_b: np.ndarray | None = None,
                    den_b: np.ndarray | None = None, *, samples: int = BOOTSTRAP_SAMPLES,
                    confidence: float = CONFIDENCE, seed: int = 0) -> Effect | None:
    """A ratio of sums, Σnum / Σden over ``[seeds, tasks]`` matrices (e.g. correct / judged summaries), with its
    interval under the same two-way resampling; with ``num_b``/``den_b`` the paired difference of two such ratios
    (the same resamples of seeds and tasks on both sides). Resamples whose denominator is 0 are dropped; None when a
    point estimate's denominator is 0 (nothing to divide)."""
    mats = [_matrix(num), _matrix(den)] + ([] if num_b is None else [_matrix(num_b), _matrix(den_b)])
    if len({m.shape for m in mats}) != 1:
        raise ValueError(f"matrices of different shapes: {[m.shape for m in mats]}")
    if any(m.sum() <= 0 for m in mats[1::2]):
        return None
    sums = resampled_sums(mats, samples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = [sums[i] / np.where(sums[i + 1] > 0, sums[i + 1], np.nan) for i in range(0, len(mats), 2)]
    points = [mats[i].sum() / mats[i + 1].sum() for i in range(0, len(mats), 2)]
    point = points[0] if len(points) == 1 else points[0] - points[1]
    draws = ratios[0] if len(ratios) == 1 else ratios[0] - ratios[1]
    return effect_from_draws(float(point), draws, *mats[0].shape, confidence)


# ---------------------------------------------------------------------------------------------------------------------
# verdicts


def _near(bound: float, mc_se: float, threshold: float) -> bool:
    return math.isfinite(mc_se) and abs(bound - threshold) < BORDERLINE_MC_SES * mc_se


def _decide(low: float, high: float, low_se: float, high_se: float, threshold: float, degenerate: bool,
            not_held_at_threshold: bool) -> str:
    """Held above ``threshold``, not held below it (or at it), inconclusive across it; borderline when a bound lies
    within :data:`BORDERLINE_MC_SES` Monte-Carlo SEs of the threshold (a degenerate point interval has no MC error)."""
    if not degenerate and (_near(low, low_se, threshold) or _near(high, high_se, threshold)):
        return BORDERLINE
    if low > threshold:
        return HELD
    if high < threshold or (not_held_at_threshold and high == threshold):
        return NOT_HELD
    return INCONCLUSIVE


def verdict_greater(e: Effect) -> str:
    """"A > B": held above 0, not held at or below 0, inconclusive across 0, borderline near 0."""
    return _decide(e.low, e.high, e.low_mc_se, e.high_mc_se, 0.0, e.degenerate, True)


def verdict_not_worse(e: Effect, margin: float) -> str:
    """"A ≥ B − margin" (non-inferiority): held above −margin, not held below it, inconclusive across it,
    borderline near it."""
    return _decide(e.low, e.high, e.low_mc_se, e.high_mc_se, -margin, e.degenerate, False)


def verdict_lower_bound(e: Effect, threshold: float = 0.0) -> str:
    """The lower bound alone decides: held above ``threshold``, borderline within its Monte-Carlo error of it,
    otherwise not held — for a difference that cannot fall below the threshold (C3 on prefix views), where the
    upper bound has nothing to decide."""
    if not e.degenerate and _near(e.low, e.low_mc_se, threshold):
        return BORDERLINE
    return HELD if e.low > threshold else NOT_HELD


def borderline_note(e: Effect, threshold: float = 0.0) -> str:
    """Which bound made a verdict borderline, with its Monte-Carlo SE (for the evidence)."""
    parts = [f"{name} bound {b:+.4f} is within {BORDERLINE_MC_SES:g} Monte-Carlo SEs ({se:.4f}) of {threshold:+g}"
             for name, b, se in (("lower", e.low, e.low_mc_se), ("upper", e.high, e.high_mc_se))
             if _near(b, se, threshold)]
    return "borderline: " + "; ".join(parts) + " — another bootstrap RNG seed could move the verdict"


def combine(verdicts: Sequence[str]) -> str:
    """Any not evaluated → not evaluated; any not held → not held; all held → held; any borderline (the rest held
    or borderline, or inconclusive) → borderline; otherwise inconclusive."""
    if not verdicts or any(v == NOT_EVALUATED for v in verdicts):
        return NOT_EVALUATED
    if any(v == NOT_HELD for v in verdicts):
        return NOT_HELD
    if all(v == HELD for v in verdicts):
        return HELD
    if any(v == BORDERLINE for v in verdicts):
        return BORDERLINE
    return INCONCLUSIVE


@dataclass(frozen=True)
class HolmStep:
    """One comparison of a Holm family: its one-sided p-value, its rank (1 = smallest p) among ``m``, the one-sided
    level it is read at (α₁ / (m − rank + 1)), the interval at that level (two-sided 1 − 2 × level) with its bounds'
    Monte-Carlo SEs, and the adjusted verdict."""

    p: float
    rank: int
    m: int
    level: float
    low: float
    high: float
    low_mc_se: float
    high_mc_se: float
    verdict: str

    @property
    def confidence(self) -> float:
        return 1.0 - 2.0 * self.level


def holm(effects: Sequence[Effect], alpha: float = 1.0 - CONFIDENCE) -> list[HolmStep]:
    """Holm–Bonferroni step-down over a family of "effect > 0" comparisons, in the input order. Each one-sided
    bootstrap p-value (:meth:`Effect.p_greater`) is ranked; the k-th smallest is read at one-sided level
    α₁ / (m − k + 1) with α₁ = α / 2 (a two-sided 95 % interval is a one-sided 2.5 % test per side), i.e. its
    interval is widened to two-sided confidence 1 − α / (m − k + 1). Held when that interval lies above 0 *and* every
    smaller p-value was held (the step-down stops at the first failure: later ones cannot be held); not held when the
    widened interval lies at or below 0; otherwise inconclusive; borderline as in :func:`verdict_greater` (and every
    held step after a borderline one). The family-wise rate of a false "held" is ≤ α₁."""
    m = len(effects)
    order = sorted(range(m), key=lambda i: (effects[i].p_greater(), -effects[i].low))
    steps: dict[int, HolmStep] = {}
    stopped = ""  # "", or the verdict that stopped the step-down (a borderline one leaves later ones borderline)
    for rank, i in enumerate(order, start=1):
        e = effects[i]
        level = alpha / 2.0 / (m - rank + 1)
        (low, low_se), (high, high_se) = e.bound(level), e.bound(1.0 - level)
        verdict = _decide(low, high, low_se, high_se, 0.0, e.degenerate, True)
        if verdict == HELD and stopped:
            verdict = BORDERLINE if stopped == BORDERLINE else INCONCLUSIVE
        if verdict != HELD and not stopped:
            stopped = BORDERLINE if verdict == BORDERLINE else "stop"
        steps[i] = HolmStep(e.p_greater(), rank, m, level, low, high, low_se, high_se, verdict)
    return [steps[i] for i in range(m)]


# ---------------------------------------------------------------------------------------------------------------------
# power


@dataclass(frozen=True)
class VarianceComponents:
    """A paired difference matrix d[seed, task] = μ + a_seed + b_task + e, split by the two-way ANOVA (method of
    moments, each component floored at 0): ``seed`` = Var(a) (seed-to-seed, what training randomness adds to a seed's
    mean), ``task`` = Var(b) (how much the difference varies across test tasks), ``residual`` = Var(e) (the
    seed × task interaction and the sampling noise of a task's rollouts), and the design they were measured on."""

    seed: float
    task: float
    residual: float
    n_seeds: int
    n_tasks: int

    @classmethod
    def of(cls, d: np.ndarray) -> VarianceComponents | None:
        """The components of ``d``; None with fewer than 2 seeds or 2 tasks (nothing to separate)."""
        d = _matrix(d)
        n_s, n_t = d.shape
        if n_s < 2 or n_t < 2:
            return None
        grand, by_seed, by_task = d.mean(), d.mean(axis=1), d.mean(axis=0)
        ms_seed = n_t * float(np.sum((by_seed - grand) ** 2)) / (n_s - 1)
        ms_task = n_s * float(np.sum((by_task - grand) ** 2)) / (n_t - 1)
        resid = d - by_seed[:, None] - by_task[None, :] + grand
        ms_res = float(np.sum(resid ** 2)) / ((n_s - 1) * (n_t - 1))
        return cls(max((ms_seed - ms_res) / n_t, 0.0), max((ms_task - ms_res) / n_s, 0.0), ms_res, n_s, n_t)

    def se(self, n_seeds: int | None = None, n_tasks: int | None = None) -> float:
        """The SE of the mean difference for a design of ``n_seeds`` × ``n_tasks`` (default: the measured one):
        √(seed / n_seeds + task / n_tasks + residual / (n_seeds n_tasks))."""
        s, t = n_seeds or self.n_seeds, n_tasks or self.n_tasks
        return math.sqrt(self.seed / s + self.task / t + self.residual / (s * t))


def seeds_for_mde(components: VarianceComponents, n_tasks: int, target: float, alpha: float = 1.0 - CONFIDENCE,
                  power: float = POWER) -> int | None:
    """The fewest seeds (at least 2, so the seed spread can be estimated) whose design with ``n_tasks`` tasks has
    an MDE ≤ ``target``: the smallest S with seed / S + task / T + residual / (S T) ≤ (target / (z_{1−α/2} +
    z_{power}))². None when no number of seeds reaches it at this task count (task / T alone is too large)."""
    budget = (target / mde(1.0, alpha, power)) ** 2
    room = budget - components.task / n_tasks
    if room <= 0:
        return None
    need = (components.seed + components.residual / n_tasks) / room
    return max(2, math.ceil(need - 1e-9))


__all__ = ["BOOTSTRAP_SAMPLES", "BORDERLINE", "BORDERLINE_MC_SES", "CONFIDENCE", "Effect", "HELD", "HolmStep",
           "INCONCLUSIVE", "NOT_EVALUATED", "NOT_HELD", "POWER", "Stat", "VarianceComponents", "bootstrap_effect",
           "bootstrap_ratio", "borderline_note", "combine", "effect_from_draws", "holm", "mde", "quantile_mc_se",
           "resampled_sums", "seeds_for_mde", "verdict_greater", "verdict_lower_bound", "verdict_not_worse"]
