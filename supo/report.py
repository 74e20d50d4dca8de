"""Build the results report from eval and training metric files.

Inputs (written by eval and training runs):

* ``<evals_dir>/<arm>/s<N>/metrics.json``: a flat dict with the meta keys ``arm``, ``s_eval``,
  ``working_context``, ``split``, ``checkpoint``, ``num_rollouts`` and the docs/design.md §6 metrics.
* ``<checkpoints_dir>/<arm>/train_metrics.json``: ``{"arm": ..., "history": [{"step": 0, ...}, ...]}``.

Outputs (:func:`write_report`): ``report.md``, ``summary.json`` (flat, for ``dvc metrics``) and
``success_vs_s_eval.png``. Every number in them is read from the files above.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "FIGURE_NAME",
    "META_KEYS",
    "METRIC_KEYS",
    "collect_evals",
    "collect_training",
    "render_markdown",
    "summary_metrics",
    "write_figure",
    "write_report",
]

META_KEYS: tuple[str, ...] = ("env", "arm", "s_eval", "working_context", "split", "checkpoint", "num_rollouts")
"""Keys of an eval metrics.json that describe the run rather than measure it."""

METRIC_KEYS: tuple[str, ...] = (
    "success_rate",
    "mean_reward",
    "mean_tool_calls",
    "mean_summaries",
    "summary_format_miss_rate",
    "mean_working_context_tokens",
    "max_working_context_tokens",
    "effective_context_tokens",
    "overlong_rate",
    "masked_rollout_frac",
    "degenerate_group_frac",
    "segments_per_rollout",
    "tokens_generated",
    "tokens_processed",
    "rollout_seconds",
)
"""The docs/design.md §6 metrics an eval metrics.json may carry."""

TRAINING_KEYS: tuple[str, ...] = ("mean_reward", "success_rate", "mean_summaries")
"""Training metrics compared between the first and last step."""

FIGURE_NAME = "success_vs_s_eval.png"
MISSING = "–"

Formatter = Callable[[Any], str]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _load_json_object(path: Path) -> dict[str, Any]:
    """Read ``path`` as a JSON object, raising ValueError naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _validate_eval(path: Path, data: Mapping[str, Any]) -> None:
    """Check the keys that identify an eval row, raising ValueError naming the file."""
    arm = data.get("arm")
    if not isinstance(arm, str) or not arm:
        raise ValueError(f"{path}: missing or invalid 'arm' (expected a non-empty string, got {arm!r})")
    s_eval = data.get("s_eval")
    if not isinstance(s_eval, int) or isinstance(s_eval, bool) or s_eval < 0:
        raise ValueError(f"{path}: missing or invalid 's_eval' (expected an integer >= 0, got {s_eval!r})")


def collect_evals(evals_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per ``<evals_dir>/[<env>/]<arm>/s<N>/metrics.json``, sorted by arm then s_eval (the arm is labelled
    ``env/arm`` when the file names its ``env``).

    Raises FileNotFoundError when no file is found, ValueError (naming the file) for a file that
    is not a JSON object or lacks ``arm``/``s_eval``, and for two files with the same arm and s_eval.
    """
    root = Path(evals_dir)
    pattern = "**/s*/metrics.json"
    paths = sorted(root.glob(pattern)) if root.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"no eval metrics found: nothing matches {root / pattern}")
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], Path] = {}
    for path in paths:
        data = _load_json_object(path)
        _validate_eval(path, data)
        if isinstance(data.get("env"), str) and data["env"]:  # one report across environments: label env/arm
            data["arm"] = f"{data['env']}/{data['arm']}"
        key = (data["arm"], data["s_eval"])
        if key in seen:
            raise ValueError(f"{path}: arm={key[0]!r} s_eval={key[1]} already comes from {seen[key]}")
        seen[key] = path
        rows.append(data)
    frame = pd.DataFrame(rows)
    return frame.sort_values(["arm", "s_eval"], kind="stable").reset_index(drop=True)


def collect_training(checkpoints_dir: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """``{arm: history}`` from ``<checkpoints_dir>/<arm>/train_metrics.json``, history sorted by step.

    A missing folder or no files gives ``{}``; a malformed file raises ValueError naming it.
    The arm is the file's ``arm`` value, else its folder name.
    """
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return {}
    training: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(root.glob("**/train_metrics.json")):
        data = _load_json_object(path)
        arm = data.get("arm", path.parent.name)
        if isinstance(arm, str) and isinstance(data.get("env"), str) and data["env"]:
            arm = f"{data['env']}/{arm}"
        if not isinstance(arm, str) or not arm:
            raise ValueError(f"{path}: invalid 'arm' (expected a non-empty string, got {arm!r})")
        history = data.get("history")
        if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
            raise ValueError(f"{path}: 'history' must be a list of objects")
        if any(not isinstance(row.get("step"), int) for row in history):
            raise ValueError(f"{path}: every history entry needs an integer 'step'")
        if arm in training:
            raise ValueError(f"{path}: training metrics for arm {arm!r} appear twice")
        training[arm] = sorted(history, key=lambda row: row["step"])
    return training


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when missing, NaN or not numeric."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt_float(decimals: int) -> Formatter:
    """A formatter printing numbers with ``decimals`` decimals and missing values as a dash."""

    def fmt(value: Any) -> str:
        number = _number(value)
        return MISSING if number is None else f"{number:.{decimals}f}"

    return fmt


def _fmt_int(value: Any) -> str:
    """Format a count (tokens, S, W) as a rounded integer; missing values as a dash."""
    number = _number(value)
    return MISSING if number is None else str(int(round(number)))


def _fmt_text(value: Any) -> str:
    """Format a text value; missing values as a dash."""
    return MISSING if value is None else str(value)


def _fmt_code(value: Any) -> str:
    """Format a text value as inline code (paths); missing values as a dash."""
    return MISSING if value is None else f"`{value}`"


def _fmt_delta(first: Any, last: Any) -> str:
    """Signed change ``last - first`` with 3 decimals, or a dash if either is missing."""
    a, b = _number(first), _number(last)
    return MISSING if a is None or b is None else f"{b - a:+.3f}"


_RATE = _fmt_float(3)
_MEAN = _fmt_float(2)

EVAL_COLUMNS: tuple[tuple[str, str, Formatter], ...] = (
    ("arm", "arm", _fmt_text),
    ("S_eval", "s_eval", _fmt_int),
    ("W", "working_context", _fmt_int),
    ("success_rate", "success_rate", _RATE),
    ("mean_tool_calls", "mean_tool_calls", _MEAN),
    ("mean_summaries", "mean_summaries", _MEAN),
    ("mean_working_context_tokens", "mean_working_context_tokens", _fmt_int),
    ("max_working_context_tokens", "max_working_context_tokens", _fmt_int),
    ("effective_context_tokens", "effective_context_tokens", _fmt_int),
    ("overlong_rate", "overlong_rate", _RATE),
    ("summary_format_miss_rate", "summary_format_miss_rate", _RATE),
    ("tokens_processed", "tokens_processed", _fmt_int),
)
"""(header, metrics.json key, formatter) of the main results table, in column order.
Formatters receive None for a value that is missing or NaN."""

RUN_COLUMNS: tuple[tuple[str, str, Formatter], ...] = (
    ("arm", "arm", _fmt_text),
    ("S_eval", "s_eval", _fmt_int),
    ("split", "split", _fmt_text),
    ("num_rollouts", "num_rollouts", _fmt_int),
    ("mean_reward", "mean_reward", _RATE),
    ("degenerate_group_frac", "degenerate_group_frac", _RATE),
    ("rollout_seconds", "rollout_seconds", _fmt_float(1)),
    ("checkpoint", "checkpoint", _fmt_code),
)
"""Provenance and secondary metrics of each eval run."""


def _present(value: Any) -> Any:
    """``value``, or None when it is missing (None, NaN or pandas NA, as pandas fills absent keys)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _cell(text: str) -> str:
    """Escape a value for a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table lines (header, separator, rows)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _eval_rows(evals: pd.DataFrame, columns: Sequence[tuple[str, str, Formatter]]) -> list[list[str]]:
    """Formatted rows of ``evals`` (sorted by arm, s_eval) for the given column spec."""
    ordered = evals.sort_values(["arm", "s_eval"], kind="stable")
    rows: list[list[str]] = []
    for record in ordered.to_dict("records"):
        rows.append([fmt(_present(record.get(key))) for _, key, fmt in columns])
    return rows


def _training_lines(training: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The "Training" section: per arm, first vs last step of the training metrics."""
    lines = ["## Training", ""]
    if not training:
        return lines + ["No training metrics found.", ""]
    for arm in sorted(training):
        history = training[arm]
        if not history:
            lines += [f"### {arm}", "", "No training steps recorded.", ""]
            continue
        first, last = history[0], history[-1]
        lines += [f"### {arm} (steps {first['step']} → {last['step']}, {len(history)} logged)", ""]
        rows = [
            [key, _RATE(first.get(key)), _RATE(last.get(key)), _fmt_delta(first.get(key), last.get(key))]
            for key in TRAINING_KEYS
        ]
        lines += _table(["metric", f"step {first['step']}", f"step {last['step']}", "change"], rows)
        lines.append("")
    return lines


def render_markdown(
    evals: pd.DataFrame,
    training: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    figure: str | None = None,
) -> str:
    """The report as markdown: eval results per (arm, S_eval), eval run details, training summary.

    ``figure``, when given, is a relative path to an image embedded after the results table.
    Missing values show as "–".
    """
    for key in ("arm", "s_eval"):
        if key not in evals.columns:
            raise ValueError(f"evals table lacks the column {key!r} (columns: {list(evals.columns)})")
    lines = [
        "# SUPO results",
        "",
        "Generated from the eval `metrics.json` files and training `train_metrics.json` files; "
        "S_eval = summaries allowed at evaluation, W = working context (tokens), "
        "effective context = W × (S_eval + 1).",
        "",
        "## Evaluation",
        "",
    ]
    lines += _table([header for header, _, _ in EVAL_COLUMNS], _eval_rows(evals, EVAL_COLUMNS))
    lines.append("")
    if figure is not None:
        lines += [f"![success_rate vs S_eval]({figure})", ""]
    lines += ["### Eval runs", ""]
    lines += _table([header for header, _, _ in RUN_COLUMNS], _eval_rows(evals, RUN_COLUMNS))
    lines.append("")
    lines += _training_lines(training)
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------
# Summary, figure, files
# --------------------------------------------------------------------------------------------


def summary_metrics(evals: pd.DataFrame) -> dict[str, float]:
    """Flat ``{"<arm>/s<S>/<metric>": value}`` of every finite numeric non-meta value."""
    summary: dict[str, float] = {}
    ordered = evals.sort_values(["arm", "s_eval"], kind="stable")
    for record in ordered.to_dict("records"):
        prefix = f"{record['arm']}/s{int(record['s_eval'])}"
        for key, value in record.items():
            if key in META_KEYS or isinstance(value, (bool, str)):
                continue
            number = _number(value)
            if number is not None:
                is_int = isinstance(value, (int, np.integer))
                summary[f"{prefix}/{key}"] = int(value) if is_int else number
    return summary


def write_figure(evals: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Plot success_rate against S_eval, one line per arm, to the PNG ``path``."""
    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    ax = fig.subplots()
    plotted = False
    if "success_rate" in evals.columns:
        for arm, group in evals.sort_values(["arm", "s_eval"], kind="stable").groupby("arm", sort=True):
            points = [
                (int(s), float(v))
                for s, v in zip(group["s_eval"], group["success_rate"], strict=True)
                if _number(v) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=str(arm))
                plotted = True
    if plotted:
        ax.legend(title="arm")
    else:
        ax.text(0.5, 0.5, "no success_rate values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("S_eval (summaries allowed)")
    ax.set_ylabel("success_rate")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.set_title("Success rate vs S_eval")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out


def write_report(
    evals_dir: str | os.PathLike[str],
    checkpoints_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
) -> Path:
    """Write ``report.md``, ``summary.json`` and the figure into ``out_dir``; return the markdown path."""
    evals = collect_evals(evals_dir)
    training = collect_training(checkpoints_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_figure(evals, out / FIGURE_NAME)
    summary = summary_metrics(evals)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    report = out / "report.md"
    report.write_text(render_markdown(evals, training, figure=FIGURE_NAME), encoding="utf-8")
    return report
