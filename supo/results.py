"""What the stages write and read back: typed result records, one owner of their JSON (docs/design.md §6; paths in
:mod:`supo.layout`).

* :class:`TrainResult` — a training run: what was trained (env, arm, seed, algo, S, W) and its per-step history
  (R7–R11's metrics); written into its checkpoint folder as ``train_metrics.json``, with :class:`RunInfo`
  (``supo_run.json``: the same identity, the steps done and the MLflow run) beside it; :meth:`TrainResult.summary`
  is what ``metrics/train.json`` holds per (seed, arm).
* :class:`EvalResult` — one evaluation at one S_eval (R12): identity plus the §6 metrics, ``metrics.json``;
  :class:`Outcomes` — each rollout's task, success, overlong and error-loop flags, ``outcomes.json`` (the per-task
  results the report's paired statistics need); :meth:`EvalResult.numbers` is what ``metrics/eval.json`` holds.
* :class:`SftResult` — the warm start's counts and final loss, ``metrics/sft.json``.

Every record has ``to_json`` / ``from_json``; ``from_json`` checks types and raises ValueError naming the file
(``where``) and the field. Files carry ``schema_version`` (:data:`SCHEMA_VERSION`); a file without one was written
before versioning, in the same layout (version 1), and a newer version than this code knows is refused. The DVC
summaries (:meth:`TrainResult.summary`, :meth:`EvalResult.numbers`) carry numbers only, no version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supo.layout import EVAL_METRICS_FILE, OUTCOMES_FILE, RUN_FILE, TRAIN_METRICS_FILE

SCHEMA_VERSION = 1
SCHEMA_KEY = "schema_version"

SUMMARY_KEYS = ("mean_reward", "success_rate", "mean_summaries", "mean_tool_calls", "overlong_rate")
"""The per-step metrics :meth:`TrainResult.summary` reports at the first and the last step."""
MEAN_SECONDS_KEYS = ("step_seconds", "rollout_seconds", "train_seconds", "weight_sync_seconds",
                     "engine_tokens_per_second")
"""The per-step timings :meth:`TrainResult.summary` averages over the run (``mean_<key>``)."""


# --------------------------------------------------------------------------------------------------------------------
# checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    version = data.get(SCHEMA_KEY, SCHEMA_VERSION)
    if not _is_int(version) or version < 1:
        raise ValueError(f"{where}: {SCHEMA_KEY} must be an integer ≥ 1, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(f"{where}: {SCHEMA_KEY} {version} is newer than this supo reads ({SCHEMA_VERSION})")
    return data


def _get(data: Mapping[str, Any], key: str, ok, expected: str, where: str, default: Any = ..., *,
         optional: bool = False) -> Any:
    """``data[key]`` checked by ``ok``; ``default`` when absent (a field without a default is required);
    ``optional``: null reads as None."""
    if key not in data:
        if default is ...:
            raise ValueError(f"{where}: missing {key!r} ({expected})")
        return default
    value = data[key]
    if value is None and optional:
        return None
    if not ok(value):
        raise ValueError(f"{where}: {key!r} must be {expected}, got {value!r}")
    return value


def _str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def read_json(path: str | Path) -> Any:
    """A JSON file's value; ValueError naming the file when it does not parse."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _write(path: Path, data: Any, indent: int | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent) + "\n")
    return path


# --------------------------------------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class RunInfo:
    """``supo_run.json`` in a checkpoint folder: what was trained, how far, and its MLflow run (``eval`` labels and
    links its runs by it)."""

    arm: str
    algo: str | None
    seed: int
    max_summaries: int | None
    working_context: int | None
    steps_done: int
    mlflow_run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {SCHEMA_KEY: SCHEMA_VERSION, "arm": self.arm, "algo": self.algo, "seed": self.seed,
                "max_summaries": self.max_summaries, "working_context": self.working_context,
                "steps_done": self.steps_done, "mlflow_run_id": self.mlflow_run_id}

    @classmethod
    def from_json(cls, data: Any, where: str = RUN_FILE) -> RunInfo:
        d = _object(data, where)
        return cls(arm=_get(d, "arm", _str, "a non-empty string", where),
                   algo=_get(d, "algo", _str, "a string", where, None, optional=True),
                   seed=_get(d, "seed", _is_int, "an integer", where),
                   max_summaries=_get(d, "max_summaries", _is_int, "an integer", where, None, optional=True),
                   working_context=_get(d, "working_context", _is_int, "an integer", where, None, optional=True),
                   steps_done=_get(d, "steps_done", _is_int, "an integer", where, 0),
                   mlflow_run_id=_get(d, "mlflow_run_id", _str, "a run id", where, None, optional=True))

    @classmethod
    def read(cls, checkpoint: str | Path) -> RunInfo | None:
        """The run info of a checkpoint folder; None when it has none (a warm start, an imported model)."""
        path = Path(checkpoint) / RUN_FILE
        return cls.from_json(read_json(path), str(path)) if path.exists() else None


@dataclass(frozen=True)
class TrainResult:
    """A training run: identity (env, arm, seed, algo, S, W) and its per-step metric history."""

    env: str | None
    arm: str
    seed: int
    algo: str | None
    max_summaries: int | None
    working_context: int | None
    history: tuple[Mapping[str, Any], ...]
    mlflow_run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``train_metrics.json``."""
        return {SCHEMA_KEY: SCHEMA_VERSION, "env": self.env, "arm": self.arm, "seed": self.seed, "algo": self.algo,
                "max_summaries": self.max_summaries, "working_context": self.working_context,
                "history": [dict(h) for h in self.history]}

    @classmethod
    def from_json(cls, data: Any, where: str = TRAIN_METRICS_FILE, defaults: Mapping[str, Any] | None = None,
                  mlflow_run_id: str | None = None) -> TrainResult:
        """``defaults``: identifying values the file may leave out (the report takes them from the folders)."""
        d = {**(defaults or {}), **_object(data, where)}
        history = d.get("history")
        if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
            raise ValueError(f"{where}: 'history' must be a list of objects")
        steps: set[int] = set()
        for i, row in enumerate(history):
            step = row.get("step")
            if not _is_int(step) or step in steps:
                raise ValueError(f"{where}: history[{i}] needs a distinct integer 'step', got {step!r}")
            steps.add(step)
        opt_int = lambda k: d.get(k) if _is_int(d.get(k)) else None  # noqa: E731 - tolerated: older files
        return cls(env=_get(d, "env", _str, "a non-empty string", where, None, optional=True),
                   arm=_get(d, "arm", _str, "a non-empty string", where),
                   seed=_get(d, "seed", _is_int, "an integer", where),
                   algo=_get(d, "algo", _str, "a string", where, None, optional=True),
                   max_summaries=opt_int("max_summaries"), working_context=opt_int("working_context"),
                   history=tuple(history), mlflow_run_id=mlflow_run_id)

    @property
    def run_info(self) -> RunInfo:
        return RunInfo(self.arm, self.algo, self.seed, self.max_summaries, self.working_context, len(self.history),
                       self.mlflow_run_id)

    def write(self, folder: str | Path) -> Path:
        """``supo_run.json`` and ``train_metrics.json`` in the checkpoint folder ``folder``."""
        folder = Path(folder)
        _write(folder / RUN_FILE, self.run_info.to_json(), indent=2)
        _write(folder / TRAIN_METRICS_FILE, self.to_json(), indent=1)
        return folder

    @classmethod
    def read(cls, folder: str | Path, defaults: Mapping[str, Any] | None = None) -> TrainResult:
        """A checkpoint folder's result (its run info's MLflow run id attached when the run info reads)."""
        folder = Path(folder)
        path = folder / TRAIN_METRICS_FILE
        try:
            info = RunInfo.read(folder)
        except (OSError, ValueError):
            info = None
        return cls.from_json(read_json(path), str(path), defaults, info.mlflow_run_id if info else None)

    def summary(self, run_seconds: float) -> dict[str, Any]:
        """What ``metrics/train.json`` holds for this run: identity, the first and last step's
        :data:`SUMMARY_KEYS`, the mean of each :data:`MEAN_SECONDS_KEYS` and the run's wall time."""
        if not self.history:
            raise ValueError(f"train {self.arm} seed {self.seed}: no step in the history to summarise")
        first, last, n = self.history[0], self.history[-1], len(self.history)
        return {"env": self.env, "arm": self.arm, "seed": self.seed, "steps": n,
                **{f"first_{k}": first[k] for k in SUMMARY_KEYS}, **{f"last_{k}": last[k] for k in SUMMARY_KEYS},
                **{f"mean_{k}": sum(h[k] for h in self.history) / n for k in MEAN_SECONDS_KEYS},
                "run_seconds": run_seconds}


# --------------------------------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class EvalResult:
    """One evaluation of a checkpoint at one S_eval: identity, sampling settings and the §6 metrics."""

    env: str
    arm: str
    seed: int
    s_eval: int
    working_context: int | None
    split: str
    metrics: Mapping[str, float | None]
    checkpoint: str | None = None
    num_rollouts: int | None = None
    temperature: float | None = None
    sweep_max_summaries: int | None = None
    """The S_eval of the run this result was read off (a sweep reads every smaller S_eval off one run)."""

    _IDENTITY = ("env", "arm", "seed", "s_eval", "working_context", "split", "checkpoint", "num_rollouts",
                 "temperature", "sweep_max_summaries")

    def _identity(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._IDENTITY}
        return {k: v for k, v in out.items() if v is not None or k == "working_context"}

    def to_json(self) -> dict[str, Any]:
        """``metrics.json``: the identity, then every metric."""
        clash = set(self.metrics) & set(self._IDENTITY + (SCHEMA_KEY,))
        if clash:
            raise ValueError(f"eval {self.arm}: metric names {sorted(clash)} clash with the result's fields")
        return {SCHEMA_KEY: SCHEMA_VERSION, **self._identity(), **self.metrics}

    def numbers(self) -> dict[str, float]:
        """What ``metrics/eval.json`` holds for this S_eval: every number of :meth:`to_json` but the version."""
        return {k: v for k, v in self.to_json().items() if _is_number(v) and k != SCHEMA_KEY}

    @classmethod
    def from_json(cls, data: Any, where: str = EVAL_METRICS_FILE, defaults: Mapping[str, Any] | None = None
                  ) -> EvalResult:
        """``defaults``: identifying values the file may leave out (the report takes them from the folders).
        Every key that is not an identifying field is a metric: a number or null."""
        d = {**(defaults or {}), **_object(data, where)}
        metrics: dict[str, float | None] = {}
        for key, value in d.items():
            if key in cls._IDENTITY or key == SCHEMA_KEY:
                continue
            if value is not None and not _is_number(value):
                raise ValueError(f"{where}: metric {key!r} must be a number, got {value!r}")
            metrics[key] = value
        wc = _get(d, "working_context", lambda v: _is_int(v) and v > 0, "an integer > 0", where, None, optional=True)
        return cls(env=_get(d, "env", _str, "a non-empty string (the environment)", where),
                   arm=_get(d, "arm", _str, "a non-empty string", where),
                   seed=_get(d, "seed", _is_int, "an integer", where),
                   s_eval=_get(d, "s_eval", lambda v: _is_int(v) and v >= 0, "an integer ≥ 0", where),
                   working_context=wc, split=_get(d, "split", _str, "a split name", where, "test"), metrics=metrics,
                   checkpoint=_get(d, "checkpoint", _str, "a path", where, None, optional=True),
                   num_rollouts=_get(d, "num_rollouts", _is_int, "an integer", where, None, optional=True),
                   temperature=_get(d, "temperature", _is_number, "a number", where, None, optional=True),
                   sweep_max_summaries=_get(d, "sweep_max_summaries", _is_int, "an integer", where, None,
                                            optional=True))

    def write(self, folder: str | Path) -> Path:
        return _write(Path(folder) / EVAL_METRICS_FILE, self.to_json(), indent=2)

    @classmethod
    def read(cls, folder: str | Path, defaults: Mapping[str, Any] | None = None) -> EvalResult:
        path = Path(folder) / EVAL_METRICS_FILE
        return cls.from_json(read_json(path), str(path), defaults)


FAILURES = ("wrong_summary", "action_error", "wrong_answer", "budget_cut")
"""Why a rollout failed (:func:`failure_kind`): what went wrong first — a summary the env's oracle judged wrong, or an
``Error:`` observation (a malformed or impossible call); else an answer given with every summary right (or none
made); else the budget ran out (H, S, or the engine's limit) on valid calls with right summaries."""


def failure_kind(r) -> str:
    """A rollout's failure class (``FAILURES``), or ``""`` for a success."""
    if r.finished and r.reward > 0:
        return ""
    if r.first_failure is not None:
        return r.first_failure
    return "wrong_answer" if r.finished else "budget_cut"


@dataclass(frozen=True)
class Outcomes:
    """Per-rollout results of one evaluation, in item order (``COLUMNS``): task, sample index, success, overlong and
    error-loop flags, summaries made, summaries the env's oracle judged and found right (−1 each where the env has
    no oracle), and the failure class (:func:`failure_kind`; ``""`` for a success)."""

    split: str
    rows: tuple[tuple, ...] = field(default_factory=tuple)

    COLUMNS = ("task_id", "index", "success", "overlong", "error_loop", "summaries", "summaries_judged",
               "summaries_correct", "failure")
    _DEFAULTS = (0, 0, 0, -1, -1, "")  # what rows written before a column existed read as, from "overlong" on

    @classmethod
    def from_rollouts(cls, rollouts: Sequence, split: str, judged: bool = True) -> Outcomes:
        """Success is an answered rollout with a positive reward; an error loop is an overlong rollout that saw an
        ``Error:`` observation. ``judged`` False: the env has no summary oracle (−1 in both summary columns)."""
        return cls(split, tuple((r.task_id, r.index, int(r.finished and r.reward > 0), int(r.overlong),
                                 int(r.overlong and r.error_observations > 0), r.num_summaries,
                                 r.summaries_judged if judged else -1, r.summaries_correct if judged else -1,
                                 failure_kind(r)) for r in rollouts))

    @classmethod
    def from_rollout_records(cls, records: Iterable[Mapping[str, Any]], split: str = "test") -> Outcomes:
        """From ``rollouts.jsonl`` records (folders written before ``outcomes.json`` existed)."""
        return cls(split, tuple((str(r["task_id"]), int(r.get("index", 0)),
                                 int(bool(r.get("finished")) and float(r.get("reward", 0.0)) > 0),
                                 int(bool(r.get("overlong"))), 0, int(r.get("num_summaries", 0)), -1, -1, "")
                                for r in records))

    def to_json(self) -> dict[str, Any]:
        return {SCHEMA_KEY: SCHEMA_VERSION, "split": self.split, "columns": list(self.COLUMNS),
                "rollouts": [list(r) for r in self.rows]}

    @classmethod
    def from_json(cls, data: Any, where: str = OUTCOMES_FILE) -> Outcomes:
        d = _object(data, where)
        rows = d.get("rollouts")
        if not isinstance(rows, list):
            raise ValueError(f"{where}: 'rollouts' must be a list of [task_id, index, success, ...]")
        out = []
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) >= 3 and isinstance(row[0], str) and row[2] in (0, 1)):
                raise ValueError(f"{where}: rollouts[{i}] must be [task_id, index, success (0/1), ...], got {row!r}")
            rest = list(row[3:]) + list(cls._DEFAULTS[len(row) - 3:])
            if len(rest) != len(cls._DEFAULTS) or not all(isinstance(x, int) for x in rest[:5]) or \
                    rest[5] not in ("", *FAILURES):
                raise ValueError(f"{where}: rollouts[{i}] must be [{', '.join(cls.COLUMNS)}] (integers, the failure "
                                 f"one of {FAILURES} or \"\"), got {row!r}")
            out.append((row[0], int(row[1]), int(row[2]), *rest))
        return cls(str(d.get("split", "test")), tuple(out))

    def write(self, folder: str | Path) -> Path:
        return _write(Path(folder) / OUTCOMES_FILE, self.to_json(), indent=None)

    @classmethod
    def read(cls, folder: str | Path) -> Outcomes:
        path = Path(folder) / OUTCOMES_FILE
        return cls.from_json(read_json(path), str(path))

    def success_by_task(self) -> dict[str, float]:
        """task id → mean success over the task's rollouts."""
        per_task: dict[str, list[float]] = {}
        for task_id, _index, success, *_ in self.rows:
            per_task.setdefault(task_id, []).append(float(success))
        return {t: sum(v) / len(v) for t, v in per_task.items()}

    def column(self, name: str) -> list:
        """One column's values, in row order."""
        k = self.COLUMNS.index(name)
        return [row[k] for row in self.rows]

    def sums_by_task(self, name: str) -> dict[str, float]:
        """task id → the sum of a numeric column over the task's rollouts (e.g. ``summaries_judged``)."""
        k, per_task = self.COLUMNS.index(name), {}
        for row in self.rows:
            per_task[row[0]] = per_task.get(row[0], 0.0) + float(row[k])
        return per_task

    def failure_by_task(self, kind: str) -> dict[str, float]:
        """task id → the share of the task's rollouts that failed as ``kind`` (one of ``FAILURES``)."""
        if kind not in FAILURES:
            raise ValueError(f"unknown failure class {kind!r}; one of {FAILURES}")
        per_task: dict[str, list[float]] = {}
        for row in self.rows:
            per_task.setdefault(row[0], []).append(float(row[-1] == kind))
        return {t: sum(v) / len(v) for t, v in per_task.items()}


# --------------------------------------------------------------------------------------------------------------------
# warm start


@dataclass(frozen=True)
class SftResult:
    """The warm start (``supo-cli sft``): steps, demonstration rows, the final smoothed loss, seconds."""

    sft_steps: int
    sft_rows: int
    sft_final_loss_ema: float | None
    sft_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"sft_steps": self.sft_steps, "sft_rows": self.sft_rows,
                "sft_final_loss_ema": self.sft_final_loss_ema, "sft_seconds": self.sft_seconds}

    def numbers(self) -> dict[str, float]:
        """The numbers logged to the sft run's MLflow metrics."""
        return {k: v for k, v in self.to_json().items() if _is_number(v)}

    @classmethod
    def from_json(cls, data: Any, where: str = "sft.json") -> SftResult:
        d = _object(data, where)
        loss = _get(d, "sft_final_loss_ema", lambda v: _is_number(v) and math.isfinite(v), "a finite number",
                    where, None, optional=True)
        return cls(sft_steps=_get(d, "sft_steps", _is_int, "an integer", where),
                   sft_rows=_get(d, "sft_rows", _is_int, "an integer", where), sft_final_loss_ema=loss,
                   sft_seconds=_get(d, "sft_seconds", _is_number, "a number of seconds", where))

    def write(self, path: str | Path) -> Path:
        """The stage's metrics file (``supo.layout.metrics_file(..., "sft")``); the CLI merges its wall time in."""
        return _write(Path(path), {SCHEMA_KEY: SCHEMA_VERSION, **self.to_json()}, indent=2)

    @classmethod
    def read(cls, path: str | Path) -> SftResult:
        return cls.from_json(read_json(path), str(path))
