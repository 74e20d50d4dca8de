"""What the report says about one environment: arm roles, the cells (arm, S_eval) with their success matrices, the
Table 1 / Table 3 data and the training curves.

An arm's *own setting* is its training S (0 for the GRPO arms) at its training W; the warm start is evaluated at every
own setting of the arms (``supo.layout.warm_start_label``) and paired with each arm at that setting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from supo.layout import WARM_START, is_warm_start
from supo.report.collect import EvalRun, TrainRun
from supo.report.stats import Effect, Stat, bootstrap_effect

ROLE_NAMES = {"baseline-w": "GRPO-W", "baseline-weff": "GRPO-Weff", "method": "SUPO", "ablation": "ablation"}


@dataclass(frozen=True)
class ArmRoles:
    """Which arm plays which part in the claims (declared by ``arms.<name>.role`` in params.yaml)."""

    grpo_w: str = "grpo-w"
    grpo_weff: str = "grpo-weff"
    supo: str = "supo"
    ablations: tuple[str, ...] = ("supo-no-mask", "supo-eq4")
    warm_start: str = WARM_START

    @property
    def trained_arms(self) -> tuple[str, ...]:
        return (self.grpo_w, self.grpo_weff, self.supo, *self.ablations)

    def role_of(self, arm: str) -> str:
        if is_warm_start(arm):
            return "warm start"
        return {self.grpo_w: "GRPO-W", self.grpo_weff: "GRPO-Weff", self.supo: "SUPO"}.get(
            arm, "ablation" if arm in self.ablations else "other")


DEFAULT_ROLES = ArmRoles()


def roles_from_config(arms: Sequence[str], specs: Mapping[str, Mapping[str, Any]] | None = None) -> ArmRoles:
    """Roles of the pipeline's ``arms`` from their ``role`` in ``specs`` (params.yaml ``arms``). An arm without one
    is read from its overrides (GRPO with ``budget.use_effective_context``: GRPO-Weff; other GRPO: GRPO-W; the SUPO
    arm overriding nothing but ``train.algo``: the method; other SUPO arms: ablations) — a declared role always wins."""
    specs = specs or {}
    by_role: dict[str, list[str]] = {r: [] for r in ROLE_NAMES}
    for arm in arms:
        spec = dict(specs.get(arm) or {})
        role = spec.pop("role", None)
        if role is None:
            algo = str(spec.get("train.algo", "grpo" if arm.startswith("grpo") else "supo"))
            if algo == "grpo":
                role = "baseline-weff" if spec.get("budget.use_effective_context", "eff" in arm) else "baseline-w"
            else:
                role = "method" if set(spec) <= {"train.algo"} and not by_role["method"] else "ablation"
        by_role[role].append(arm)
    first = lambda role, default: by_role[role][0] if by_role[role] else default  # noqa: E731
    return ArmRoles(grpo_w=first("baseline-w", DEFAULT_ROLES.grpo_w),
                    grpo_weff=first("baseline-weff", DEFAULT_ROLES.grpo_weff),
                    supo=first("method", DEFAULT_ROLES.supo),
                    ablations=tuple(by_role["ablation"]) + tuple(by_role["method"][1:]))


SUCCESS = "success"


def per_task(run: EvalRun, what: str = SUCCESS) -> Mapping[str, float]:
    """One per-task quantity of an evaluation: ``"success"`` (mean over the task's samples), ``"summaries_judged"``
    / ``"summaries_correct"`` (sums over its samples) or ``"failure:<class>"`` (the share of its samples that failed
    so); {} where the evaluation does not carry it."""
    if what == SUCCESS:
        return run.outcomes
    if what in ("summaries_judged", "summaries_correct"):
        return getattr(run, what)
    if what.startswith("failure:"):
        return run.failures.get(what.split(":", 1)[1], {})
    raise ValueError(f"unknown per-task quantity {what!r}")


@dataclass
class Cell:
    """One arm at one S_eval, over its seeds."""

    arm: str
    s_eval: int
    runs: list[EvalRun]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def working_context(self) -> int | None:
        ws = {r.working_context for r in self.runs if r.working_context is not None}
        return min(ws) if ws else None

    @property
    def splits(self) -> list[str]:
        return sorted({r.split for r in self.runs})

    def stat(self, metric: str) -> Stat | None:
        values = [r.metrics[metric] for r in self.runs if metric in r.metrics]
        return Stat.of(values) if values else None

    def max_of(self, metric: str) -> float | None:
        values = [r.metrics[metric] for r in self.runs if metric in r.metrics]
        return max(values) if values else None

    def matrix(self, seeds: Sequence[int], tasks: Sequence[str], what: str = SUCCESS) -> np.ndarray:
        """``what`` (:func:`per_task`: success by default) as a ``[seed, task]`` matrix on the given seeds and tasks
        (every one must be present)."""
        by_seed = {r.seed: per_task(r, what) for r in self.runs}
        return np.array([[by_seed[s][t] for t in tasks] for s in seeds], dtype=np.float64)


@dataclass
class EnvResults:
    """Everything the report says about one environment."""

    env: str
    roles: ArmRoles
    s_train: int | None
    arms: list[str]
    grid: list[int]
    cells: dict[tuple[str, int], Cell]
    training: list[TrainRun]
    own: dict[str, tuple[int, int | None]]
    """arm → its own setting (S_eval, W)."""
    claims: list = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    """Summary state accuracy per arm at its own setting (:func:`supo.report.mechanism.summary_accuracy`)."""
    failures: list = field(default_factory=list)
    """The failure decomposition per arm at its own setting (:func:`supo.report.mechanism.failure_decomposition`)."""

    def cell(self, arm: str, s_eval: int | None) -> Cell | None:
        return None if s_eval is None else self.cells.get((arm, s_eval))

    def warm_start_at(self, s_eval: int, working_context: int | None) -> Cell | None:
        """The warm start evaluated at (S_eval, W), under whichever warm-start label ran it."""
        for (label, s), c in sorted(self.cells.items()):
            if is_warm_start(label) and s == s_eval and (working_context is None or c.working_context == working_context):
                return c
        return None

    def own_cells(self) -> list[tuple[str, int, int | None, Cell, Cell | None]]:
        """(arm, S, W, its cell, the warm start's cell there — None for the warm start itself) for every arm with an
        evaluation at its own setting, in ``arms`` order."""
        out = []
        for arm in self.arms:
            s, w = self.own.get(arm, (None, None))
            cell = self.cell(arm, s)
            if cell is not None:
                out.append((arm, s, w, cell, None if is_warm_start(arm) else self.warm_start_at(s, w)))
        return out

    @property
    def splits(self) -> list[str]:
        return sorted({s for c in self.cells.values() for s in c.splits})


def _mode(values) -> int | None:
    counts = Counter(v for v in values if v is not None)
    return min(counts, key=lambda v: (-counts[v], v)) if counts else None


def analyze(evals: Sequence[EvalRun], training: Sequence[TrainRun], roles: ArmRoles = DEFAULT_ROLES, *,
            envs: Sequence[str] = (), arms: Sequence[str] = (), seeds: Sequence[int] = ()) -> list[EnvResults]:
    """Group the runs per environment (``envs`` order first) into cells; list what the pipeline should have
    produced but did not (``arms`` × ``seeds``, the warm start)."""
    found = {r.env for r in evals} | {t.env for t in training}
    order = [e for e in envs if e in found] + sorted(found - set(envs))
    out = []
    for env in order:
        ev = [r for r in evals if r.env == env]
        tr = [t for t in training if t.env == env]
        out.append(_analyze_env(env, ev, tr, roles, list(arms) or list(roles.trained_arms),
                                list(seeds) or sorted({r.seed for r in ev})))
    for env in envs:
        if env not in found:
            out.append(EnvResults(env, roles, None, [], [], {}, [], {}, missing=[f"{env}: no eval and no training files"]))
    return out


def _analyze_env(env: str, evals: list[EvalRun], training: list[TrainRun], roles: ArmRoles,
                 expected_arms: list[str], expected_seeds: list[int]) -> EnvResults:
    grid = sorted({r.s_eval for r in evals if not is_warm_start(r.arm) or r.arm == WARM_START})
    cells: dict[tuple[str, int], Cell] = {}
    for r in evals:
        cells.setdefault((r.arm, r.s_eval), Cell(r.arm, r.s_eval, [])).runs.append(r)
    s_train = _mode(t.max_summaries for t in training if t.arm == roles.supo) or \
        _mode(t.max_summaries for t in training if t.algo == "supo")
    present = {r.arm for r in evals} | {t.arm for t in training}
    arms = [a for a in (WARM_START, *expected_arms) if a in present] + sorted(present - {WARM_START, *expected_arms})
    own: dict[str, tuple[int, int | None]] = {}
    for arm in arms:
        runs = [t for t in training if t.arm == arm]
        s = _mode(t.max_summaries for t in runs)
        if is_warm_start(arm):
            s = s_train if arm == WARM_START else _mode(r.s_eval for r in evals if r.arm == arm)
        elif s is None:
            s = 0 if arm in (roles.grpo_w, roles.grpo_weff) else s_train
        w = _mode(t.working_context for t in runs)
        if w is None and (c := cells.get((arm, s))) is not None:
            w = c.working_context
        if s is not None:
            own[arm] = (s, w)
    missing = []
    for arm in expected_arms:
        for seed in expected_seeds:
            if not any(r.arm == arm and r.seed == seed for r in evals):
                missing.append(f"{env}/{arm} seed {seed}: no evaluation")
            if not any(t.arm == arm and t.seed == seed for t in training):
                missing.append(f"{env}/{arm} seed {seed}: no training run")
    if not any(is_warm_start(r.arm) for r in evals):
        missing.append(f"{env}: the warm start was not evaluated")
    for key, c in cells.items():
        if any(not r.outcomes for r in c.runs):
            missing.append(f"{env}/{key[0]} at S_eval={key[1]}: no per-task outcomes (no confidence intervals)")
    return EnvResults(env, roles, s_train, arms, grid, cells, training, own, missing=missing)


def common(a: Cell, b: Cell | None = None, what: str = SUCCESS) -> tuple[list[int], list[str]]:
    """The seeds and tasks two cells share (a cell alone: its own), for the per-task quantity ``what``."""
    seeds = set(a.seeds) if b is None else set(a.seeds) & set(b.seeds)
    runs = [r for r in a.runs + (b.runs if b else []) if r.seed in seeds]
    tasks = set.intersection(*(set(per_task(r, what)) for r in runs)) if runs else set()
    return sorted(seeds), sorted(tasks)


def success_interval(c: Cell | None) -> Effect | None:
    """A cell's success rate over its seeds × tasks with its 95% two-way bootstrap interval (Table 3's cells, the
    success figure's error bars); None without a cell or without per-task outcomes."""
    if c is None:
        return None
    seeds, tasks = common(c)
    return bootstrap_effect(c.matrix(seeds, tasks)) if seeds and tasks else None


def edge_mean(runs: Sequence[TrainRun], key: str, edge: int, last: bool) -> float | None:
    """The mean over runs (seeds) of each run's mean of ``key`` over its first (or last) ``edge`` steps; None where
    no run recorded it."""
    vals = []
    for t in runs:
        rows = t.history[-edge:] if last else t.history[:edge]
        finite = [float(r[key]) for r in rows if r.get(key) is not None and np.isfinite(r[key])]
        if finite:
            vals.append(float(np.mean(finite)))
    return float(np.mean(vals)) if vals else None


def training_curves(training: Sequence[TrainRun], keys: Sequence[str]) -> dict[str, list[dict[str, float]]]:
    """Per arm, per step: the mean, min and max over seeds of each metric of ``keys``."""
    curves: dict[str, list[dict[str, float]]] = {}
    for arm in dict.fromkeys(t.arm for t in training):
        by_step: dict[int, dict[str, list[float]]] = {}
        for t in (t for t in training if t.arm == arm):
            for row in t.history:
                cell = by_step.setdefault(row["step"], {k: [] for k in keys})
                for k in keys:
                    v = row.get(k)
                    if v is not None and np.isfinite(v):
                        cell[k].append(float(v))
        rows = []
        for step in sorted(by_step):
            row: dict[str, float] = {"step": step}
            for k, values in by_step[step].items():
                if values:
                    row.update({k: float(np.mean(values)), f"{k}_min": min(values), f"{k}_max": max(values)})
            rows.append(row)
        curves[arm] = rows
    return curves


__all__ = ["ArmRoles", "Cell", "DEFAULT_ROLES", "EnvResults", "SUCCESS", "analyze", "common", "per_task",
           "roles_from_config", "training_curves"]
