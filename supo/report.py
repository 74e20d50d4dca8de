"""The results report: paper-style tables, figures and the claims C1–C4, read from the pipeline's metric files.

Inputs (written by ``supo-cli eval --sweep`` and ``supo-cli train``, see dvc.yaml):

* ``<evals_dir>/<env>/seed<k>/<arm>/s<N>/metrics.json``: a flat object with ``env``, ``arm``, ``seed``, ``s_eval``,
  ``working_context`` (the W used), ``split``, ``checkpoint``, ``num_rollouts``, ``temperature`` and the
  docs/design.md §6 metrics. The warm start (SFT model) is the arm ``sft``, seed 0.
* ``<checkpoints_dir>/<env>/seed<k>/<arm>/train_metrics.json``: ``{"env", "arm", "seed", "algo", "max_summaries"
  (S_train), "working_context" (training W), "history": [{"step": 0, "mean_reward": ..., ...}, ...]}``, with the
  training run's MLflow id in ``supo_run.json`` (key ``mlflow_run_id``) next to it.

Outputs of :func:`write_report` (every number is read from the files above; nothing is typed by hand):
``report.md``, ``report.html`` (self-contained: figures as base64 data URIs), ``figures/<env>-success_vs_s_eval.png``,
``figures/<env>-training_curves.png``, ``summary.json`` (flat, for ``dvc metrics``), ``plots/success_vs_s_eval.csv``
and ``plots/training_curves.csv`` (DVC plots). :func:`log_report` stores them in MLflow.

The report is built once as a list of blocks (:class:`Heading`, :class:`Para`, :class:`Bullets`, :class:`Table`,
:class:`Image`) and rendered to markdown and HTML from that same list.

Statistics: "mean ± std" is over seeds; std is the sample standard deviation (ddof = 1), 0 for a single seed. The
claims compare seed means (rules in :func:`claim_c1` … :func:`claim_c4`); each comparison also prints the difference
and whether it exceeds the pooled seed std, so a margin within seed noise is visible as such.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "ArmRoles",
    "Bullets",
    "Claim",
    "Comparison",
    "DEFAULT_ROLES",
    "EnvResults",
    "EvalRun",
    "Heading",
    "Image",
    "METRIC_KEYS",
    "Para",
    "ReportFiles",
    "Stat",
    "Table",
    "TrainRun",
    "analyze",
    "build_blocks",
    "claim_c1",
    "claim_c2",
    "claim_c3",
    "claim_c4",
    "collect_evals",
    "collect_training",
    "compare",
    "log_report",
    "plot_success_vs_s_eval",
    "plot_training_curves",
    "render_html",
    "render_markdown",
    "roles_from_config",
    "summary_metrics",
    "training_curves",
    "write_report",
]

log = logging.getLogger(__name__)

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
    "engine_tokens_per_second",
)
"""The docs/design.md §6 metrics an eval metrics.json may carry (each a number, or null)."""

TRAIN_CURVE_KEYS: tuple[str, ...] = ("mean_reward", "success_rate")
"""The training metrics plotted against step (one panel each)."""

EDGE_STEPS = 5
"""The training table compares the mean reward of the first and the last this-many logged steps."""

HELD, NOT_HELD, NOT_EVALUATED = "held", "not held", "not evaluated"
DASH = "–"
RUN_FILE = "supo_run.json"


# --------------------------------------------------------------------------------------------------------------------
# Arm roles
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmRoles:
    """Which arm plays which part in the claims (arm names are config-driven)."""

    grpo_w: str = "grpo-w"
    """GRPO at the working context W, S = 0."""
    grpo_weff: str = "grpo-weff"
    """GRPO at the effective context W × (S + 1), S = 0."""
    supo: str = "supo"
    """SUPO at W with S summaries."""
    ablations: tuple[str, ...] = ("supo-no-mask", "supo-eq4")
    """SUPO variants that should score lower than SUPO (claim C4)."""
    warm_start: str = "sft"
    """The SFT model, evaluated only."""

    @property
    def grpo_arms(self) -> tuple[str, ...]:
        return (self.grpo_w, self.grpo_weff)

    @property
    def trained_arms(self) -> tuple[str, ...]:
        """The RL arms in report order."""
        return (self.grpo_w, self.grpo_weff, self.supo, *self.ablations)

    @property
    def all_arms(self) -> tuple[str, ...]:
        """Every arm with a role, the warm start first."""
        return (self.warm_start, *self.trained_arms)


DEFAULT_ROLES = ArmRoles()


def roles_from_config(arms: Sequence[str], overrides: Mapping[str, Mapping[str, Any]] | None = None,
                      warm_start: str = DEFAULT_ROLES.warm_start) -> ArmRoles:
    """Assign roles to the pipeline's ``arms`` from their config overrides (``arms.<name>`` of params.yaml).

    An arm is GRPO when its ``train.algo`` is ``grpo`` (without overrides: when its name starts with ``grpo``); a GRPO
    arm with ``budget.use_effective_context`` (without overrides: a name containing ``eff``) is GRPO-Weff, the other
    GRPO-W. The SUPO arm is the one named ``supo``, else the first SUPO arm that overrides nothing but ``train.algo``,
    else the first SUPO arm; the other SUPO arms are the ablations. A role no arm fills keeps its default name (the
    report then says it is missing).
    """
    from supo.tracking import flatten_params  # the MLflow params' flattening; imported here, with mlflow

    overrides = overrides or {}
    grpo_w: list[str] = []
    grpo_weff: list[str] = []
    supo: list[str] = []
    plain_supo: list[str] = []
    for arm in arms:
        if arm in overrides and overrides[arm] is not None:
            flat = flatten_params(overrides[arm])
            algo = str(flat.get("train.algo", "supo"))
            effective = bool(flat.get("budget.use_effective_context", False))
            plain = set(flat) <= {"train.algo"}
        else:
            algo = "grpo" if arm.startswith("grpo") else "supo"
            effective = "eff" in arm
            plain = arm == "supo"
        if algo == "grpo":
            (grpo_weff if effective else grpo_w).append(arm)
        else:
            supo.append(arm)
            if plain:
                plain_supo.append(arm)
    if "supo" in supo:
        main = "supo"
    elif plain_supo:
        main = plain_supo[0]
    elif supo:
        main = supo[0]
    else:
        main = DEFAULT_ROLES.supo
    return ArmRoles(
        grpo_w=grpo_w[0] if grpo_w else DEFAULT_ROLES.grpo_w,
        grpo_weff=grpo_weff[0] if grpo_weff else DEFAULT_ROLES.grpo_weff,
        supo=main,
        ablations=tuple(a for a in supo if a != main),
        warm_start=warm_start,
    )


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------

_S_DIR = re.compile(r"^s(\d+)$")
_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass(frozen=True)
class EvalRun:
    """One eval metrics.json: a checkpoint (env, arm, seed) evaluated at one S_eval."""

    env: str
    arm: str
    seed: int
    s_eval: int
    working_context: int | None
    metrics: Mapping[str, float]
    path: Path


@dataclass(frozen=True)
class TrainRun:
    """One train_metrics.json: a training run (env, arm, seed) and its per-step history."""

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
        """The checkpoint folder (holding ``supo_run.json``)."""
        return self.path.parent


def _load_json_object(path: Path) -> dict[str, Any]:
    """Read ``path`` as a JSON object, raising ValueError naming the file otherwise."""
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


def _path_labels(parts: Sequence[str]) -> dict[str, Any]:
    """env / arm / seed read off the folders ``<env>/<arm>/seed<k>`` (the last three of ``parts``)."""
    labels: dict[str, Any] = {}
    dirs = list(parts)
    if dirs and (m := _SEED_DIR.match(dirs[-1])):
        labels["seed"] = int(m.group(1))
        dirs = dirs[:-1]
    if dirs:
        labels["arm"] = dirs[-1]
    if len(dirs) >= 2:
        labels["env"] = dirs[-2]
    return labels


def _label(path: Path, data: Mapping[str, Any], inferred: Mapping[str, Any], key: str) -> Any:
    """The identifying value ``key``: from the file, else from the folder names; ValueError naming the file."""
    if key in data and data[key] is not None:
        value = data[key]
        if key == "seed":
            if not _is_int(value) or value < 0:
                raise ValueError(f"{path}: invalid 'seed' (expected an integer >= 0, got {value!r})")
        elif not isinstance(value, str) or not value:
            raise ValueError(f"{path}: invalid {key!r} (expected a non-empty string, got {value!r})")
        return value
    if key in inferred:
        return inferred[key]
    raise ValueError(f"{path}: missing {key!r} (not in the file, and the folders are not <env>/<arm>/seed<k>)")


def _optional_int(path: Path, data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if _is_number(value) and float(value).is_integer() and value >= 0:
        return int(value)
    raise ValueError(f"{path}: invalid {key!r} (expected an integer >= 0, got {value!r})")


def _parse_eval(path: Path, root: Path) -> EvalRun:
    data = _load_json_object(path)
    dirs = path.relative_to(root).parts[:-1]  # (..., env, arm, seed<k>, s<N>)
    folder_s = int(_S_DIR.match(dirs[-1]).group(1))  # type: ignore[union-attr]
    inferred = _path_labels(dirs[:-1])
    env, arm, seed = (_label(path, data, inferred, key) for key in ("env", "arm", "seed"))
    s_eval = data.get("s_eval", folder_s)
    if not _is_int(s_eval) or s_eval < 0:
        raise ValueError(f"{path}: invalid 's_eval' (expected an integer >= 0, got {s_eval!r})")
    if s_eval != folder_s:
        raise ValueError(f"{path}: 's_eval' is {s_eval} but the file is in the folder s{folder_s}")
    metrics: dict[str, float] = {}
    for key in METRIC_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise ValueError(f"{path}: metric {key!r} must be a finite number, got {value!r}")
        metrics[key] = float(value)
    if "success_rate" not in metrics:
        raise ValueError(f"{path}: missing the metric 'success_rate'")
    if not 0.0 <= metrics["success_rate"] <= 1.0:
        raise ValueError(f"{path}: 'success_rate' must lie in [0, 1], got {metrics['success_rate']}")
    return EvalRun(env=env, arm=arm, seed=seed, s_eval=s_eval,
                   working_context=_optional_int(path, data, "working_context"), metrics=metrics, path=path)


def collect_evals(evals_dir: str | os.PathLike[str]) -> list[EvalRun]:
    """Every ``<evals_dir>/<env>/seed<k>/<arm>/s<N>/metrics.json``, sorted by (env, arm, seed, s_eval).

    env, arm and seed come from the file (else from the folder names). Raises FileNotFoundError when there is no
    such file, ValueError naming the file for one that is not a JSON object, lacks or mistypes an identifying key or
    a metric, and for two files of the same (env, arm, seed, s_eval).
    """
    root = Path(evals_dir)
    paths = sorted(p for p in root.rglob("metrics.json") if _S_DIR.match(p.parent.name)) if root.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"no eval metrics found: no <env>/seed<k>/<arm>/s<N>/metrics.json under {root}")
    runs: list[EvalRun] = []
    seen: dict[tuple[str, str, int, int], Path] = {}
    for path in paths:
        run = _parse_eval(path, root)
        key = (run.env, run.arm, run.seed, run.s_eval)
        if key in seen:
            raise ValueError(f"{path}: env={run.env!r} arm={run.arm!r} seed={run.seed} s_eval={run.s_eval} "
                             f"already comes from {seen[key]}")
        seen[key] = path
        runs.append(run)
    return sorted(runs, key=lambda r: (r.env, r.arm, r.seed, r.s_eval))


def _parse_training(path: Path, root: Path) -> TrainRun:
    data = _load_json_object(path)
    inferred = _path_labels(path.relative_to(root).parts[:-1])
    env, arm, seed = (_label(path, data, inferred, key) for key in ("env", "arm", "seed"))
    algo = data.get("algo")
    if algo is not None and not isinstance(algo, str):
        raise ValueError(f"{path}: invalid 'algo' (expected a string, got {algo!r})")
    history = data.get("history")
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise ValueError(f"{path}: 'history' must be a list of objects")
    steps: set[int] = set()
    for i, row in enumerate(history):
        step = row.get("step")
        if not _is_int(step):
            raise ValueError(f"{path}: history[{i}] needs an integer 'step', got {step!r}")
        if step in steps:
            raise ValueError(f"{path}: step {step} appears twice in 'history'")
        steps.add(step)
        for key in TRAIN_CURVE_KEYS:
            if row.get(key) is not None and not _is_number(row[key]):
                raise ValueError(f"{path}: history[{i}] {key!r} must be a finite number, got {row[key]!r}")
    return TrainRun(env=env, arm=arm, seed=seed, algo=algo,
                    max_summaries=_optional_int(path, data, "max_summaries"),
                    working_context=_optional_int(path, data, "working_context"),
                    history=tuple(sorted(history, key=lambda row: row["step"])), path=path)


def collect_training(checkpoints_dir: str | os.PathLike[str]) -> list[TrainRun]:
    """Every ``<checkpoints_dir>/<env>/seed<k>/<arm>/train_metrics.json``, sorted by (env, arm, seed).

    A missing folder or no file gives ``[]``; a malformed file (or a second file of the same env, arm and seed)
    raises ValueError naming it. Files under a checkpoint's ``steps/`` folder are not read.
    """
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    runs: list[TrainRun] = []
    seen: dict[tuple[str, str, int], Path] = {}
    for path in sorted(root.rglob("train_metrics.json")):
        if "steps" in path.relative_to(root).parts[:-1]:
            continue
        run = _parse_training(path, root)
        key = (run.env, run.arm, run.seed)
        if key in seen:
            raise ValueError(f"{path}: env={run.env!r} arm={run.arm!r} seed={run.seed} already comes from {seen[key]}")
        seen[key] = path
        runs.append(run)
    return sorted(runs, key=lambda r: (r.env, r.arm, r.seed))


# --------------------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Mean ± sample std (ddof = 1; 0 for one value) of a metric over seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        arr = np.asarray(list(values), dtype=float)
        if arr.size == 0:
            raise ValueError("Stat.of needs at least one value")
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        return cls(mean=float(arr.mean()), std=std, n=int(arr.size))

    def fmt(self, decimals: int = 3, n: bool = True) -> str:
        text = f"{self.mean:.{decimals}f} ± {self.std:.{decimals}f}"
        return f"{text} (n={self.n})" if n else text

    def __str__(self) -> str:
        return self.fmt()


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` (seed means), the difference a − b and the pooled seed std."""

    a: Stat
    b: Stat

    @property
    def diff(self) -> float:
        return self.a.mean - self.b.mean

    @property
    def pooled_std(self) -> float | None:
        """sqrt(((n_a − 1) s_a² + (n_b − 1) s_b²) / (n_a + n_b − 2)); None with one seed on each side."""
        dof = self.a.n + self.b.n - 2
        if dof <= 0:
            return None
        return math.sqrt(((self.a.n - 1) * self.a.std ** 2 + (self.b.n - 1) * self.b.std ** 2) / dof)

    @property
    def beyond_noise(self) -> bool | None:
        """True when |difference| exceeds the pooled seed std; None when there is no seed spread to compare with."""
        pooled = self.pooled_std
        return None if pooled is None else abs(self.diff) > pooled

    def note(self, what: str = "difference") -> str:
        pooled = self.pooled_std
        text = f"{what} {self.diff:+.3f}"
        if pooled is None:
            return f"{text}; one seed per arm, so no seed noise estimate"
        if abs(self.diff) > pooled:
            return f"{text}, exceeds the pooled seed std {pooled:.3f}"
        return f"{text}, within the pooled seed std {pooled:.3f} (margin within noise)"


def compare(a: Stat, b: Stat) -> Comparison:
    """``a`` against ``b``: see :class:`Comparison`."""
    return Comparison(a, b)


# --------------------------------------------------------------------------------------------------------------------
# Claims (pure functions of the aggregated success rates)
# --------------------------------------------------------------------------------------------------------------------

SuccessTable = Mapping[tuple[str, int], Stat]
"""Success rate (mean ± std over seeds) by (arm, S_eval), for one environment."""


@dataclass(frozen=True)
class Claim:
    """A claim's verdict with its evidence. ``numbers`` go into summary.json (prefixed ``<env>.<key>_``)."""

    key: str
    statement: str
    status: str
    rule: str
    evidence: tuple[str, ...] = ()
    numbers: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""
    """Why it was not evaluated (e.g. "missing grpo-w @ S_eval=0")."""

    @property
    def held(self) -> bool | None:
        """True / False, or None when not evaluated."""
        return None if self.status == NOT_EVALUATED else self.status == HELD

    @property
    def label(self) -> str:
        if self.status == NOT_EVALUATED:
            return f"{NOT_EVALUATED} ({self.reason})"
        return f"{self.status} ({self.reason})" if self.reason else self.status


CLAIM_STATEMENTS = {
    "C1": "SUPO beats GRPO-W at the same working context",
    "C2": "SUPO matches or beats GRPO-Weff while its working context stays ≤ W",
    "C3": "SUPO improves when S_eval > S_train",
    "C4": "each ablation scores lower than SUPO",
}


def _at(arm: str, s: int) -> str:
    return f"{arm} @ S_eval={s}"


def _missing(success: SuccessTable, wanted: Sequence[tuple[str, int]]) -> list[str]:
    return [_at(arm, s) for arm, s in wanted if (arm, s) not in success]


def _not_evaluated(key: str, rule: str, reason: str) -> Claim:
    return Claim(key, CLAIM_STATEMENTS[key], NOT_EVALUATED, rule, reason=reason)


def _verdict(ok: bool) -> str:
    return HELD if ok else NOT_HELD


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _cmp_numbers(c: Comparison) -> dict[str, float]:
    out = {"diff": c.diff}
    if c.pooled_std is not None:
        out["pooled_std"] = c.pooled_std
    return out


def claim_c1(success: SuccessTable, s_train: int | None, roles: ArmRoles = DEFAULT_ROLES) -> Claim:
    """C1: held when mean success(supo @ S_eval = S_train) > mean success(grpo-w @ S_eval = 0)."""
    s = "S" if s_train is None else s_train
    rule = f"mean success({roles.supo} @ S_eval={s}) > mean success({roles.grpo_w} @ S_eval=0)"
    if s_train is None:
        return _not_evaluated("C1", rule, "S_train unknown")
    missing = _missing(success, [(roles.supo, s_train), (roles.grpo_w, 0)])
    if missing:
        return _not_evaluated("C1", rule, "missing " + ", ".join(missing))
    c = compare(success[(roles.supo, s_train)], success[(roles.grpo_w, 0)])
    ok = c.a.mean > c.b.mean
    evidence = (f"{_at(roles.supo, s_train)}: {c.a}", f"{_at(roles.grpo_w, 0)}: {c.b}",
                f"{c.a.mean:.3f} > {c.b.mean:.3f}: {_yes(ok)}; {c.note(f'{roles.supo} − {roles.grpo_w}')}")
    return Claim("C1", CLAIM_STATEMENTS["C1"], _verdict(ok), rule, evidence,
                 {"supo_success": c.a.mean, "baseline_success": c.b.mean, **_cmp_numbers(c)})


def claim_c2(success: SuccessTable, s_train: int | None, supo_mean_working_context: float | None,
             supo_working_context: int | None, roles: ArmRoles = DEFAULT_ROLES, *,
             supo_max_working_context: float | None = None) -> Claim:
    """C2: held when mean success(supo @ S) ≥ mean success(grpo-weff @ 0) − tolerance, with tolerance the larger of
    the two arms' seed std, AND SUPO's working context (the mean over seeds of mean_working_context_tokens at
    S_eval = S: each segment's peak) ≤ its W.

    The peak of a segment counts the trigger turn too — the (action, observation) pair that crossed L, dropped
    afterwards, and the summary instruction with the summary (docs/design.md §2 sizes the engine for L + one
    generation + one observation) — so the max over segments may pass W by up to one turn; it is shown, not tested.
    """
    s = "S" if s_train is None else s_train
    rule = (f"mean success({roles.supo} @ S_eval={s}) ≥ mean success({roles.grpo_weff} @ S_eval=0) − tolerance, "
            f"tolerance = max(seed std of the two), AND mean_working_context_tokens({roles.supo} @ S_eval={s}) ≤ W "
            f"(each segment's peak, averaged; the max, which includes the trigger turn, is shown)")
    if s_train is None:
        return _not_evaluated("C2", rule, "S_train unknown")
    missing = _missing(success, [(roles.supo, s_train), (roles.grpo_weff, 0)])
    if (roles.supo, s_train) in success:
        if supo_mean_working_context is None:
            missing.append(f"mean_working_context_tokens of {_at(roles.supo, s_train)}")
        if supo_working_context is None:
            missing.append(f"working_context (W) of {_at(roles.supo, s_train)}")
    if missing:
        return _not_evaluated("C2", rule, "missing " + ", ".join(missing))
    assert supo_mean_working_context is not None and supo_working_context is not None
    c = compare(success[(roles.supo, s_train)], success[(roles.grpo_weff, 0)])
    tolerance = max(c.a.std, c.b.std)
    success_ok = c.a.mean >= c.b.mean - tolerance
    context_ok = supo_mean_working_context <= supo_working_context
    peak = (f"; max {supo_max_working_context:.0f} (trigger turn included)"
            if supo_max_working_context is not None else "")
    evidence = (
        f"{_at(roles.supo, s_train)}: {c.a}", f"{_at(roles.grpo_weff, 0)}: {c.b}",
        f"tolerance = max({c.a.std:.3f}, {c.b.std:.3f}) = {tolerance:.3f}; "
        f"{c.a.mean:.3f} ≥ {c.b.mean:.3f} − {tolerance:.3f} = {c.b.mean - tolerance:.3f}: {_yes(success_ok)}; "
        f"{c.note(f'{roles.supo} − {roles.grpo_weff}')}",
        f"{roles.supo} working context {supo_mean_working_context:.0f} tokens (mean over {c.a.n} seeds{peak}) "
        f"≤ W = {supo_working_context}: {_yes(context_ok)}",
    )
    numbers = {"supo_success": c.a.mean, "baseline_success": c.b.mean, "tolerance": tolerance,
               "success_ok": float(success_ok), "mean_working_context": float(supo_mean_working_context),
               "working_context": float(supo_working_context), "context_ok": float(context_ok), **_cmp_numbers(c)}
    if supo_max_working_context is not None:
        numbers["max_working_context"] = float(supo_max_working_context)
    trivial = "trivially: both arms score 0" if c.a.mean == 0 and c.b.mean == 0 else ""
    return Claim("C2", CLAIM_STATEMENTS["C2"], _verdict(success_ok and context_ok), rule, evidence, numbers,
                 reason=trivial)


def claim_c3(success: SuccessTable, s_train: int | None, roles: ArmRoles = DEFAULT_ROLES) -> Claim:
    """C3: held when max(mean success(supo @ 2S), mean success(supo @ 4S)) > mean success(supo @ S); with one of 2S and
    4S evaluated, that one is used."""
    if s_train is None:
        rule = f"max(mean success({roles.supo} @ 2S), mean success({roles.supo} @ 4S)) > mean success({roles.supo} @ S)"
        return _not_evaluated("C3", rule, "S_train unknown")
    s2, s4 = 2 * s_train, 4 * s_train
    rule = (f"max(mean success({_at(roles.supo, s2)}), mean success({_at(roles.supo, s4)})) "
            f"> mean success({_at(roles.supo, s_train)})")
    if s_train == 0:
        return _not_evaluated("C3", rule, f"{roles.supo} trained with S = 0: no S_eval beyond it")
    missing = _missing(success, [(roles.supo, s_train)])
    beyond = [s for s in (s2, s4) if (roles.supo, s) in success]
    if not beyond:
        missing += _missing(success, [(roles.supo, s2), (roles.supo, s4)])
    if missing:
        return _not_evaluated("C3", rule, "missing " + ", ".join(missing))
    best_s = max(beyond, key=lambda s: (success[(roles.supo, s)].mean, -s))
    c = compare(success[(roles.supo, best_s)], success[(roles.supo, s_train)])
    ok = c.a.mean > c.b.mean
    evidence = (*[f"{_at(roles.supo, s)}: {success[(roles.supo, s)]}" for s in (s_train, *beyond)],
                f"best beyond S_train: S_eval={best_s}, {c.a.mean:.3f} > {c.b.mean:.3f}: {_yes(ok)}; "
                f"{c.note(f'S_eval={best_s} − S_eval={s_train}')}")
    return Claim("C3", CLAIM_STATEMENTS["C3"], _verdict(ok), rule, evidence,
                 {"supo_success": c.b.mean, "best_success": c.a.mean, "best_s_eval": float(best_s),
                  **_cmp_numbers(c)})


def claim_c4(success: SuccessTable, s_train: int | None, roles: ArmRoles = DEFAULT_ROLES) -> Claim:
    """C4: for every ablation a, mean success(a @ S) < mean success(supo @ S); held only when every ablation is
    evaluated and lower, not held as soon as one is not lower."""
    s = "S" if s_train is None else s_train
    rule = f"for every ablation a in {{{', '.join(roles.ablations)}}}: mean success(a @ S_eval={s}) < " \
           f"mean success({roles.supo} @ S_eval={s})"
    if s_train is None:
        return _not_evaluated("C4", rule, "S_train unknown")
    if not roles.ablations:
        return _not_evaluated("C4", rule, "no ablation arms configured")
    if (roles.supo, s_train) not in success:
        return _not_evaluated("C4", rule, "missing " + _at(roles.supo, s_train))
    ref = success[(roles.supo, s_train)]
    evidence = [f"{_at(roles.supo, s_train)}: {ref}"]
    numbers: dict[str, float] = {"supo_success": ref.mean}
    verdicts: list[bool] = []
    missing: list[str] = []
    for ablation in roles.ablations:
        if (ablation, s_train) not in success:
            missing.append(_at(ablation, s_train))
            evidence.append(f"{_at(ablation, s_train)}: not evaluated (missing)")
            continue
        c = compare(ref, success[(ablation, s_train)])
        ok = c.b.mean < c.a.mean
        verdicts.append(ok)
        evidence.append(f"{_at(ablation, s_train)}: {c.b}; {c.b.mean:.3f} < {c.a.mean:.3f}: {_yes(ok)}; "
                        f"{c.note(f'{roles.supo} − {ablation}')}")
        numbers.update({f"{ablation}_held": float(ok), f"{ablation}_success": c.b.mean, f"{ablation}_diff": c.diff})
    if verdicts and not all(verdicts):
        return Claim("C4", CLAIM_STATEMENTS["C4"], NOT_HELD, rule, tuple(evidence), numbers)
    if missing:
        return Claim("C4", CLAIM_STATEMENTS["C4"], NOT_EVALUATED, rule, tuple(evidence), numbers,
                     reason="missing " + ", ".join(missing))
    return Claim("C4", CLAIM_STATEMENTS["C4"], HELD, rule, tuple(evidence), numbers)


# --------------------------------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ArmRow:
    """An arm's Table 1 row: its metrics at its own S_eval."""

    arm: str
    s_eval: int | None
    s_train: int | None
    note: str
    stats: dict[str, Stat]
    max_working_context: float | None
    working_context: int | None


@dataclass
class EnvResults:
    """Everything the report says about one environment."""

    env: str
    s_train: int | None
    """SUPO's training S (from its train_metrics.json, else inferred from the S_eval grid)."""
    s_train_source: str
    arms: list[str]
    evals: list[EvalRun]
    training: list[TrainRun]
    success: dict[tuple[str, int], Stat]
    stats: dict[tuple[str, int], dict[str, Stat]]
    grid: list[int]
    arm_s_eval: dict[str, int | None]
    """The S_eval each arm is shown at in Table 1 (its S_train; the warm start at S)."""
    table1: list[ArmRow]
    claims: list[Claim]
    missing: list[str]


def _ordered(found: Iterable[str], roles: ArmRoles, expected: Sequence[str] = ()) -> list[str]:
    found = set(found)
    order: list[str] = []
    for arm in (*roles.all_arms, *expected, *sorted(found)):
        if arm in found and arm not in order:
            order.append(arm)
    return order


def _mode(values: Iterable[int]) -> int | None:
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v)) if counts else None


def _infer_s_from_grid(grid: Sequence[int]) -> int | None:
    """S from a default sweep {0, 1, S, 2S, 4S}: the largest value / 4 when that is in the grid."""
    if not grid or max(grid) % 4:
        return None
    s = max(grid) // 4
    return s if s > 0 and s in grid and 2 * s in grid else None


def _range_text(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values) if values else "none"


def analyze(evals: Sequence[EvalRun], training: Sequence[TrainRun], roles: ArmRoles = DEFAULT_ROLES, *,
            envs: Sequence[str] = (), arms: Sequence[str] = (), seeds: Sequence[int] = ()) -> list[EnvResults]:
    """Aggregate the runs per environment (in ``envs`` order, then alphabetically) and judge the claims.

    ``envs``, ``arms`` (trained arms) and ``seeds`` are what the pipeline was meant to produce; what of it has no
    file is listed as missing. Defaults: the environments found, the roles' arms and the seeds found.
    """
    found_envs = {r.env for r in evals} | {t.env for t in training}
    env_order = [e for e in envs if e in found_envs] + sorted(found_envs - set(envs))
    expected_arms = list(dict.fromkeys([*(arms or roles.trained_arms)]))
    all_seeds = sorted({r.seed for r in evals if r.arm != roles.warm_start} | {t.seed for t in training})
    expected_seeds = list(seeds) if seeds else all_seeds
    results = [_analyze_env(env, [r for r in evals if r.env == env], [t for t in training if t.env == env], roles,
                            expected_arms, expected_seeds) for env in env_order]
    for env in envs:
        if env not in found_envs:
            results.append(EnvResults(env=env, s_train=None, s_train_source="no files", arms=[], evals=[], training=[],
                                      success={}, stats={}, grid=[], arm_s_eval={}, table1=[],
                                      claims=_claims(env, {}, None, {}, {}, roles, {}),
                                      missing=[f"{env}: no eval and no training files"]))
    return results


def _claims(env: str, success: SuccessTable, s_train: int | None, max_wc: Mapping[tuple[str, int], float],
            wc: Mapping[tuple[str, int], int], roles: ArmRoles,
            mean_wc: Mapping[tuple[str, int], float]) -> list[Claim]:
    key = (roles.supo, s_train) if s_train is not None else None
    return [
        claim_c1(success, s_train, roles),
        claim_c2(success, s_train, mean_wc.get(key) if key else None, wc.get(key) if key else None, roles,
                 supo_max_working_context=max_wc.get(key) if key else None),
        claim_c3(success, s_train, roles),
        claim_c4(success, s_train, roles),
    ]


def _analyze_env(env: str, evals: list[EvalRun], training: list[TrainRun], roles: ArmRoles,
                 expected_arms: Sequence[str], expected_seeds: Sequence[int]) -> EnvResults:
    grid = sorted({r.s_eval for r in evals})
    # S_train of SUPO: its training files, else any SUPO-algo training file, else the default sweep's shape.
    supo_s = [t.max_summaries for t in training if t.arm == roles.supo and t.max_summaries is not None]
    any_s = [t.max_summaries for t in training if t.algo == "supo" and t.max_summaries]
    if supo_s:
        s_train, source = _mode(supo_s), f"max_summaries of {roles.supo}'s train_metrics.json"
    elif any_s:
        s_train, source = _mode(any_s), "max_summaries of the SUPO train_metrics.json files"
    elif (inferred := _infer_s_from_grid(grid)) is not None:
        s_train, source = inferred, "inferred from the S_eval grid {0, 1, S, 2S, 4S} (no SUPO training file)"
    else:
        s_train, source = None, "unknown (no SUPO training file, S_eval grid not of the form {0, 1, S, 2S, 4S})"

    arms = _ordered({r.arm for r in evals} | {t.arm for t in training}, roles, expected_arms)
    groups: dict[tuple[str, int], list[EvalRun]] = {}
    for r in evals:
        groups.setdefault((r.arm, r.s_eval), []).append(r)
    stats: dict[tuple[str, int], dict[str, Stat]] = {}
    max_wc: dict[tuple[str, int], float] = {}
    wc: dict[tuple[str, int], int] = {}
    for key, runs in groups.items():
        stats[key] = {m: Stat.of([r.metrics[m] for r in runs if m in r.metrics])
                      for m in METRIC_KEYS if any(m in r.metrics for r in runs)}
        peaks = [r.metrics["max_working_context_tokens"] for r in runs if "max_working_context_tokens" in r.metrics]
        if peaks:
            max_wc[key] = max(peaks)
        ws = [r.working_context for r in runs if r.working_context is not None]
        if ws:
            wc[key] = min(ws)
    success = {key: s["success_rate"] for key, s in stats.items()}

    arm_s_eval: dict[str, int | None] = {}
    arm_s_train: dict[str, int | None] = {}
    notes: dict[str, str] = {}
    for arm in arms:
        own = [t.max_summaries for t in training if t.arm == arm and t.max_summaries is not None]
        if own:
            arm_s_train[arm] = _mode(own)
        elif arm in roles.grpo_arms:
            arm_s_train[arm] = 0
        elif arm == roles.warm_start:
            arm_s_train[arm] = None
        else:
            arm_s_train[arm] = s_train
            if arm not in (roles.supo, *roles.ablations):
                notes[arm] = "no training file: shown at SUPO's S"
        arm_s_eval[arm] = s_train if arm == roles.warm_start else arm_s_train[arm]
    if roles.warm_start in arms:
        notes[roles.warm_start] = f"warm start (SFT model), shown at SUPO's S_eval = S = {s_train}"

    table1: list[ArmRow] = []
    for arm in arms:
        s = arm_s_eval[arm]
        key = (arm, s) if s is not None else None
        row_stats = stats.get(key, {}) if key else {}
        note = notes.get(arm, "")
        if key and key not in stats and any(a == arm for a, _ in stats):
            note = "; ".join(filter(None, [note, f"not evaluated at S_eval = {s}"]))
        table1.append(ArmRow(arm=arm, s_eval=s, s_train=arm_s_train[arm], note=note, stats=row_stats,
                             max_working_context=max_wc.get(key) if key else None,
                             working_context=wc.get(key) if key else None))

    missing: list[str] = []
    for arm in expected_arms:
        for seed in expected_seeds:
            got = sorted(r.s_eval for r in evals if r.arm == arm and r.seed == seed)
            if not got:
                missing.append(f"{env}/{arm} seed {seed}: no eval files")
            elif lacking := [s for s in grid if s not in got]:
                missing.append(f"{env}/{arm} seed {seed}: no eval at S_eval {_range_text(lacking)}")
            if not any(t.arm == arm and t.seed == seed for t in training):
                missing.append(f"{env}/{arm} seed {seed}: no train_metrics.json")
    if not any(r.arm == roles.warm_start for r in evals):
        missing.append(f"{env}/{roles.warm_start}: no eval files (warm start)")
    elif lacking := [s for s in grid if s not in {r.s_eval for r in evals if r.arm == roles.warm_start}]:
        missing.append(f"{env}/{roles.warm_start}: no eval at S_eval {_range_text(lacking)}")

    return EnvResults(env=env, s_train=s_train, s_train_source=source, arms=arms, evals=evals, training=training,
                      success=success, stats=stats, grid=grid, arm_s_eval=arm_s_eval, table1=table1,
                      claims=_claims(env, success, s_train, max_wc, wc, roles,
                                     {k: v["mean_working_context_tokens"].mean for k, v in stats.items()
                                      if "mean_working_context_tokens" in v}), missing=missing)


def training_curves(training: Sequence[TrainRun]) -> dict[str, list[dict[str, float]]]:
    """Per arm: one row per step with the mean, min and max over seeds of each :data:`TRAIN_CURVE_KEYS` metric."""
    curves: dict[str, list[dict[str, float]]] = {}
    for arm in dict.fromkeys(t.arm for t in training):
        by_step: dict[int, dict[str, list[float]]] = {}
        for t in training:
            if t.arm != arm:
                continue
            for row in t.history:
                cell = by_step.setdefault(row["step"], {k: [] for k in TRAIN_CURVE_KEYS})
                for k in TRAIN_CURVE_KEYS:
                    if row.get(k) is not None:
                        cell[k].append(float(row[k]))
        rows = []
        for step in sorted(by_step):
            row: dict[str, float] = {"step": step}
            for k, values in by_step[step].items():
                if values:
                    row.update({k: float(np.mean(values)), f"{k}_min": min(values), f"{k}_max": max(values)})
            rows.append(row)
        curves[arm] = rows
    return curves


def _edge_means(run: TrainRun, key: str = "mean_reward") -> tuple[float, float] | None:
    values = [float(row[key]) for row in run.history if row.get(key) is not None]
    if not values:
        return None
    return float(np.mean(values[:EDGE_STEPS])), float(np.mean(values[-EDGE_STEPS:]))


# --------------------------------------------------------------------------------------------------------------------
# Blocks and rendering
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph; ``**bold**`` and ``code`` in backticks are the only markup."""

    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    """A PNG under the report folder (``path`` relative to it)."""

    path: str
    alt: str


Block = Union[Heading, Para, Bullets, Table, Image]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub-flavoured markdown (figures as relative image links)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "|".join("---" for _ in b.headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.path})", ""]
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {b!r}")
    return "\n".join(out).rstrip("\n") + "\n"


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1a1a1a;line-height:1.45}
h1,h2,h3{line-height:1.2}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
""".strip()


def _inline_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped)
    return _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", escaped)


def render_html(blocks: Sequence[Block], base_dir: str | os.PathLike[str], title: str = "SUPO results") -> str:
    """The blocks as one self-contained HTML page: inline CSS, figures embedded as base64 PNG data URIs (read from
    ``base_dir``)."""
    base = Path(base_dir)
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.headers)
            rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode((base / b.path).read_bytes()).decode("ascii")
            alt = html.escape(b.alt)
            body.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{alt}</figcaption></figure>")
        else:  # pragma: no cover
            raise TypeError(f"unknown block {b!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# --------------------------------------------------------------------------------------------------------------------
# Report content
# --------------------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, decimals: int = 3) -> str:
    return DASH if value is None else f"{value:.{decimals}f}"


def _fmt_stat(stat: Stat | None, decimals: int = 3, n: bool = False) -> str:
    return DASH if stat is None else stat.fmt(decimals, n=n)


def _table1(res: EnvResults) -> Table:
    rows = []
    for row in res.table1:
        st = row.stats
        success = st.get("success_rate")
        eff = st.get("effective_context_tokens")
        if eff is not None:
            eff_text = f"{eff.mean:.0f}"
        elif row.working_context is not None and row.s_eval is not None:
            eff_text = f"{row.working_context * (row.s_eval + 1)}"
        else:
            eff_text = DASH
        rows.append((
            row.arm, DASH if row.s_train is None else str(row.s_train), DASH if row.s_eval is None else str(row.s_eval),
            DASH if row.working_context is None else str(row.working_context),
            _fmt_stat(success), DASH if success is None else str(success.n),
            _fmt_stat(st.get("mean_working_context_tokens"), 1), _fmt(row.max_working_context, 0), eff_text,
            _fmt_stat(st.get("mean_tool_calls"), 2), _fmt_stat(st.get("mean_summaries"), 2), row.note,
        ))
    return Table(("arm", "S_train", "S_eval", "W", "success (mean ± std)", "seeds", "mean working context",
                  "max working context", "effective context W×(S_eval+1)", "tool calls", "summaries", "note"),
                 tuple(rows))


def _table3(res: EnvResults) -> Table:
    rows = []
    for arm in res.arms:
        cells = []
        for s in res.grid:
            stat = res.success.get((arm, s))
            text = _fmt_stat(stat, n=True)
            cells.append(f"**{text}**" if stat is not None and res.arm_s_eval.get(arm) == s else text)
        if any(c != DASH for c in cells):
            rows.append((arm, *cells))
    return Table(("arm", *[f"S_eval={s}" for s in res.grid]), tuple(rows))


def _training_table(res: EnvResults) -> Table:
    rows = []
    for arm in [a for a in res.arms if any(t.arm == a for t in res.training)]:
        runs = [t for t in res.training if t.arm == arm]
        edges = [e for t in runs if (e := _edge_means(t)) is not None]
        success_edges = [e for t in runs if (e := _edge_means(t, "success_rate")) is not None]
        first = Stat.of([e[0] for e in edges]) if edges else None
        last = Stat.of([e[1] for e in edges]) if edges else None
        change = Stat.of([e[1] - e[0] for e in edges]) if edges else None
        last_success = Stat.of([e[1] for e in success_edges]) if success_edges else None
        steps = sorted({len(t.history) for t in runs})
        algos = sorted({t.algo for t in runs if t.algo})
        s_values = sorted({t.max_summaries for t in runs if t.max_summaries is not None})
        ws = sorted({t.working_context for t in runs if t.working_context is not None})
        rows.append((arm, ", ".join(algos) or DASH, ", ".join(map(str, s_values)) or DASH,
                     ", ".join(map(str, ws)) or DASH, _range_text(sorted(t.seed for t in runs)),
                     ", ".join(map(str, steps)), _fmt_stat(first), _fmt_stat(last), _fmt_stat(change),
                     _fmt_stat(last_success)))
    return Table(("arm", "algo", "S_train", "W_train", "seeds", "logged steps",
                  f"mean reward, first {EDGE_STEPS} steps", f"mean reward, last {EDGE_STEPS} steps", "change",
                  f"success rate, last {EDGE_STEPS} steps"), tuple(rows))


def _claim_blocks(claim: Claim) -> list[Block]:
    return [Para(f"**{claim.key}: {claim.statement}: {claim.label}.**"),
            Bullets((f"Rule: {claim.rule}.", *claim.evidence))]


def build_blocks(results: Sequence[EnvResults], figures: Mapping[str, Mapping[str, str]], *,
                 evals_dir: str, checkpoints_dir: str, roles: ArmRoles = DEFAULT_ROLES,
                 title: str = "SUPO results") -> list[Block]:
    """The whole report as blocks. ``figures[env]`` maps "success" / "training" to a PNG path relative to the
    report folder (absent when there is nothing to plot)."""
    n_eval = sum(len(r.evals) for r in results)
    n_train = sum(len(r.training) for r in results)
    blocks: list[Block] = [
        Heading(title, 1),
        Para(f"Generated by `supo-cli report` from {n_eval} eval runs (`{evals_dir}/<env>/seed<k>/<arm>/s<N>/"
             f"metrics.json`) and {n_train} training runs (`{checkpoints_dir}/<env>/seed<k>/<arm>/"
             "train_metrics.json`). Every number below is read from those files."),
        Para("Mean ± std is over seeds (sample std, ddof = 1; 0 with one seed), n = number of seeds. S_eval = summaries "
             "allowed at evaluation, S_train = at training, W = working context (tokens), effective context = "
             "W × (S_eval + 1). Claims compare seed means; each comparison also gives the difference and whether it "
             "exceeds the pooled seed std sqrt(((n₁−1)s₁² + (n₂−1)s₂²)/(n₁+n₂−2)) — a margin within that is within "
             f"seed noise. Roles: GRPO-W = `{roles.grpo_w}`, GRPO-Weff = `{roles.grpo_weff}`, SUPO = `{roles.supo}`, "
             f"ablations = {', '.join(f'`{a}`' for a in roles.ablations) or 'none'}, warm start = "
             f"`{roles.warm_start}`."),
        Heading("Summary", 2),
        Table(("env", "claim", "statement", "verdict"),
              tuple((r.env, c.key, c.statement, f"**{c.label}**") for r in results for c in r.claims)),
        Para("Runs found (arm: seeds evaluated / seeds trained):"),
    ]
    found = []
    for r in results:
        for arm in r.arms:
            ev_seeds = sorted({e.seed for e in r.evals if e.arm == arm})
            tr_seeds = sorted({t.seed for t in r.training if t.arm == arm})
            found.append(f"{r.env}/{arm}: evaluated seeds {_range_text(ev_seeds)}; trained seeds "
                         f"{_range_text(tr_seeds) if arm != roles.warm_start else '(warm start, not RL-trained)'}")
    blocks.append(Bullets(tuple(found) or ("none",)))
    blocks.append(Para(f"Run count: {n_eval} eval runs, {n_train} training runs."))
    missing = [m for r in results for m in r.missing]
    blocks.append(Para("Missing: " + ("nothing." if not missing else f"{len(missing)} item(s):")))
    if missing:
        blocks.append(Bullets(tuple(missing)))

    for r in results:
        blocks.append(Heading(f"Environment `{r.env}`", 2))
        s_text = DASH if r.s_train is None else str(r.s_train)
        blocks.append(Para(f"SUPO's training S = {s_text} ({r.s_train_source}); S_eval grid: "
                           f"{_range_text(r.grid)}."))
        if not r.evals:
            blocks.append(Para("No eval files for this environment."))
        else:
            blocks += [
                Heading("Table 1 analogue: each arm at its training setting", 3),
                Para("One row per arm at S_eval = its S_train (0 for the GRPO arms, S for the SUPO arms; the warm "
                     "start at S). Working context: mean over rollouts, mean ± std over seeds; max: the largest over "
                     "rollouts and seeds."),
                _table1(r),
                Heading("Table 3 analogue: success rate against S_eval", 3),
                Para("Success rate, mean ± std over n seeds; bold: the arm's own setting (its Table 1 S_eval)."),
                _table3(r),
            ]
            if "success" in figures.get(r.env, {}):
                blocks.append(Image(figures[r.env]["success"],
                                    f"{r.env}: success rate against S_eval (mean ± std over seeds; dashed line: "
                                    f"SUPO's S_train = {s_text})"))
        blocks.append(Heading("Training curves", 3))
        if not r.training:
            blocks.append(Para("No training files for this environment."))
        else:
            if "training" in figures.get(r.env, {}):
                blocks.append(Image(figures[r.env]["training"],
                                    f"{r.env}: mean reward and success rate per training step (mean over seeds, "
                                    f"band: min–max over seeds)"))
            blocks.append(Para(f"Mean reward over the first and the last {EDGE_STEPS} logged steps of each seed "
                               "(they overlap when a run logged fewer than "
                               f"{2 * EDGE_STEPS} steps), mean ± std over seeds."))
            blocks.append(_training_table(r))
        blocks.append(Heading("Claims", 3))
        for claim in r.claims:
            blocks += _claim_blocks(claim)
    return blocks


# --------------------------------------------------------------------------------------------------------------------
# Figures, CSVs, summary
# --------------------------------------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", metadata={"Software": None})


def _colors(arms: Sequence[str]) -> dict[str, str]:
    """One colour per arm, the same in every figure of an environment (matplotlib's default cycle)."""
    return {arm: f"C{i % 10}" for i, arm in enumerate(dict.fromkeys(arms))}


def plot_success_vs_s_eval(res: EnvResults, path: str | os.PathLike[str]) -> Path:
    """One line per arm (mean success over seeds, error bars ± std) against S_eval; a dashed line at S_train."""
    fig = Figure(figsize=(7.0, 4.4), dpi=110)
    ax = fig.subplots()
    colors = _colors(res.arms)
    for arm in res.arms:
        points = [(s, res.success[(arm, s)]) for s in res.grid if (arm, s) in res.success]
        if not points:
            continue
        xs = [s for s, _ in points]
        ax.errorbar(xs, [p.mean for _, p in points], yerr=[p.std for _, p in points], marker="o", capsize=3,
                    label=arm, color=colors[arm])
    if res.s_train is not None:
        ax.axvline(res.s_train, color="gray", linestyle="--", linewidth=1, label=f"S_train = {res.s_train}")
    ax.set_xticks(res.grid)
    ax.set_xlabel("S_eval (summaries allowed at evaluation)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{res.env}: success vs S_eval (mean ± std over seeds)")
    fig.tight_layout()
    out = Path(path)
    _save(fig, out)
    return out


def plot_training_curves(res: EnvResults, path: str | os.PathLike[str]) -> Path:
    """Two panels (mean reward, success rate) against step; per arm the mean over seeds and a min–max band."""
    fig = Figure(figsize=(11.0, 4.2), dpi=110)
    axes = fig.subplots(1, len(TRAIN_CURVE_KEYS))
    curves = training_curves(res.training)
    order = [a for a in res.arms if a in curves] + [a for a in curves if a not in res.arms]
    colors = _colors([*res.arms, *order])
    for ax, key in zip(axes, TRAIN_CURVE_KEYS, strict=True):
        for arm in order:
            rows = [row for row in curves[arm] if key in row]
            if not rows:
                continue
            steps = [row["step"] for row in rows]
            ax.plot(steps, [row[key] for row in rows], marker=".", label=arm, color=colors[arm])
            ax.fill_between(steps, [row[f"{key}_min"] for row in rows], [row[f"{key}_max"] for row in rows],
                            color=colors[arm], alpha=0.15, linewidth=0)
        ax.set_xlabel("training step")
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{res.env}: {key.replace('_', ' ')}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    _save(fig, out)
    return out


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def summary_metrics(results: Sequence[EnvResults]) -> dict[str, float | int]:
    """The flat numbers of the report (for ``dvc metrics show`` and MLflow):

    * ``eval_runs``, ``train_runs``;
    * ``<env>.<arm>.s<N>.success_mean`` / ``success_std`` / ``n_seeds`` for every (arm, S_eval);
    * at each arm's Table 1 S_eval also ``mean_working_context_tokens``, ``max_working_context_tokens`` (max over
      seeds), ``effective_context_tokens``, ``mean_tool_calls``, ``mean_summaries`` (seed means);
    * ``<env>.C<i>_held`` and ``<env>.C<i>_evaluated`` (0/1) and the claim's numbers as ``<env>.C<i>_<name>``.
    """
    out: dict[str, float | int] = {
        "eval_runs": sum(len(r.evals) for r in results),
        "train_runs": sum(len(r.training) for r in results),
    }
    for r in results:
        for arm in r.arms:
            for s in r.grid:
                stat = r.success.get((arm, s))
                if stat is None:
                    continue
                prefix = f"{r.env}.{arm}.s{s}"
                out.update({f"{prefix}.success_mean": stat.mean, f"{prefix}.success_std": stat.std,
                            f"{prefix}.n_seeds": stat.n})
        for row in r.table1:
            if row.s_eval is None or not row.stats:
                continue
            prefix = f"{r.env}.{row.arm}.s{row.s_eval}"
            for key in ("mean_working_context_tokens", "effective_context_tokens", "mean_tool_calls",
                        "mean_summaries"):
                if key in row.stats:
                    out[f"{prefix}.{key}"] = row.stats[key].mean
            if row.max_working_context is not None:
                out[f"{prefix}.max_working_context_tokens"] = row.max_working_context
        for claim in r.claims:
            out[f"{r.env}.{claim.key}_held"] = int(claim.held is True)
            out[f"{r.env}.{claim.key}_evaluated"] = int(claim.held is not None)
            for name, value in claim.numbers.items():
                if math.isfinite(value):
                    out[f"{r.env}.{claim.key}_{name}"] = value
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote, and what it found."""

    out_dir: Path
    markdown: Path
    html: Path
    summary_json: Path
    plots: list[Path]
    figures: dict[str, list[Path]]
    """Per environment, its PNG figures."""
    summary: dict[str, float | int]
    results: list[EnvResults]
    roles: ArmRoles

    @property
    def training(self) -> list[TrainRun]:
        return [t for r in self.results for t in r.training]

    @property
    def claims(self) -> dict[str, list[Claim]]:
        return {r.env: r.claims for r in self.results}


def write_report(
    evals_dir: str | os.PathLike[str],
    checkpoints_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    roles: ArmRoles = DEFAULT_ROLES,
    envs: Sequence[str] = (),
    arms: Sequence[str] = (),
    seeds: Sequence[int] = (),
    title: str = "SUPO results",
) -> ReportFiles:
    """Read the eval and training files, write the report into ``out_dir`` (see the module docstring).

    ``roles`` names the arms of the claims; ``envs`` / ``arms`` / ``seeds`` are what the pipeline was meant to
    produce (for the "missing" list; see :func:`analyze`). Raises FileNotFoundError when there is no eval file and
    ValueError naming a malformed file.
    """
    evals = collect_evals(evals_dir)
    training = collect_training(checkpoints_dir)
    results = analyze(evals, training, roles, envs=envs, arms=arms, seeds=seeds)
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for stale in fig_dir.glob("*.png"):  # figures of environments no longer present must not linger
        stale.unlink()
    figures: dict[str, list[Path]] = {}
    rel: dict[str, dict[str, str]] = {}
    for r in results:
        figures[r.env], rel[r.env] = [], {}
        if r.success:
            path = plot_success_vs_s_eval(r, fig_dir / f"{r.env}-success_vs_s_eval.png")
            figures[r.env].append(path)
            rel[r.env]["success"] = f"figures/{path.name}"
        if r.training:
            path = plot_training_curves(r, fig_dir / f"{r.env}-training_curves.png")
            figures[r.env].append(path)
            rel[r.env]["training"] = f"figures/{path.name}"

    blocks = build_blocks(results, rel, evals_dir=str(evals_dir), checkpoints_dir=str(checkpoints_dir), roles=roles,
                          title=title)
    markdown = out / "report.md"
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(blocks, out, title), encoding="utf-8")
    summary = summary_metrics(results)
    summary_json = out / "summary.json"
    summary_json.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    success_rows = [(r.env, arm, s, round(st.mean, 6), round(st.std, 6), st.n)
                    for r in results for arm in r.arms for s in r.grid if (st := r.success.get((arm, s))) is not None]
    curve_rows = [(r.env, arm, row["step"], round(row["mean_reward"], 6) if "mean_reward" in row else "",
                   round(row["success_rate"], 6) if "success_rate" in row else "")
                  for r in results for arm, rows in training_curves(r.training).items() for row in rows]
    plots = [
        _write_csv(out / "plots" / "success_vs_s_eval.csv",
                   ("env", "arm", "s_eval", "success_rate", "success_std", "n_seeds"), success_rows),
        _write_csv(out / "plots" / "training_curves.csv",
                   ("env", "arm", "step", "mean_reward", "success_rate"), curve_rows),
    ]
    return ReportFiles(out_dir=out, markdown=markdown, html=page, summary_json=summary_json, plots=plots,
                       figures=figures, summary=summary, results=results, roles=roles)


# --------------------------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------------------------


def _training_run_id(run: TrainRun) -> str | None:
    """The MLflow run id in the checkpoint's ``supo_run.json`` (None when absent or unreadable)."""
    path = run.checkpoint / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    run_id = data.get("mlflow_run_id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def log_report(files: ReportFiles, tracking_uri: str, experiment: str, *, profile: str = "",
               params: Mapping[str, Any] | None = None) -> tuple[str, list[str]]:
    """Store the report in MLflow; return (the report run's id, the training run ids the figures were attached to).

    One run named ``report`` (tags ``stage=report``, ``profile``, ``envs``) holds report.md, report.html,
    summary.json, figures/ and plots/ as artifacts and the summary numbers as metrics (step 0). Each environment's
    figures are also attached (under ``report/``) to every training run of that environment whose id is in its
    checkpoint's ``supo_run.json``; an id not in this store is skipped.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from supo.tracking import Tracker

    tags = {"stage": "report", "profile": profile, "envs": ",".join(r.env for r in files.results)}
    with Tracker(tracking_uri, experiment, "report", params=params or {}, tags=tags) as tracker:
        for path in (files.markdown, files.html, files.summary_json):
            tracker.log_artifact(path)
        tracker.log_artifact(files.out_dir / "figures", "figures")
        tracker.log_artifact(files.out_dir / "plots", "plots")
        tracker.log_metrics(files.summary, step=0)
        report_run_id = tracker.run_id

    client = MlflowClient(tracking_uri=tracking_uri)
    attached: list[str] = []
    for run in files.training:
        run_id = _training_run_id(run)
        figures = files.figures.get(run.env, [])
        if run_id is None or not figures:
            continue
        try:
            client.get_run(run_id)
        except MlflowException:
            log.info("training run %s (%s) is not in %s; figures not attached", run_id, run.checkpoint, tracking_uri)
            continue
        for fig in figures:
            client.log_artifact(run_id, str(fig), "report")
        attached.append(run_id)
    return report_run_id, attached
