"""What RL changed, per arm at its own setting (issue 21, item 3; docs/design.md §7 "Mechanism"):

* **summary state accuracy** — correct / judged summaries (the env's oracle: does a summary carry the state needed to
  continue?), pooled over seeds × tasks with its 95 % interval from the two-way ratio bootstrap
  (:func:`supo.report.stats.bootstrap_ratio`), and the paired difference arm − warm start at the arm's setting (the
  paper's mechanism predicts SUPO's accuracy rises above the warm start's);
* **failure decomposition** — the share of rollouts that succeeded and that failed as each class of
  ``supo.results.FAILURES`` (the first that applies: wrong summary, action error, wrong answer, budget cut), the
  warm start beside, each class's change against it with its interval.

Evaluations that predate these columns (or an env without a summary oracle) give "–", never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from supo.report.analysis import Cell, EnvResults, common
from supo.report.stats import Effect, bootstrap_effect, bootstrap_ratio
from supo.results import FAILURES


@dataclass(frozen=True)
class SummaryAccuracy:
    """One arm at its own setting: pooled summary state accuracy with its interval, the judged summaries it rests
    on, and the paired difference against the warm start (None where not measurable)."""

    arm: str
    s_eval: int
    working_context: int | None
    accuracy: Effect | None
    judged: float
    vs_warm_start: Effect | None
    metric_mean: float | None
    """The mean over seeds of the eval metric ``summary_state_accuracy`` (per-seed ratios; for comparison)."""


@dataclass(frozen=True)
class FailureRow:
    """One arm at its own setting: success and each failure class's share (mean over seeds × tasks), and each
    class's paired change against the warm start at that setting."""

    arm: str
    s_eval: int
    working_context: int | None
    success: float | None
    shares: dict[str, float | None]
    vs_warm_start: dict[str, Effect | None] = field(default_factory=dict)


def _accuracy(cell: Cell) -> tuple[Effect | None, float]:
    seeds, tasks = common(cell, what="summaries_judged")
    if not seeds or not tasks:
        return None, 0.0
    den = cell.matrix(seeds, tasks, "summaries_judged")
    return bootstrap_ratio(cell.matrix(seeds, tasks, "summaries_correct"), den), float(den.sum())


def _accuracy_difference(a: Cell, b: Cell) -> Effect | None:
    seeds, tasks = common(a, b, what="summaries_judged")
    if not seeds or not tasks:
        return None
    m = lambda c, what: c.matrix(seeds, tasks, what)  # noqa: E731
    return bootstrap_ratio(m(a, "summaries_correct"), m(a, "summaries_judged"), m(b, "summaries_correct"),
                           m(b, "summaries_judged"))


def summary_accuracy(res: EnvResults) -> list[SummaryAccuracy]:
    """Each arm at its own setting whose evaluations judged summaries (an env without an oracle, or outcomes
    written before the columns existed: none)."""
    rows = []
    for arm, s, w, cell, warm in res.own_cells():
        acc, judged = _accuracy(cell)
        metric = cell.stat("summary_state_accuracy")
        if acc is None and metric is None:
            continue
        diff = _accuracy_difference(cell, warm) if warm is not None and acc is not None else None
        rows.append(SummaryAccuracy(arm, s, w, acc, judged, diff, metric.mean if metric else None))
    return rows


def _share(cell: Cell, what: str) -> float | None:
    seeds, tasks = common(cell, what=what)
    if seeds and tasks:
        return float(cell.matrix(seeds, tasks, what).mean())
    metric = {"success": "success_rate"}.get(what, f"failure_{what.split(':', 1)[-1]}_rate")
    st = cell.stat(metric)
    return st.mean if st else None


def _difference(a: Cell, b: Cell, what: str) -> Effect | None:
    seeds, tasks = common(a, b, what=what)
    if not seeds or not tasks:
        return None
    return bootstrap_effect(a.matrix(seeds, tasks, what), b.matrix(seeds, tasks, what))


def failure_decomposition(res: EnvResults) -> list[FailureRow]:
    """Each arm at its own setting: success and the share of each failure class (from the per-task outcomes, else
    the eval metrics' means), and each class's paired change against the warm start (outcomes only)."""
    rows = []
    for arm, s, w, cell, warm in res.own_cells():
        shares = {k: _share(cell, f"failure:{k}") for k in FAILURES}
        diffs = {k: _difference(cell, warm, f"failure:{k}") for k in FAILURES} if warm is not None else {}
        rows.append(FailureRow(arm, s, w, _share(cell, "success"), shares, diffs))
    return rows


__all__ = ["FailureRow", "SummaryAccuracy", "failure_decomposition", "summary_accuracy"]
