"""Reading the pipeline's outputs for the report, with the layout's own parsers (``supo.layout``).

* ``<evals root>/<env>/seed<k>/<arm>/s<N>/metrics.json`` (the docs/design.md §6 metrics of one evaluation, plus
  ``env``, ``arm``, ``seed``, ``s_eval``, ``working_context``, ``split``) and ``outcomes.json`` beside it (each
  rollout's task, success, overlong and error-loop flags: the per-task results the paired statistics need);
* ``<checkpoints root>/<env>/seed<k>/<arm>/train_metrics.json`` (the run's per-step history) and ``supo_run.json``.

Identifying values come from the files and must agree with the folders; a malformed file raises ValueError naming it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supo.layout import (
    EVAL_METRICS_FILE,
    OUTCOMES_FILE,
    ROLLOUTS_FILE,
    RUN_FILE,
    STEPS_DIR,
    TRAIN_METRICS_FILE,
    parse_checkpoint_dir,
    parse_eval_dir,
)

METRIC_KEYS: tuple[str, ...] = (
    "success_rate", "mean_reward", "mean_tool_calls", "mean_summaries", "summary_format_miss_rate",
    "mean_working_context_tokens", "max_working_context_tokens", "effective_context_tokens", "overlong_rate",
    "error_loop_rate", "budget_cut_rate", "masked_rollout_frac", "degenerate_group_frac", "segments_per_rollout",
    "tokens_generated", "tokens_processed", "rollout_seconds", "engine_tokens_per_second",
)
"""The docs/design.md §6 metrics an eval metrics.json may carry (each a number, or null)."""

TRAIN_CURVE_KEYS: tuple[str, ...] = ("mean_reward", "success_rate", "overlong_rate", "error_loop_rate",
                                     "budget_cut_rate", "mean_summaries", "clip_frac", "kl_to_init")
"""Per-step training metrics the report reads (each a number, or absent)."""


@dataclass(frozen=True)
class EvalRun:
    """One evaluation: a checkpoint (env, arm, seed) at one S_eval, its metrics and per-task successes."""

    env: str
    arm: str
    seed: int
    s_eval: int
    working_context: int | None
    split: str
    metrics: Mapping[str, float]
    path: Path
    outcomes: Mapping[str, float] = field(default_factory=dict)
    """task id → success (mean over the task's samples)."""


@dataclass(frozen=True)
class TrainRun:
    """One training run (env, arm, seed) and its per-step history."""

    env: str
    arm: str
    seed: int
    algo: str | None
    max_summaries: int | None
    working_context: int | None
    history: tuple[Mapping[str, Any], ...]
    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path.parent

    def run_id(self) -> str | None:
        """The MLflow run id in the checkpoint's ``supo_run.json`` (None when absent or unreadable)."""
        try:
            data = json.loads((self.checkpoint / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        run_id = data.get("mlflow_run_id") if isinstance(data, dict) else None
        return run_id if isinstance(run_id, str) and run_id else None


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _agree(path: Path, data: Mapping[str, Any], from_dirs: Mapping[str, Any]) -> None:
    for key, value in from_dirs.items():
        if key in data and data[key] is not None and data[key] != value:
            raise ValueError(f"{path}: {key!r} is {data[key]!r} but the folder says {value!r}")


def _outcomes(folder: Path) -> dict[str, float]:
    """task id → mean success, from ``outcomes.json`` (else from ``rollouts.jsonl``; {} when neither exists)."""
    per_task: dict[str, list[float]] = {}
    path = folder / OUTCOMES_FILE
    if path.exists():
        data = _json_object(path)
        rows = data.get("rollouts")
        if not isinstance(rows, list):
            raise ValueError(f"{path}: 'rollouts' must be a list of [task_id, index, success, ...]")
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) >= 3 and isinstance(row[0], str) and row[2] in (0, 1)):
                raise ValueError(f"{path}: rollouts[{i}] must be [task_id, index, success (0/1), ...], got {row!r}")
            per_task.setdefault(row[0], []).append(float(row[2]))
    elif (folder / ROLLOUTS_FILE).exists():
        with open(folder / ROLLOUTS_FILE, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    per_task.setdefault(str(r["task_id"]), []).append(
                        float(bool(r.get("finished")) and float(r.get("reward", 0.0)) > 0))
    return {t: sum(v) / len(v) for t, v in per_task.items()}


def _parse_eval(path: Path, root: Path) -> EvalRun:
    data = _json_object(path)
    where = parse_eval_dir(path.parent, root)
    _agree(path, data, where)
    env = data.get("env", where.get("env"))
    if not isinstance(env, str) or not env:
        raise ValueError(f"{path}: missing 'env' (not in the file, and the folders are not <env>/seed<k>/<arm>/s<N>)")
    metrics: dict[str, float] = {}
    for key in METRIC_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise ValueError(f"{path}: metric {key!r} must be a finite number, got {value!r}")
        metrics[key] = float(value)
    if "success_rate" not in metrics or not 0.0 <= metrics["success_rate"] <= 1.0:
        raise ValueError(f"{path}: 'success_rate' must be a number in [0, 1]")
    wc = data.get("working_context")
    if wc is not None and not (_is_int(wc) and wc > 0):
        raise ValueError(f"{path}: invalid 'working_context' {wc!r}")
    return EvalRun(env=env, arm=where["arm"], seed=where["seed"], s_eval=where["s_eval"], working_context=wc,
                   split=str(data.get("split", "test")), metrics=metrics, path=path,
                   outcomes=_outcomes(path.parent))


def collect_evals(evals_root: str | os.PathLike[str]) -> list[EvalRun]:
    """Every ``<evals_root>/<env>/seed<k>/<arm>/s<N>/metrics.json``, sorted by (env, arm, seed, s_eval); raises
    FileNotFoundError when there is none."""
    root = Path(evals_root)
    paths = sorted(root.glob(f"*/seed*/*/s*/{EVAL_METRICS_FILE}")) if root.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"no eval metrics found: no <env>/seed<k>/<arm>/s<N>/{EVAL_METRICS_FILE} under {root}")
    runs = [_parse_eval(p, root) for p in paths]
    return sorted(runs, key=lambda r: (r.env, r.arm, r.seed, r.s_eval))


def _parse_training(path: Path, root: Path) -> TrainRun:
    data = _json_object(path)
    where = parse_checkpoint_dir(path.parent, root)
    _agree(path, data, where)
    history = data.get("history")
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise ValueError(f"{path}: 'history' must be a list of objects")
    steps: set[int] = set()
    for i, row in enumerate(history):
        step = row.get("step")
        if not _is_int(step) or step in steps:
            raise ValueError(f"{path}: history[{i}] needs a distinct integer 'step', got {step!r}")
        steps.add(step)
        for key in TRAIN_CURVE_KEYS:
            if row.get(key) is not None and not _is_number(row[key]) and not (isinstance(row[key], float)
                                                                            and math.isnan(row[key])):
                raise ValueError(f"{path}: history[{i}] {key!r} must be a number, got {row[key]!r}")
    opt_int = lambda k: data.get(k) if _is_int(data.get(k)) else None  # noqa: E731
    return TrainRun(env=data.get("env", where.get("env")), arm=where["arm"], seed=where["seed"],
                    algo=data.get("algo"), max_summaries=opt_int("max_summaries"),
                    working_context=opt_int("working_context"),
                    history=tuple(sorted(history, key=lambda row: row["step"])), path=path)


def collect_training(checkpoints_root: str | os.PathLike[str]) -> list[TrainRun]:
    """Every ``<checkpoints_root>/<env>/seed<k>/<arm>/train_metrics.json`` (not those of resumable ``steps/``
    states), sorted by (env, arm, seed); [] when there is none."""
    root = Path(checkpoints_root)
    if not root.is_dir():
        return []
    paths = [p for p in sorted(root.glob(f"*/seed*/*/{TRAIN_METRICS_FILE}")) if STEPS_DIR not in p.parts[-3:-1]]
    return sorted((_parse_training(p, root) for p in paths), key=lambda r: (r.env, r.arm, r.seed))
