"""The trainer group: ``world_size`` Ray actors (:class:`~supo.distributed.trainer_rank.TrainerRank`) forming one
``torch.distributed`` group, the policy sharded with FSDP2; :class:`TrainerGroup` is the driver's handle.

It puts a step's samples into the object store once and calls every rank; every rank runs the same sequence of methods
in the same order (Ray runs one actor's calls in the order one caller submits them), which is what the collectives
inside need.

The weights never pass through the driver on the training path: :meth:`TrainerGroup.reset` has every rank read the
initial weights from their folder, :meth:`TrainerGroup.sync_weights` has rank 0 send the new ones to the rollout
workers (``trainer.weight_sync``), :meth:`TrainerGroup.save_checkpoint` / :meth:`TrainerGroup.save_model` have rank 0
write them, :meth:`TrainerGroup.restore_from` has every rank read a checkpoint. A checkpoint taken at one world size
loads at another, and with a reference policy it carries the frozen initial policy too, so the reference stays the
initial policy even when a resumed group is built from a checkpoint's weights.

The same code runs with ``world_size = 1`` (one rank, a mesh of one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supo.distributed import free_port
from supo.distributed.trainer_rank import TrainerRank
from supo.distributed.weight_sync import SyncResult
from supo.trainer.policy_trainer import UpdateStats
from supo.types import TrainingSample

__all__ = ["TrainerGroup", "TrainerRank"]


def _rendezvous_probe() -> tuple[str, str, int]:
    """Run on the node that will host rank 0: its node id, its IP and a port free there."""
    import ray

    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), free_port()


class TrainerGroup:
    """``world_size`` :class:`TrainerRank` actors sharing one process group; the driver-side handle.

    ``num_cpus_per_rank``: Ray CPUs each rank reserves; ``threads_per_rank``: torch threads in each rank (None = the
    reserved CPUs). ``use_gpu``: one GPU per rank and NCCL; None = when the Ray cluster has GPUs. ``plugins``: the
    ``train.plugins`` refs (``supo.plugins.import_plugins``) every rank imports before it reads a registry.
    ``weight_sync``: how rank 0 sends weights to the rollout workers (``trainer.weight_sync``).
    """

    def __init__(self, world_size: int, model_path: str, train_cfg, pad_id: int, max_seq_len: int | None, seed: int,
                 num_cpus_per_rank: float = 1, threads_per_rank: int | None = None,
                 use_gpu: bool | None = None, temperature: float = 1.0,
                 plugins: Sequence[tuple[str, str | None]] = (), weight_sync: str = "object-store") -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from supo.distributed import init_ray

        if world_size < 1:
            raise ValueError(f"trainer world_size must be ≥ 1, got {world_size}")
        init_ray()
        if use_gpu is None:
            use_gpu = ray.cluster_resources().get("GPU", 0) > 0
        self.world_size = world_size
        if Path(model_path).exists():  # actors do not share the driver's working directory
            model_path = str(Path(model_path).resolve())
        resources = {"num_cpus": num_cpus_per_rank, "num_gpus": 1 if use_gpu else 0}
        if threads_per_rank is None:
            threads_per_rank = max(1, math.floor(num_cpus_per_rank))
        # the rendezvous lives on rank 0's node: probe a node that can host a rank, then pin rank 0 there
        node_id, addr, port = ray.get(ray.remote(_rendezvous_probe).options(**resources).remote())
        actor_cls = ray.remote(TrainerRank)
        self.ranks = []
        for r in range(world_size):
            opts = dict(resources)
            if r == 0:
                opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
            self.ranks.append(actor_cls.options(**opts).remote(
                r, world_size, addr, port, str(model_path), train_cfg, pad_id, max_seq_len, seed, threads_per_rank,
                temperature, [tuple(p) for p in plugins], weight_sync))
        self.info = self._gather([a.ping.remote() for a in self.ranks])  # raises here if a rank failed to start

    def _all(self, method: str, *args) -> list:
        return self._gather([getattr(a, method).remote(*args) for a in self.ranks])

    def _gather(self, refs: list, grace_s: float = 10.0) -> list:
        """``ray.get`` that fails fast: when a rank raises, the others get ``grace_s`` to finish (a uniform error
        raises on every rank); ranks still running then wait in a collective that will never complete, so the group
        is shut down before the error is re-raised."""
        import ray

        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(ready[0])
            except Exception:
                if pending:
                    _, still = ray.wait(pending, num_returns=len(pending), timeout=grace_s)
                    if still:
                        self.shutdown(graceful=False)
                raise
        return ray.get(refs)

    def update(self, samples: Sequence[TrainingSample]) -> UpdateStats:
        """One RL update on every rank (the samples go into the object store once); rank 0's (global) statistics."""
        import ray

        return self._all("update", ray.put(list(samples)))[0]

    def reset(self, source: dict | str | Path, train_cfg, max_seq_len: int | None, seed: int, pad_id: int,
              temperature: float = 1.0, plugins: Sequence[tuple[str, str | None]] = ()) -> None:
        """Start a new run on the same actors (see :meth:`TrainerRank.reset`): ``source`` is a full state dict, or
        an HF model folder every rank reads itself (the driver then never holds the weights)."""
        import ray

        src = str(Path(source).resolve()) if isinstance(source, (str, Path)) else ray.put(source)
        self._all("reset", src, train_cfg, max_seq_len, seed, pad_id, temperature, [tuple(p) for p in plugins])

    # -- the weight path and checkpoints, from rank 0 (the driver holds no copy of the model) ---------------------

    def connect_weight_sync(self, workers: Sequence[Any]) -> None:
        """Set up rank 0's transport to the rollout workers (their actor handles)."""
        self._all("connect_weight_sync", list(workers))

    def sync_weights(self, workers: Sequence[Any]) -> SyncResult:
        """The ranks gather the current weights and rank 0 sends them to ``workers``; rank 0's result (the seconds
        the workers took, and for the object store the ObjectRef a restarted worker loads)."""
        return self._all("sync_weights", list(workers))[0]

    def save_checkpoint(self, out: str | Path, step: int, history: list[dict], mlflow_run_id: str | None,
                        extra: dict | None, rng: dict) -> Path:
        """Rank 0 writes the resumable checkpoint ``<out>/step_<step>`` (``rng``: the driver's RNG state)."""
        out = str(Path(out).resolve())  # the actors do not share the driver's working directory
        return Path(self._all("save_checkpoint", out, step, list(history), mlflow_run_id, extra, rng)[0])

    def save_model(self, out: str | Path) -> Path:
        """Rank 0 writes the current policy in HF format at ``out``."""
        return Path(self._all("save_model", str(Path(out).resolve()))[0])

    def restore_from(self, checkpoint: str | Path) -> int:
        """Every rank loads the checkpoint folder's trainer state (any world size); the update counter."""
        return self._all("restore_from", str(Path(checkpoint).resolve()))[0]

    def shutdown(self, graceful: bool = True) -> None:
        """Destroy the process groups and kill the actors (idempotent). ``graceful=False``: kill at once (ranks stuck
        in a collective would never run ``destroy``)."""
        import ray

        if not self.ranks:
            return
        if graceful:
            try:
                ray.get([a.destroy.remote() for a in self.ranks], timeout=30)
            except Exception:  # noqa: BLE001 - a dead or hung rank: kill it anyway
                pass
        for a in self.ranks:
            ray.kill(a)
        self.ranks = []

    def __enter__(self) -> TrainerGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
