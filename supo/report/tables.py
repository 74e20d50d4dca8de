"""The report's tables on power, multiplicity and mechanism (issue 21, items 3 and 5): the C0 family under Holm,
each comparison's variance components and the seeds a target MDE needs, summary state accuracy, and the failure
decomposition — each a :class:`~supo.report.blocks.Table` of formatted cells, "–" where a number is missing."""

from __future__ import annotations

from collections.abc import Sequence

from supo.report.blocks import DASH, Table
from supo.report.claims import TARGET_MDE, Claim
from supo.report.mechanism import FailureRow, SummaryAccuracy
from supo.report.stats import Effect, mde, seeds_for_mde
from supo.results import FAILURES


def interval(e: Effect | None, signed: bool = True) -> str:
    """``effect [low, high]`` (signed for a difference), or "–"."""
    if e is None:
        return DASH
    f = "+.3f" if signed else ".3f"
    return f"{e.effect:{f}} [{e.low:{f}}, {e.high:{f}}]"


MAX_DECIMALS = 6
"""The most decimals an interval is printed with to tell a bound from the threshold it is read against."""


def bounded(effect: float, low: float, high: float, threshold: float = 0.0) -> str:
    """``effect [low, high]`` (signed) read against ``threshold``: printed with 3 decimals, or more (up to
    :data:`MAX_DECIMALS`) where a bound differs from the threshold but would print as it; a bound *equal* to the
    threshold says so ("lower bound = 0"), so "+0.000" next to "inconclusive" never looks contradictory."""
    d = 3
    while d < MAX_DECIMALS and any(b != threshold and round(b, d) == round(threshold, d) for b in (low, high)):
        d += 1
    text = f"{effect:+.{d}f} [{low:+.{d}f}, {high:+.{d}f}]"
    touching = [name for name, b in (("lower", low), ("upper", high)) if b == threshold]
    if len(touching) == 2:
        return f"{text} (both bounds = {threshold:g})"
    return f"{text} ({touching[0]} bound = {threshold:g})" if touching else text


def claim_interval(c: Claim, prefix: str = "") -> str:
    """A claim's effect [95% CI] (``prefix``: one comparison of a claim of several, e.g. "supo-eq4_") read against
    its threshold (:func:`bounded`), or "–"."""
    n = c.numbers
    if f"{prefix}effect" not in n:
        return DASH
    return bounded(n[f"{prefix}effect"], n[f"{prefix}ci_low"], n[f"{prefix}ci_high"], c.threshold)


def holm_table(claims: Sequence[Claim]) -> Table:
    """One line per C0 comparison: the unadjusted 95 % interval and verdict, the one-sided bootstrap p-value, its
    Holm rank and level, the interval at that level and the adjusted verdict (the claim's verdict)."""
    rows = []
    for c in claims:
        if not c.key.startswith("C0 "):
            continue
        n = c.numbers
        if "holm_rank" not in n:
            rows.append((c.key[3:], DASH, c.unadjusted or c.verdict, DASH, DASH, DASH, DASH, f"**{c.verdict}**"))
            continue
        adjusted = bounded(n["effect"], n["holm_low"], n["holm_high"], c.threshold).split(" ", 1)[1]
        rows.append((c.key[3:], claim_interval(c), c.unadjusted, f"{n['p_one_sided']:.4f}",
                     f"{int(n['holm_rank'])} of {int(n['holm_m'])}",
                     f"{n['holm_level']:.4f} ({1 - 2 * n['holm_level']:.2%})", adjusted, f"**{c.verdict}**"))
    return Table(("arm", "arm − warm start [95% CI]", "unadjusted", "one-sided p", "Holm rank",
                  "read at one-sided (confidence)", "adjusted interval", "Holm verdict"), tuple(rows))


def power_table(claims: Sequence[Claim], target: float = TARGET_MDE) -> Table:
    """Per comparison of every claim: the variance components of its paired difference matrix (seed, task and
    residual SDs), the SE and MDE they give at the design that ran, and the seeds that would bring the MDE to
    ``target`` at the run's task count ("unreachable" when the task variance alone exceeds it)."""
    rows = []
    for c in claims:
        for name, vc in c.components.items():
            se = vc.se()
            need = seeds_for_mde(vc, vc.n_tasks, target)
            rows.append((c.key, name, f"{vc.n_seeds} × {vc.n_tasks}", f"{vc.seed ** 0.5:.3f}",
                         f"{vc.task ** 0.5:.3f}", f"{vc.residual ** 0.5:.3f}", f"{se:.3f}", f"{mde(se):.3f}",
                         str(need) if need is not None else f"unreachable at {vc.n_tasks} tasks"))
    return Table(("claim", "comparison", "seeds × tasks", "seed SD", "task SD", "residual SD", "SE (design)",
                  "MDE (80% power)", f"seeds for MDE {target:g}"), tuple(rows))


def accuracy_table(rows: Sequence[SummaryAccuracy]) -> Table:
    """Per arm at its own setting: pooled summary state accuracy [95 % CI], the judged summaries behind it, the
    eval metric's mean over seeds, and arm − warm start [95 % CI] (paired ratio bootstrap)."""
    out = []
    for r in rows:
        out.append((r.arm, str(r.s_eval), DASH if r.working_context is None else str(r.working_context),
                    interval(r.accuracy, signed=False), f"{r.judged:.0f}" if r.accuracy else DASH,
                    DASH if r.metric_mean is None else f"{r.metric_mean:.3f}", interval(r.vs_warm_start)))
    return Table(("arm", "S_eval", "W", "summary state accuracy [95% CI]", "judged summaries",
                  "per-seed metric, mean", "arm − warm start [95% CI]"), tuple(out))


def failure_table(rows: Sequence[FailureRow]) -> Table:
    """Per arm at its own setting: success and the share of each failure class (mean over seeds × tasks; they sum
    to 1), each with its change against the warm start at that setting [95 % CI] for the trained arms."""
    out = []
    for r in rows:
        cells = []
        for k in FAILURES:
            share = r.shares.get(k)
            text = DASH if share is None else f"{share:.3f}"
            if r.vs_warm_start.get(k) is not None:
                text += f" (Δ {interval(r.vs_warm_start[k])})"
            cells.append(text)
        out.append((r.arm, str(r.s_eval), DASH if r.working_context is None else str(r.working_context),
                    DASH if r.success is None else f"{r.success:.3f}", *cells))
    return Table(("arm", "S_eval", "W", "success", *(k.replace("_", " ") for k in FAILURES)), tuple(out))


__all__ = ["MAX_DECIMALS", "accuracy_table", "bounded", "claim_interval", "failure_table", "holm_table", "interval",
           "power_table"]
