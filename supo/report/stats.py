"""Statistics of the report: seed means, and effects with a 95 % confidence interval from a paired bootstrap.

An arm evaluated at one (W, S_eval) gives a success matrix ``[seed, task]`` (the mean over a task's samples). Two
cells compared on the same test tasks and seeds are *paired*: the effect is the mean over seeds and tasks of their
difference, and its confidence interval comes from a two-way bootstrap that resamples seeds and tasks independently
(with replacement), so it carries both the training randomness (seeds) and the finite test split (tasks). A cell
compared with a constant (the same arm at another S_eval is also a cell) uses the same machinery.

A verdict reads the interval, never the point estimate: a claim "A > B" is **held** when the whole interval lies
above 0, **not held** when it lies at or below 0, **inconclusive** when it straddles 0. A non-inferiority claim
"A ≥ B − δ" is held when the interval lies above −δ, not held when it lies below −δ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HELD, NOT_HELD, INCONCLUSIVE, NOT_EVALUATED = "held", "not held", "inconclusive", "not evaluated"
BOOTSTRAP_SAMPLES = 4000
CONFIDENCE = 0.95


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


@dataclass(frozen=True)
class Effect:
    """A paired difference with its bootstrap confidence interval."""

    effect: float
    low: float
    high: float
    seeds: int
    tasks: int

    @property
    def degenerate(self) -> bool:
        """Both sides were identical everywhere (e.g. both 0): the interval is a point at 0."""
        return self.low == self.high == self.effect == 0.0

    def fmt(self) -> str:
        return (f"{self.effect:+.3f}, 95% CI [{self.low:+.3f}, {self.high:+.3f}] "
                f"({self.seeds} seeds × {self.tasks} tasks)")


def bootstrap_effect(a: np.ndarray, b: np.ndarray | None = None, *, samples: int = BOOTSTRAP_SAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> Effect:
    """Effect = mean(a − b) over a ``[seeds, tasks]`` matrix (``b`` None: mean(a)), and its percentile interval from
    resampling seeds and tasks independently with replacement. Deterministic for a ``seed``."""
    a = np.asarray(a, dtype=np.float64)
    d = a if b is None else a - np.asarray(b, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"expected a non-empty [seeds, tasks] matrix, got shape {d.shape}")
    n_s, n_t = d.shape
    rng = np.random.default_rng(seed)
    # the mean of a resampled [seeds, tasks] grid = (seed counts) · d · (task counts) / (n_s · n_t)
    cs = rng.multinomial(n_s, np.full(n_s, 1.0 / n_s), size=samples).astype(np.float64)
    ct = rng.multinomial(n_t, np.full(n_t, 1.0 / n_t), size=samples).astype(np.float64)
    means = np.einsum("bs,st,bt->b", cs, d, ct) / (n_s * n_t)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    clean = lambda x: 0.0 if abs(x) < 1e-15 else float(x)  # noqa: E731 - no "-0.000" in the report
    return Effect(clean(float(d.mean())), clean(low), clean(high), n_s, n_t)


def verdict_greater(e: Effect) -> str:
    """"A > B": held above 0, not held at or below 0, inconclusive across 0."""
    if e.low > 0:
        return HELD
    if e.high <= 0:
        return NOT_HELD
    return INCONCLUSIVE


def verdict_not_worse(e: Effect, margin: float) -> str:
    """"A ≥ B − margin" (non-inferiority): held above −margin, not held below it, inconclusive across it."""
    if e.low > -margin:
        return HELD
    if e.high < -margin:
        return NOT_HELD
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """All held → held; any not held → not held; otherwise inconclusive (or not evaluated when nothing was)."""
    if not verdicts or any(v == NOT_EVALUATED for v in verdicts):
        return NOT_EVALUATED
    if all(v == HELD for v in verdicts):
        return HELD
    if any(v == NOT_HELD for v in verdicts):
        return NOT_HELD
    return INCONCLUSIVE


def standard_error(p: float, n: int) -> float:
    """The binomial standard error of a success rate ``p`` over ``n`` independent rollouts."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")
