"""Training checkpoints: written atomically, loaded whole, enough to resume exactly.

A checkpoint is a folder ``<out>/step_<N>`` holding

* the policy in HF format (``config.json``, ``model.safetensors``, the tokenizer) — so ``supo-cli eval`` reads it;
* ``trainer_state.pt`` — the optimizer state (full, unsharded), the trainer's update counter and the RNG states of
  Python, NumPy and torch;
* ``state.json`` — the step, the data cursor (the next step to run), the MLflow run id, the metric history.

It is written into ``<out>/.tmp-step_<N>`` and renamed into place (``os.replace`` of a folder is atomic on one file
system); then the one-line pointer ``<out>/latest`` is replaced atomically. A kill at any moment leaves either the
previous checkpoint or the new one as ``latest`` — never one that loads half. Left-over ``.tmp-*`` folders are
removed on the next save or load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest"
STATE = "state.json"
TRAINER_STATE = "trainer_state.pt"


@dataclass
class TrainingState:
    step: int  # steps completed
    history: list[dict[str, Any]]
    mlflow_run_id: str | None
    trainer_state: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    path: Path | None = None


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean_tmp(out: Path) -> None:
    for p in out.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(out: str | Path, *, step: int, model, tokenizer, trainer_state: dict[str, Any],
                    history: list[dict[str, Any]], mlflow_run_id: str | None, extra: dict[str, Any] | None = None,
                    rng: dict[str, Any] | None = None) -> Path:
    """Write ``<out>/step_<step>`` atomically and point ``<out>/latest`` at it. ``model`` holds the current weights;
    ``rng``: the RNG states to resume with (default: this process's — the training driver's, when trainer rank 0
    writes the checkpoint for it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clean_tmp(out)
    name = f"step_{step:06d}"
    tmp, final = out / f".tmp-{name}", out / name
    tmp.mkdir()
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    torch.save({"trainer": trainer_state, "rng": rng if rng is not None else rng_state()}, tmp / TRAINER_STATE)
    state = {"step": step, "data_cursor": step, "mlflow_run_id": mlflow_run_id, "history": history, **(extra or {})}
    (tmp / STATE).write_text(json.dumps(state, indent=1) + "\n")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(out)
    pointer_tmp = out / f".tmp-{LATEST}"
    pointer_tmp.write_text(name + "\n")
    with open(pointer_tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(pointer_tmp, out / LATEST)
    _fsync_dir(out)
    return final


def latest_checkpoint(out: str | Path) -> Path | None:
    """The folder ``<out>/latest`` points to, or None when there is no complete checkpoint."""
    out = Path(out)
    pointer = out / LATEST
    if not pointer.exists():
        return None
    path = out / pointer.read_text().strip()
    if not (path / STATE).exists() or not (path / TRAINER_STATE).exists():
        raise FileNotFoundError(f"{pointer} points to {path.name}, which is not a complete checkpoint")
    return path


def history_problem(step: int, history: list) -> str | None:
    """Why a checkpoint's ``history`` cannot continue a run at ``step`` (None when it can): a resumed run appends to it
    and writes it as the run's ``train_metrics.json``, so it must hold one object per completed step, in order —
    ``len(history) == step`` and entry ``i`` has ``"step": i``."""
    if len(history) != step:
        return (f"history holds {len(history)} step(s) but the checkpoint is at step {step} (it must hold one entry "
                "per completed step)")
    for i, h in enumerate(history):
        if not isinstance(h, dict) or h.get("step") != i:
            got = h.get("step") if isinstance(h, dict) else h
            return f"history[{i}] must be step {i}'s metrics, got step {got!r}"[:300]
    return None


def load_checkpoint(path: str | Path, *, trainer_state: bool = True) -> TrainingState:
    """Everything needed to resume from a checkpoint folder written by :func:`save_checkpoint` (the weights are
    loaded from the folder itself, as an HF model). ``trainer_state=False``: leave the trainer's state (weights,
    optimizer) out — the trainer ranks read it themselves; the file is memory-mapped, so its tensors are not read.
    A ``history`` that cannot continue the run (not one entry per completed step: :func:`history_problem`) is a
    ValueError naming the file — a resumed run would write it as the run's metrics."""
    path = Path(path)
    state = json.loads((path / STATE).read_text())
    problem = history_problem(int(state["step"]), state["history"])
    if problem:
        raise ValueError(f"checkpoint state {path / STATE}: {problem}")
    blob = torch.load(path / TRAINER_STATE, weights_only=False, mmap=not trainer_state)
    return TrainingState(step=int(state["step"]), history=state["history"], mlflow_run_id=state.get("mlflow_run_id"),
                         trainer_state=blob["trainer"] if trainer_state else None, rng=blob["rng"], path=path)
