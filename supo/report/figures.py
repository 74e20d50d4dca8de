"""The report's figures. Every arm keeps one colour across figures and environments: the colour follows its role
(warm start grey, GRPO-W blue, GRPO-Weff orange, SUPO green, ablations red, purple, brown, ... in their order), so a
reader can match lines between the success, training and overlong figures at a glance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from supo.layout import is_warm_start
from supo.report.analysis import ArmRoles, EnvResults, training_curves

ABLATION_COLOURS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
TRAINING_PANELS = (("mean_reward", "mean reward"), ("success_rate", "success rate"), ("clip_frac", "clip fraction"),
                   ("kl_to_init", "KL(policy ‖ warm start)"), ("summary_state_accuracy", "summary state accuracy"))
OVERLONG_PANELS = (("overlong_rate", "overlong (never finished)"), ("error_loop_rate", "error loops"),
                   ("budget_cut_rate", "budget cuts (no error)"), ("mean_summaries", "summaries per rollout"))


def arm_colours(roles: ArmRoles, arms: Sequence[str]) -> dict[str, str]:
    """A fixed colour per arm, by role (the same in every figure)."""
    fixed = {roles.grpo_w: "#1f77b4", roles.grpo_weff: "#ff7f0e", roles.supo: "#2ca02c"}
    fixed.update({label: "#7f7f7f" for label in arms if is_warm_start(label)})
    fixed.update({a: ABLATION_COLOURS[i % len(ABLATION_COLOURS)] for i, a in enumerate(roles.ablations)})
    extra = [a for a in arms if a not in fixed]
    fixed.update({a: f"C{(i + 5) % 10}" for i, a in enumerate(extra)})
    return fixed


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    fig.savefig(out, format="png", metadata={"Software": None})
    return out


def success_vs_s_eval(res: EnvResults) -> Figure:
    """Success rate against S_eval per arm (mean over seeds, bars: ± std over seeds); dashed: S_train."""
    fig = Figure(figsize=(7.0, 4.4), dpi=110)
    ax = fig.subplots()
    colours = arm_colours(res.roles, res.arms)
    for arm in res.arms:
        pts = [(s, c.stat("success_rate")) for s in res.grid if (c := res.cell(arm, s)) is not None]
        if pts:
            ax.errorbar([s for s, _ in pts], [p.mean for _, p in pts], yerr=[p.std for _, p in pts], marker="o",
                        capsize=3, label=arm, color=colours[arm])
    if res.s_train is not None:
        ax.axvline(res.s_train, color="gray", linestyle="--", linewidth=1, label=f"S_train = {res.s_train}")
    ax.set_xticks(res.grid)
    ax.set_xlabel("S_eval (summaries allowed at evaluation)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{res.env}: success vs S_eval ({', '.join(res.splits)} split; mean ± std over seeds)")
    fig.tight_layout()
    return fig


def per_step(res: EnvResults, panels: Sequence[tuple[str, str]], title: str) -> Figure:
    """One panel per metric against the training step: per arm the mean over seeds and a min–max band."""
    fig = Figure(figsize=(4.0 * len(panels), 3.8), dpi=110)
    axes = fig.subplots(1, len(panels))
    curves = training_curves(res.training, [k for k, _ in panels])
    colours = arm_colours(res.roles, [*res.arms, *curves])
    for ax, (key, label) in zip(axes, panels, strict=True):
        for arm, rows in curves.items():
            rows = [row for row in rows if key in row]
            if not rows:
                continue
            steps = [row["step"] for row in rows]
            ax.plot(steps, [row[key] for row in rows], marker=".", label=arm, color=colours[arm])
            ax.fill_between(steps, [row[f"{key}_min"] for row in rows], [row[f"{key}_max"] for row in rows],
                            color=colours[arm], alpha=0.15, linewidth=0)
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{res.env}: {title} (train split; mean over seeds, band: min–max)", fontsize=10)
    fig.tight_layout()
    return fig


def write_figures(res: EnvResults, folder: Path) -> dict[str, Path]:
    """Every figure of one environment as PNG in ``folder``: {"success", "training", "overlong"} → path."""
    out: dict[str, Path] = {}
    if res.cells:
        out["success"] = _save(success_vs_s_eval(res), folder / f"{res.env}-success_vs_s_eval.png")
    if res.training:
        out["training"] = _save(per_step(res, TRAINING_PANELS, "training"), folder / f"{res.env}-training_curves.png")
        out["overlong"] = _save(per_step(res, OVERLONG_PANELS, "overlong dynamics"),
                                folder / f"{res.env}-overlong_dynamics.png")
    return out
