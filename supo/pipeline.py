"""What a command will run: arms × seeds (× S_eval) planned into a list of run specs, before anything starts.

The CLI parses its flags, asks this module for the plan, checks every input the plan reads (``supo.preflight``), then
runs it. Planning is pure: it loads configs through the ``load`` callable it is given (``load(arm, seed) -> Config``)
and builds paths with :mod:`supo.layout` only.

* :func:`plan_arms`, :func:`plan_seeds` — the arms and seeds a command's flags select (conflicting flags rejected);
* :func:`plan_train` — one :class:`TrainSpec` per (seed, arm), seeds outermost (runs of one process share its actors);
* :func:`plan_eval` — one :class:`EvalSpec` per (seed, arm checkpoint);
* :func:`plan_warm_start` — the warm start evaluated at every arm's own setting, once per seed (the replicates the
  report pairs with each arm's seeds): the method's W with the S_eval sweep (label ``sft``), and every other W an arm
  trains at (GRPO-Weff's effective context) at that arm's S (label ``sft-<arm>``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from supo.config import Config
from supo.layout import checkpoint_dir, eval_dir, warm_start_label

Load = Callable[[str | None, int | None], Config]


@dataclass(frozen=True)
class TrainSpec:
    cfg: Config
    arm: str
    seed: int
    out: Path


@dataclass(frozen=True)
class EvalSpec:
    cfg: Config
    label: str
    seed: int
    checkpoint: Path
    out: Path
    sweep: tuple[int, ...] | None
    """The S_eval values read off one run at the largest (None: one run at ``cfg.eval.max_summaries``)."""


def plan_arms(arm: Sequence[str] | None, all_arms: bool, pipeline_arms: Sequence[str]) -> list[str | None]:
    """The arms a command runs: ``--arm`` (repeatable), ``--all-arms`` (``pipeline.arms``), or ``[None]`` (the
    config's algo). ValueError when the flags conflict or an arm repeats."""
    arms = list(arm or [])
    if all_arms:
        if arms:
            raise ValueError("--all-arms and --arm conflict: --all-arms takes pipeline.arms")
        arms = list(pipeline_arms)
    if len(arms) != len(set(arms)):
        raise ValueError(f"--arm: {arms} repeats an arm")
    return arms or [None]


def plan_seeds(seed: int | None, all_seeds: bool, pipeline_seeds: Sequence[int]) -> list[int | None]:
    """The seeds a command runs: ``--seed``, ``--all-seeds`` (``pipeline.seeds``), or ``[None]`` (the config's).
    ValueError when both flags are given."""
    if all_seeds and seed is not None:
        raise ValueError("--all-seeds and --seed conflict: --all-seeds takes pipeline.seeds")
    return list(pipeline_seeds) if all_seeds else [seed]


def plan_train(load: Load, arms: Sequence[str | None], seeds: Sequence[int | None],
               out: str | Path | None = None) -> list[TrainSpec]:
    """Every (seed, arm) run; ``out`` (one run only) overrides the checkpoint folder."""
    if out is not None and len(arms) * len(seeds) > 1:
        raise ValueError("--out takes one run: several arms or seeds write to paths.checkpoints/seed<k>/<arm>")
    specs = []
    for seed in seeds:
        for arm in arms:
            cfg = load(arm, seed)
            name = arm or cfg.train.algo
            specs.append(TrainSpec(cfg, name, cfg.seed, Path(out) if out else checkpoint_dir(cfg.paths.checkpoints,
                                                                                              cfg.seed, name)))
    return specs


def plan_eval(load: Load, arms: Sequence[str], seeds: Sequence[int | None], *, sweep: bool) -> list[EvalSpec]:
    """Every trained arm's checkpoint (``paths.checkpoints/seed<k>/<arm>``) of every seed, at its config's S_eval
    (or its sweep)."""
    specs = []
    for seed in seeds:
        for arm in arms:
            cfg = load(arm, seed)
            specs.append(EvalSpec(cfg, arm, cfg.seed, checkpoint_dir(cfg.paths.checkpoints, cfg.seed, arm),
                                  eval_dir(cfg.paths.evals, cfg.seed, arm, None if sweep else cfg.eval.max_summaries),
                                  tuple(cfg.eval.sweep_values(cfg.budget.max_summaries)) if sweep else None))
    return specs


def plan_warm_start(load: Load, arms: Sequence[str], seeds: Sequence[int | None],
                    checkpoint: str | Path | None = None) -> list[EvalSpec]:
    """The warm start (``paths.sft``, or ``checkpoint``) at the method's W with the sweep, and at every other arm W
    at that arm's training S — once per seed."""
    specs = []
    for seed in seeds:
        base = load(None, seed)
        ckpt = Path(checkpoint) if checkpoint else Path(base.paths.sft)
        specs.append(EvalSpec(base, warm_start_label(), base.seed, ckpt, eval_dir(base.paths.evals, base.seed,
                                                                                   warm_start_label()),
                              tuple(base.eval.sweep_values(base.budget.max_summaries))))
        for arm in arms:
            cfg = load(arm, seed)
            if cfg.budget.working_context == base.budget.working_context:
                continue  # covered by the sweep at W
            label = warm_start_label(arm)
            s_own = cfg.train_max_summaries
            cfg.eval.max_summaries = s_own
            cfg.eval.working_context = 0  # the arm's own (training) W
            specs.append(EvalSpec(cfg, label, cfg.seed, ckpt, eval_dir(cfg.paths.evals, cfg.seed, label, s_own),
                                  None))
    return specs
