"""Reading the pipeline's outputs for the report: the layout's own parsers (``supo.layout``) and the result records'
own readers (``supo.results``: :class:`~supo.results.EvalResult`, :class:`~supo.results.Outcomes`,
:class:`~supo.results.TrainResult`).

* ``<evals root>/<env>/seed<k>/<arm>/s<N>/metrics.json`` (the docs/design.md §6 metrics of one evaluation, plus
  ``env``, ``arm``, ``seed``, ``s_eval``, ``working_context``, ``split``) and ``outcomes.json`` beside it (each
  rollout's task, success, overlong and error-loop flags, judged and correct summaries, failure class: the per-task
  results the paired statistics need; older files with fewer columns still read, without what they lack);
* ``<checkpoints root>/<env>/seed<k>/<arm>/train_metrics.json`` (the run's per-step history) and ``supo_run.json``.

Identifying values come from the files and must agree with the folders; a malformed file raises ValueError naming it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from supo.layout import (
    EVAL_METRICS_FILE,
    OUTCOMES_FILE,
    ROLLOUTS_FILE,
    STEPS_DIR,
    TRAIN_METRICS_FILE,
    parse_checkpoint_dir,
    parse_eval_dir,
)
from supo.results import FAILURES, EvalResult, Outcomes, RunInfo, TrainResult, read_json

METRIC_KEYS: tuple[str, ...] = (
    "success_rate", "mean_reward", "mean_tool_calls", "mean_summaries", "summary_format_miss_rate",
    "mean_working_context_tokens", "max_working_context_tokens", "effective_context_tokens", "overlong_rate",
    "error_loop_rate", "budget_cut_rate", "masked_rollout_frac", "degenerate_group_frac", "segments_per_rollout",
    "tokens_generated", "tokens_processed", "rollout_seconds", "engine_tokens_per_second",
    "summary_state_accuracy", *(f"failure_{k}_rate" for k in FAILURES), "over_w_segment_frac",
    "max_generation_peak_tokens", "max_steps_rate", "max_steps", "sampling_temperature", "seeded_sampling",
)
"""The docs/design.md §6 metrics an eval metrics.json may carry (each a number, or null)."""

TRAIN_CURVE_KEYS: tuple[str, ...] = ("mean_reward", "success_rate", "overlong_rate", "error_loop_rate",
                                     "budget_cut_rate", "mean_summaries", "clip_frac", "kl_to_init",
                                     "summary_state_accuracy")
"""Per-step training metrics the report reads (each a number, or absent)."""


@dataclass(frozen=True, kw_only=True)
class EvalRun(EvalResult):
    """One evaluation as the report reads it: the :class:`~supo.results.EvalResult` of a checkpoint (env, arm, seed)
    at one S_eval — its ``metrics`` only the finite :data:`METRIC_KEYS` — with where it was read and its per-task
    results."""

    path: Path
    outcomes: Mapping[str, float] = field(default_factory=dict)
    """task id → success (mean over the task's samples)."""
    summaries_judged: Mapping[str, float] = field(default_factory=dict)
    """task id → summaries the env's oracle judged, summed over the task's samples ({} when the env has no oracle or
    the outcomes predate the column)."""
    summaries_correct: Mapping[str, float] = field(default_factory=dict)
    """task id → of those, summaries that carried the state needed to continue (summed like ``summaries_judged``)."""
    failures: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """failure class (``supo.results.FAILURES``) → task id → share of the task's samples that failed so ({} when the
    outcomes carry no failure classes: written before the column existed)."""


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
            info = RunInfo.read(self.checkpoint)
        except (OSError, ValueError):
            return None
        return info.mlflow_run_id if info is not None else None


def _json_object(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _agree(path: Path, data: Mapping[str, Any], from_dirs: Mapping[str, Any]) -> None:
    for key, value in from_dirs.items():
        if key in data and data[key] is not None and data[key] != value:
            raise ValueError(f"{path}: {key!r} is {data[key]!r} but the folder says {value!r}")


def _read_outcomes(folder: Path) -> Outcomes | None:
    """``outcomes.json`` (else the records of ``rollouts.jsonl``; None when neither exists)."""
    if (folder / OUTCOMES_FILE).exists():
        return Outcomes.read(folder)
    if (folder / ROLLOUTS_FILE).exists():
        with open(folder / ROLLOUTS_FILE, encoding="utf-8") as f:
            return Outcomes.from_rollout_records(json.loads(line) for line in f if line.strip())
    return None


def _per_task(outcomes: Outcomes | None) -> dict[str, Any]:
    """The per-task fields of an :class:`EvalRun` from its outcomes: success; the judged and correct summary sums
    (only when every rollout was judgeable: −1 marks an env without an oracle, or rows written before the columns
    existed); the failure shares per class (only when every failed rollout carries its class: old rows read as "")."""
    if outcomes is None:
        return {}
    out: dict[str, Any] = {"outcomes": outcomes.success_by_task()}
    if outcomes.rows and min(outcomes.column("summaries_judged") + outcomes.column("summaries_correct")) >= 0:
        out["summaries_judged"] = outcomes.sums_by_task("summaries_judged")
        out["summaries_correct"] = outcomes.sums_by_task("summaries_correct")
    if all(f or s for s, f in zip(outcomes.column("success"), outcomes.column("failure"), strict=True)):
        out["failures"] = {k: outcomes.failure_by_task(k) for k in FAILURES}
    return out


def _parse_eval(path: Path, root: Path) -> EvalRun:
    data = _json_object(path)
    where = parse_eval_dir(path.parent, root)
    _agree(path, data, where)
    env = data.get("env", where.get("env"))
    if not isinstance(env, str) or not env:
        raise ValueError(f"{path}: missing 'env' (not in the file, and the folders are not <env>/seed<k>/<arm>/s<N>)")
    result = EvalResult.from_json(data, str(path), defaults=where)
    metrics: dict[str, float] = {}
    for key in METRIC_KEYS:
        value = result.metrics.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise ValueError(f"{path}: metric {key!r} must be a finite number, got {value!r}")
        metrics[key] = float(value)
    if "success_rate" not in metrics or not 0.0 <= metrics["success_rate"] <= 1.0:
        raise ValueError(f"{path}: 'success_rate' must be a number in [0, 1]")
    read = {f.name: getattr(result, f.name) for f in fields(EvalResult)}  # arm, seed, s_eval agree with the folders
    return EvalRun(**{**read, "metrics": metrics}, path=path, **_per_task(_read_outcomes(path.parent)))


def collect_evals(evals_root: str | os.PathLike[str]) -> list[EvalRun]:
    """Every ``<evals_root>/<env>/seed<k>/<arm>/s<N>/metrics.json`` (or ``<evals_root>/seed<k>/<arm>/s<N>/...`` when
    the stages ran without ``--env``: the env is read from the file), sorted by (env, arm, seed, s_eval); raises
    FileNotFoundError when there is none."""
    root = Path(evals_root)
    paths = sorted({*root.glob(f"*/seed*/*/s*/{EVAL_METRICS_FILE}"), *root.glob(f"seed*/*/s*/{EVAL_METRICS_FILE}")}
                   ) if root.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"no eval metrics found: no <env>/seed<k>/<arm>/s<N>/{EVAL_METRICS_FILE} under {root}")
    runs = [_parse_eval(p, root) for p in paths]
    return sorted(runs, key=lambda r: (r.env, r.arm, r.seed, r.s_eval))


def _parse_training(path: Path, root: Path) -> TrainRun:
    data = _json_object(path)
    where = parse_checkpoint_dir(path.parent, root)
    _agree(path, data, where)
    result = TrainResult.from_json(data, str(path), defaults=where)
    for i, row in enumerate(result.history):
        for key in TRAIN_CURVE_KEYS:
            if row.get(key) is not None and not _is_number(row[key]) and not (isinstance(row[key], float)
                                                                            and math.isnan(row[key])):
                raise ValueError(f"{path}: history[{i}] {key!r} must be a number, got {row[key]!r}")
    return TrainRun(env=result.env, arm=where["arm"], seed=where["seed"], algo=result.algo,
                    max_summaries=result.max_summaries, working_context=result.working_context,
                    history=tuple(sorted(result.history, key=lambda row: row["step"])), path=path)


def collect_training(checkpoints_root: str | os.PathLike[str]) -> list[TrainRun]:
    """Every ``<checkpoints_root>/<env>/seed<k>/<arm>/train_metrics.json`` (not those of resumable ``steps/``
    states), sorted by (env, arm, seed); [] when there is none."""
    root = Path(checkpoints_root)
    if not root.is_dir():
        return []
    found = {*root.glob(f"*/seed*/*/{TRAIN_METRICS_FILE}"), *root.glob(f"seed*/*/{TRAIN_METRICS_FILE}")}  # or no env
    paths = [p for p in sorted(found) if STEPS_DIR not in p.parts[-3:-1]]
    return sorted((_parse_training(p, root) for p in paths), key=lambda r: (r.env, r.arm, r.seed))
