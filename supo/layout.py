"""Where every stage writes and reads: the one owner of the pipeline's file layout.

Roots come from the run config (``paths.*``; under ``--env NAME`` each already ends in ``/NAME``). Below them:

* checkpoints: ``<checkpoints>/seed<k>/<arm>/`` (the final HF model, ``supo_run.json``, ``train_metrics.json``,
  ``last_rollouts.jsonl``; resumable states under ``steps/``);
* evaluations: ``<evals>/seed<k>/<arm>/s<N>/`` (``metrics.json``, ``outcomes.json``, ``rollouts.jsonl``); the warm
  start is evaluated like an arm, under :func:`warm_start_label`;
* stage metrics (DVC metrics): ``<metrics>/prepare.json``, ``sft.json``, ``train.json`` (``{"seed<k>": {arm:
  summary}}``), ``eval.json`` (``{"seed<k>": {arm: {"s<N>": metrics}}}``, the warm start under its labels).

The report reads the same tree across environments from the un-suffixed roots: ``<evals root>/<env>/seed<k>/...``.
:func:`parse_eval_dir` and :func:`parse_checkpoint_dir` are the inverses of the writers, and the tests round-trip them.
"""

from __future__ import annotations

import re
from pathlib import Path

RUN_FILE = "supo_run.json"
TRAIN_METRICS_FILE = "train_metrics.json"
EVAL_METRICS_FILE = "metrics.json"
OUTCOMES_FILE = "outcomes.json"
ROLLOUTS_FILE = "rollouts.jsonl"
STEPS_DIR = "steps"

WARM_START = "sft"
"""The warm start's label at the method's setting (W, the S_eval sweep); at another arm's own setting (another W,
e.g. GRPO-Weff's effective context) it is ``sft-<arm>``. The report pairs an arm with the warm start evaluated at the
arm's own (W, S_eval)."""


def warm_start_label(arm: str | None = None) -> str:
    return WARM_START if arm is None else f"{WARM_START}-{arm}"


def is_warm_start(label: str) -> bool:
    return label == WARM_START or label.startswith(WARM_START + "-")

_SEED = re.compile(r"^seed(\d+)$")
_S = re.compile(r"^s(\d+)$")


def seed_dir(seed: int) -> str:
    return f"seed{seed}"


def s_dir(s_eval: int) -> str:
    return f"s{s_eval}"


def checkpoint_dir(checkpoints: str | Path, seed: int, arm: str) -> Path:
    """A training run's folder: ``<checkpoints>/seed<k>/<arm>``."""
    return Path(checkpoints) / seed_dir(seed) / arm


def eval_dir(evals: str | Path, seed: int, arm: str, s_eval: int | None = None) -> Path:
    """An evaluation's folder: ``<evals>/seed<k>/<arm>`` (a sweep writes ``s<N>/`` below it), or with ``s_eval``
    that S_eval's folder."""
    base = Path(evals) / seed_dir(seed) / arm
    return base if s_eval is None else base / s_dir(s_eval)


METRIC_STAGES = ("prepare", "sft", "train", "eval")


def metrics_file(metrics: str | Path, stage: str) -> Path:
    """A stage's DVC metrics file: ``prepare``, ``sft``, ``train``, ``eval``."""
    if stage not in METRIC_STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(METRIC_STAGES)}")
    return Path(metrics) / f"{stage}.json"


def parse_eval_dir(path: str | Path, root: str | Path) -> dict:
    """``{"env", "seed", "arm", "s_eval"}`` of an eval folder ``<root>/<env>/seed<k>/<arm>/s<N>`` (``env`` absent when
    the folder is ``<root>/seed<k>/<arm>/s<N>``); ValueError naming the folder otherwise."""
    parts = Path(path).relative_to(root).parts
    if len(parts) not in (3, 4) or not _SEED.match(parts[-3]) or not _S.match(parts[-1]):
        raise ValueError(f"{path}: not an eval folder <env>/seed<k>/<arm>/s<N> under {root}")
    out = {"seed": int(_SEED.match(parts[-3]).group(1)), "arm": parts[-2], "s_eval": int(_S.match(parts[-1]).group(1))}
    if len(parts) == 4:
        out["env"] = parts[0]
    return out


def parse_checkpoint_dir(path: str | Path, root: str | Path) -> dict:
    """``{"env", "seed", "arm"}`` of a checkpoint folder ``<root>/<env>/seed<k>/<arm>`` (``env`` absent without it);
    ValueError naming the folder otherwise."""
    parts = Path(path).relative_to(root).parts
    if len(parts) not in (2, 3) or not _SEED.match(parts[-2]):
        raise ValueError(f"{path}: not a checkpoint folder <env>/seed<k>/<arm> under {root}")
    out = {"seed": int(_SEED.match(parts[-2]).group(1)), "arm": parts[-1]}
    if len(parts) == 3:
        out["env"] = parts[0]
    return out
