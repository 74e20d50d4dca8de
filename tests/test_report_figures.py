"""The report's figures (supo.report.figures, issue 22 item 6) rendered from small results and read back through
matplotlib: y-ranges fitted to the plotted values (not 0–1 when every value is ≤ 0.08), error bars that are Table 3's
bootstrap intervals, categorical S_eval ticks, arms offset on x, distinct styles for the two warm-start labels, one
reward panel, and a size the HTML report shows unscaled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from supo.report.analysis import ArmRoles, analyze, success_interval
from supo.report.collect import EvalRun, TrainRun
from supo.report.figures import DPI, FONT, PAD, WIDTH_IN, build_figures, write_figures

SEEDS, TASKS, S, W = (0, 1, 2), 50, 2, 100
GRID = (0, 1, 2, 4)
RATES = {"sft": 0.04, "grpo-w": 0.02, "grpo-weff": 0.06, "supo": 0.08}  # every success ≤ 0.08
ROLES = ArmRoles(ablations=())


def _evals() -> list[EvalRun]:
    rng = np.random.default_rng(3)
    ids = [f"test-{t:05d}" for t in range(TASKS)]
    runs = []
    cells = [(arm, s, W * (S + 1) if arm == "grpo-weff" else W) for arm in RATES for s in GRID]
    cells.append(("sft-grpo-weff", 0, W * (S + 1)))
    for arm, s, w in cells:
        m = (rng.random((len(SEEDS), TASKS)) < RATES.get(arm, 0.05) * (1 + 0.1 * s)).astype(float)
        runs += [EvalRun(env="array", arm=arm, seed=seed, s_eval=s, working_context=w, split="test",
                         metrics={"success_rate": float(m[i].mean())}, path=Path(f"{arm}/s{s}"),
                         outcomes=dict(zip(ids, m[i]))) for i, seed in enumerate(SEEDS)]
    return runs


def _training() -> list[TrainRun]:
    out = []
    for arm, algo, smax, w in (("grpo-w", "grpo", 0, W), ("grpo-weff", "grpo", 0, W * (S + 1)), ("supo", "supo", S, W)):
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            history = tuple({"step": k, "mean_reward": r, "success_rate": r, "kl_to_init": 0.002 * k,
                             "overlong_rate": 0.3 + 0.01 * k, "error_loop_rate": 0.1, "budget_cut_rate": 0.0,
                             "mean_summaries": float(smax)} for k, r in enumerate(rng.uniform(0.0, 0.05, 8)))
            out.append(TrainRun("array", arm, seed, algo, smax, w, history, Path(f"{arm}/train_metrics.json")))
    return out


@pytest.fixture(scope="module")
def res():
    (r,) = analyze(_evals(), _training(), ROLES, arms=["grpo-w", "grpo-weff", "supo"], seeds=list(SEEDS))
    return r


def _bars(ax) -> dict[str, ErrorbarContainer]:
    return {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}


def test_success_figure_fits_its_intervals(res):
    ax = build_figures(res)["success"].axes[0]
    bars = _bars(ax)
    assert set(bars) == {"sft (W=100)", "grpo-w (W=100)", "grpo-weff (W=300)", "supo (W=100)",
                         "sft-grpo-weff (W=300)"}
    lows, highs = [], []
    for label, c in bars.items():
        arm = label.split(" ")[0]
        segments = c.lines[2][0].get_segments()
        cells = [res.cell(arm, s) for s in GRID if res.cell(arm, s) is not None]
        assert len(segments) == len(cells)
        for seg, cell in zip(segments, cells):
            e = success_interval(cell)  # Table 3's interval, not ± std
            assert seg[0][1] == pytest.approx(e.low) and seg[1][1] == pytest.approx(e.high)
            lows.append(e.low)
            highs.append(e.high)
    y0, y1 = ax.get_ylim()
    span = max(highs) - min(lows)
    assert y0 <= min(lows) and y1 >= max(highs)
    assert y1 - y0 <= span * (1 + 2 * PAD) + 1e-9 and y1 < 0.5  # fitted: every value is small
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in GRID]
    assert list(ax.get_xticks()) == list(range(len(GRID)))  # categorical: equal steps whatever the S_eval values
    xs = {label: c.lines[0].get_xdata()[0] for label, c in bars.items() if c.lines[0].get_xdata()[0] < 0.5}
    assert len(set(np.round(list(xs.values()), 6))) == len(xs)  # every arm at S_eval = 0 at its own x


def test_the_two_warm_start_labels_look_different(res):
    bars = _bars(build_figures(res)["success"].axes[0])
    sft, other = bars["sft (W=100)"].lines[0], bars["sft-grpo-weff (W=300)"].lines[0]
    assert (sft.get_marker(), sft.get_linestyle()) != (other.get_marker(), other.get_linestyle())
    assert sft.get_markerfacecolor() != other.get_markerfacecolor()


def test_training_figures_fit_their_data(res):
    figs = build_figures(res)
    training = [ax for ax in figs["training"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in training] == ["mean reward (= success rate)", "KL(policy ‖ warm start)"]
    for fig in (figs["training"], figs["overlong"]):
        for ax in (a for a in fig.axes if a.get_visible()):
            ys = np.concatenate([line.get_ydata() for line in ax.get_lines()] +
                                [p.get_paths()[0].vertices[:, 1] for p in ax.collections])
            y0, y1 = ax.get_ylim()
            assert y0 <= ys.min() and y1 >= ys.max()
            assert y1 - y0 <= max(np.ptp(ys), 0.02) * (1 + 2 * PAD) + 1e-9
            assert ax.xaxis.get_ticklabels()[0].get_fontsize() >= FONT["tick"]


def test_figures_are_written_at_a_size_the_report_shows_unscaled(res, tmp_path):
    paths = write_figures(res, tmp_path)
    assert set(paths) == {"success", "training", "overlong"}
    from matplotlib.image import imread

    for p in paths.values():
        assert imread(p).shape[1] == round(WIDTH_IN * DPI) <= 1100
