"""The report's figures, fitted to their data (issue 22, item 6).

Every arm keeps one colour across figures and environments: the colour follows its role (warm start grey, GRPO-W
blue, GRPO-Weff orange, SUPO green, ablations red, purple, brown, ... in their order), so a reader can match lines
between the success, training and overlong figures at a glance. The warm start's labels (``sft`` at SUPO's setting,
``sft-<arm>`` at another arm's) share its grey but not its marker and line.

* success against S_eval: categorical S_eval ticks, the arms offset on x so no point hides another, each point's
  error bar the 95% two-way bootstrap interval of Table 3 (not a ± std), a ring on each arm's own setting, the
  y-axis fitted to the intervals;
* training: the reward (noting when it equals the success rate, a binary reward) and the KL to the warm start;
* overlong dynamics: never-finish, error-loop and budget-cut rates and summaries per rollout, 2 × 2.

Figures are :data:`WIDTH_IN` × :data:`DPI` pixels wide, which the HTML report shows at their own size, so the fonts
(:data:`FONT`) are what the reader sees.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from supo.layout import WARM_START, is_warm_start
from supo.report.analysis import (
    ArmRoles,
    Cell,
    EnvResults,
    success_interval,
    training_curves,
)

ABLATION_COLOURS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
WARM_START_COLOUR = "#7f7f7f"
TRAINING_PANELS = (("mean_reward", "mean reward"), ("kl_to_init", "KL(policy ‖ warm start)"))
OVERLONG_PANELS = (("overlong_rate", "overlong (never finished)"), ("error_loop_rate", "error loops"),
                   ("budget_cut_rate", "budget cuts (no error)"), ("mean_summaries", "summaries per rollout"))
DPI = 110
WIDTH_IN = 9.5
"""≈ 1045 px: within the HTML report's 1100 px column, so a figure is never scaled down there."""
FONT = {"title": 12, "label": 11, "tick": 10, "legend": 10}
PAD = 0.08
"""The share of the data's span left free below and above it on a fitted y-axis."""
MIN_SPAN = 0.02
"""The smallest span of a fitted y-axis (a flat line still reads as one, not as noise magnified)."""
OFFSET = 0.1
"""The x distance between neighbouring arms at one S_eval (S_eval positions are 1 apart)."""
LINE_WIDTH, HALO = 1.3, 0.7
"""Training curves: the last arm's line width, and how much wider each earlier arm's is drawn beneath it, so a
curve lying on another (e.g. two arms at 0) still shows as a coloured rim."""


def arm_colours(roles: ArmRoles, arms: Sequence[str]) -> dict[str, str]:
    """A fixed colour per arm, by role (the same in every figure)."""
    fixed = {roles.grpo_w: "#1f77b4", roles.grpo_weff: "#ff7f0e", roles.supo: "#2ca02c"}
    fixed.update({label: WARM_START_COLOUR for label in arms if is_warm_start(label)})
    fixed.update({a: ABLATION_COLOURS[i % len(ABLATION_COLOURS)] for i, a in enumerate(roles.ablations)})
    extra = [a for a in arms if a not in fixed]
    fixed.update({a: f"C{(i + 5) % 10}" for i, a in enumerate(extra)})
    return fixed


def arm_style(roles: ArmRoles, arm: str) -> dict[str, Any]:
    """Line and marker of an arm: the warm start dashed with squares, its other labels (``sft-<arm>``) hollow
    diamonds on a dotted line, ablations triangles, the other arms solid with circles."""
    if arm == WARM_START:
        return {"linestyle": "--", "marker": "s"}
    if is_warm_start(arm):
        return {"linestyle": ":", "marker": "D", "markerfacecolor": "white", "markeredgewidth": 1.6}
    return {"linestyle": "-", "marker": "^" if arm in roles.ablations else "o"}


def fitted_ylim(lows: Sequence[float], highs: Sequence[float]) -> tuple[float, float]:
    """A y-range that holds every value of ``lows`` and ``highs`` with :data:`PAD` of their span free on each side
    (a span below :data:`MIN_SPAN` is widened to it around its middle)."""
    finite = [v for v in (*lows, *highs) if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi - lo < MIN_SPAN:
        mid = (lo + hi) / 2.0
        lo, hi = mid - MIN_SPAN / 2.0, mid + MIN_SPAN / 2.0
    pad = PAD * (hi - lo)
    return lo - pad, hi + pad


def _style(ax: Axes, title: str, xlabel: str, ylabel: str = "") -> None:
    ax.set_title(title, fontsize=FONT["title"])
    ax.set_xlabel(xlabel, fontsize=FONT["label"])
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=FONT["label"])
    ax.tick_params(labelsize=FONT["tick"])
    ax.grid(True, alpha=0.3)


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    fig.savefig(out, format="png", metadata={"Software": None})
    return out


def _point(c: Cell | None) -> tuple[float, float, float] | None:
    """(success, low, high) of a cell: its bootstrap interval, or its seed mean (no bar) without per-task results."""
    e = success_interval(c)
    if e is not None:
        return e.effect, e.low, e.high
    st = c.stat("success_rate") if c is not None else None
    return None if st is None else (st.mean, st.mean, st.mean)


def success_vs_s_eval(res: EnvResults) -> Figure:
    """Success rate against S_eval per arm: the mean over seeds × tasks with its 95% bootstrap interval (Table 3's),
    S_eval categorical, arms side by side, a ring on each arm's own setting; dashed vertical: S_train."""
    fig = Figure(figsize=(WIDTH_IN, 4.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    colours = arm_colours(res.roles, res.arms)
    grid = sorted({s for _, s in res.cells})
    at = {s: i for i, s in enumerate(grid)}
    arms = [a for a in res.arms if any(res.cell(a, s) is not None for s in grid)]
    lows: list[float] = []
    highs: list[float] = []
    for j, arm in enumerate(arms):
        dx = (j - (len(arms) - 1) / 2.0) * OFFSET
        pts = [(s, p) for s in grid if (p := _point(res.cell(arm, s))) is not None]
        mean = [p[0] for _, p in pts]
        lows += [p[1] for _, p in pts]
        highs += [p[2] for _, p in pts]
        s_own, w_own = res.own.get(arm, (None, None))
        label = arm + ("" if w_own is None else f" (W={w_own})")
        ax.errorbar([at[s] + dx for s, _ in pts], mean, yerr=[[m - p[1] for m, (_, p) in zip(mean, pts)],
                                                             [p[2] - m for m, (_, p) in zip(mean, pts)]],
                    capsize=3, markersize=6, linewidth=1.4, elinewidth=1.2, label=label, color=colours[arm],
                    **arm_style(res.roles, arm))
        own = next((p for s, p in pts if s == s_own), None)
        if own is not None:
            ax.plot([at[s_own] + dx], [own[0]], linestyle="none", marker="o", markersize=14, markerfacecolor="none",
                    markeredgecolor=colours[arm], markeredgewidth=1.4)
    if res.s_train in at:
        ax.axvline(at[res.s_train], color="gray", linestyle="--", linewidth=1, label=f"S_train = {res.s_train}")
    ax.set_xticks(range(len(grid)), [str(s) for s in grid])
    ax.set_xlim(-0.5, len(grid) - 0.5)
    ax.set_ylim(*fitted_ylim(lows, highs))
    _style(ax, f"{res.env}: success vs S_eval ({', '.join(res.splits)} split)",
           "S_eval (summaries allowed at evaluation)", "success rate (95% CI)")
    ax.legend(fontsize=FONT["legend"], loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def _panel_label(key: str, label: str, curves: dict[str, list[dict[str, float]]]) -> str:
    """The reward panel says when the reward equals the success rate on every step (a binary reward)."""
    rows = [row for rs in curves.values() for row in rs if key in row]
    if key == "mean_reward" and rows and all(row.get("success_rate") == row[key] for row in rows):
        return f"{label} (= success rate)"
    return label


def per_step(res: EnvResults, panels: Sequence[tuple[str, str]], title: str, ncols: int = 2) -> Figure:
    """One panel per metric against the training step (``ncols`` a row): per arm the mean over seeds and a min–max
    band, each y-axis fitted to its bands; one legend for the figure."""
    curves = training_curves(res.training, [k for k, _ in panels] + ["success_rate"])
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(WIDTH_IN, 0.4 + 3.2 * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colours = arm_colours(res.roles, [*res.arms, *curves])
    for ax, (key, label) in zip(axes, panels):
        lows: list[float] = []
        highs: list[float] = []
        for i, (arm, rows) in enumerate(curves.items()):
            rows = [row for row in rows if key in row]
            if not rows:
                continue
            steps = [row["step"] for row in rows]
            ax.plot(steps, [row[key] for row in rows], marker=".", label=arm, color=colours[arm], zorder=2 + i,
                    linewidth=LINE_WIDTH + HALO * (len(curves) - 1 - i))
            band = [row[f"{key}_min"] for row in rows], [row[f"{key}_max"] for row in rows]
            ax.fill_between(steps, *band, color=colours[arm], alpha=0.12, linewidth=0)
            lows += band[0]
            highs += band[1]
        ax.set_ylim(*fitted_ylim(lows, highs))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _style(ax, _panel_label(key, label, curves), "training step")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=max(len(labels), 1), fontsize=FONT["legend"])
    fig.suptitle(f"{res.env}: {title} (train split; mean over seeds, band: min–max)", fontsize=FONT["title"])
    return fig


def build_figures(res: EnvResults) -> dict[str, Figure]:
    """Every figure of one environment: {"success", "training", "overlong"} → figure (those it has data for)."""
    out: dict[str, Figure] = {}
    if res.cells:
        out["success"] = success_vs_s_eval(res)
    if res.training:
        out["training"] = per_step(res, TRAINING_PANELS, "training")
        out["overlong"] = per_step(res, OVERLONG_PANELS, "overlong dynamics")
    return out


FILE_NAMES = {"success": "success_vs_s_eval", "training": "training_curves", "overlong": "overlong_dynamics"}
"""A figure's kind → its name after the environment's (``<env>-<name>.png``, and the MLflow figure's name)."""


def write_figures(res: EnvResults, folder: Path) -> dict[str, Path]:
    """Every figure of one environment as PNG in ``folder``: {"success", "training", "overlong"} → path."""
    return {kind: _save(fig, folder / f"{res.env}-{FILE_NAMES[kind]}.png") for kind, fig in build_figures(res).items()}


__all__ = ["ABLATION_COLOURS", "DPI", "FILE_NAMES", "FONT", "OVERLONG_PANELS", "TRAINING_PANELS", "WIDTH_IN",
           "arm_colours", "arm_style", "build_figures", "fitted_ylim", "per_step", "success_vs_s_eval",
           "write_figures"]
