"""One trainer rank: a Ray actor in a ``torch.distributed`` group, its policy sharded with FSDP2 (the driver-side
handle is :class:`supo.distributed.trainer_group.TrainerGroup`).

A rank joins the process group (gloo on CPU, NCCL on CUDA), loads the policy, applies ``fully_shard`` to every decoder
layer and then to the root, and wraps it in a data-parallel :class:`~supo.trainer.policy_trainer.PolicyTrainer`.
Methods that gather or scatter state are collectives: every rank must run them, in the same order.

The weights leave the group from rank 0 without passing through the driver: :meth:`TrainerRank.sync_weights` gathers
the full state dict and rank 0's sender (``supo.distributed.weight_sync``) delivers it to the rollout workers;
:meth:`TrainerRank.save_checkpoint` and :meth:`TrainerRank.save_model` gather it and rank 0 writes the HF folder and
the resumable state (``supo.checkpoint``); :meth:`TrainerRank.restore_from` has every rank read a checkpoint's state.

A rank holds one run at a time: :meth:`TrainerRank.reset` starts the next one on the same actor with what a new actor
would hold (a pipeline's arms and seeds share the actors), through the same :meth:`TrainerRank._start_run` as the
first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supo.distributed.weight_sync import WEIGHT_SYNCS, SyncResult, make_sender
from supo.trainer.fsdp import reshard, shard
from supo.trainer.policy_trainer import UpdateStats
from supo.types import TrainingSample


class TrainerRank:
    """One trainer rank (a Ray actor: the group applies ``ray.remote`` with its resources when creating it).

    ``model_path``: the policy's HF folder (its weights and tokenizer; rank 0 writes checkpoints in that format);
    ``weight_sync``: the ``trainer.weight_sync`` strategy whose sender rank 0 holds (``supo.distributed.weight_sync``).
    """

    def __init__(self, rank: int, world_size: int, master_addr: str, master_port: int, model_path: str, train_cfg,
                 pad_id: int, max_seq_len: int | None, seed: int, threads: int | None = None,
                 temperature: float = 1.0, plugins: Sequence[tuple[str, str | None]] = (),
                 weight_sync: str = "object-store") -> None:
        t0 = time.perf_counter()
        from supo.plugins import load_plugins

        self.plugins = load_plugins(plugins)  # before any registry is read (train.plugins, supo.plugins)
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        from supo.trainer.policy_trainer import needs_reference

        if threads is None:  # the CPUs Ray reserved for this actor (at least one)
            try:
                import ray

                threads = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
            except Exception:  # noqa: BLE001 - outside Ray
                threads = 1
        torch.set_num_threads(max(1, int(threads)))
        self.rank, self.world_size = rank, world_size
        self.model_path = str(model_path)
        self._export: tuple[Any, Any] | None = None  # rank 0's unsharded CPU copy and tokenizer, for HF checkpoints
        self.weight_sync = weight_sync
        self.sender = make_sender(weight_sync) if rank == 0 else None
        self.cuda = torch.cuda.is_available()  # Ray exposes the reserved GPU only (CUDA_VISIBLE_DEVICES)
        if self.cuda:
            torch.cuda.set_device(0)
        self.device = torch.device("cuda", 0) if self.cuda else torch.device("cpu")
        torch.manual_seed(seed)
        kwargs: dict[str, Any] = {"device_id": self.device} if self.cuda else {}
        dist.init_process_group(backend="nccl" if self.cuda else "gloo",
                                init_method=f"tcp://{master_addr}:{master_port}", rank=rank, world_size=world_size,
                                **kwargs)
        self.mesh = init_device_mesh(self.device.type, (world_size,))
        self.timings = {"process_group_s": time.perf_counter() - t0}  # rank 0 waits here for the others
        self.model = self._load_sharded(model_path)
        self.ref = None
        if needs_reference(train_cfg):  # the frozen reference policy, sharded the same way
            self.ref = self._load_sharded(model_path)
            for p in self.ref.parameters():
                p.requires_grad_(False)
        self._start_run(train_cfg, pad_id, max_seq_len, seed, temperature)
        self.timings["total_s"] = time.perf_counter() - t0

    def _load_sharded(self, model_path: str):
        """The HF policy at ``model_path`` on this rank's device, sharded over the group's mesh."""
        from supo.models import load_policy

        m = load_policy(model_path)
        if self.cuda:
            m = m.to(self.device)
        shard(m, self.mesh)
        return m

    def _start_run(self, train_cfg, pad_id: int, max_seq_len: int | None, seed: int, temperature: float) -> None:
        """A run's trainer over the rank's (sharded) policy and reference: a fresh optimizer built from
        ``train_cfg``, the update counter at 0 — the one place a rank builds its :class:`PolicyTrainer`."""
        from supo.trainer.policy_trainer import PolicyTrainer

        self.pad_id = pad_id
        self.trainer = PolicyTrainer(self.model, train_cfg, pad_id, max_seq_len, seed, rank=self.rank,
                                     world_size=self.world_size, ref_model=self.ref, temperature=temperature)

    # -- training -----------------------------------------------------------------------------------------------------

    def update(self, samples: Sequence[TrainingSample]) -> UpdateStats:
        return self.trainer.update(list(samples))

    def ping(self) -> dict[str, Any]:
        import torch

        from supo.algo.advantage import ADVANTAGE_ESTIMATORS
        from supo.algo.loss import POLICY_LOSSES
        from supo.algo.objective import AGGREGATIONS
        from supo.plugins import LOADED

        return {"rank": self.rank, "world_size": self.world_size, "device": str(self.device),
                "threads": torch.get_num_threads(), "pid": os.getpid(), "timings": dict(self.timings),
                "plugins": list(LOADED), "policy_losses": list(POLICY_LOSSES),
                "advantages": list(ADVANTAGE_ESTIMATORS), "aggregations": list(AGGREGATIONS)}

    # -- state (every rank must call these: they gather or scatter) ----------------------------------------------------

    def full_state_dict(self, which: str = "policy", cpu: bool = True) -> dict | None:
        """The full (unsharded) model state dict as plain tensors on rank 0 (on CPU, or with ``cpu=False`` on this
        rank's device); None on the other ranks. ``which="ref"``: the frozen KL reference instead (None everywhere
        when there is none)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        model = self.model if which == "policy" else self.ref
        if model is None:
            return None
        reshard(model)
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=cpu))
        if self.rank != 0:
            return None
        return {k: v.detach().cpu() if cpu else v.detach() for k, v in sd.items()}

    def optimizer_state_dict(self) -> dict | None:
        """The full optimizer state dict (keyed by parameter names) on rank 0; None on the other ranks."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        if not self.trainer.optimizer.state:
            # no step taken yet: nothing to save (and get_optimizer_state_dict would initialise the state with a
            # zero-lr step, which sets Adam's step count to 1 and so changes the bias correction of later steps)
            return {} if self.rank == 0 else None
        reshard(self.model)
        sd = get_optimizer_state_dict(self.model, self.trainer.optimizer,
                                      options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sd if self.rank == 0 else None

    def load_state(self, model_sd: dict, optim_sd: dict | None, ref_sd: dict | None = None) -> None:
        """Load full state dicts (every rank gets the whole dicts and keeps its shard); ``ref_sd``: the KL
        reference's, when there is one."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        reshard(self.model)
        set_model_state_dict(self.model, dict(model_sd), options=opts)
        if optim_sd:
            set_optimizer_state_dict(self.model, self.trainer.optimizer, _copy_nested(optim_sd), options=opts)
        else:  # saved before any step: a fresh optimizer
            self.trainer.optimizer.state.clear()
        if ref_sd and self.ref is not None:
            reshard(self.ref)
            set_model_state_dict(self.ref, dict(ref_sd), options=opts)

    def reset(self, source: dict | str, train_cfg, max_seq_len: int | None, seed: int, pad_id: int,
              temperature: float = 1.0, plugins: Sequence[tuple[str, str | None]] = ()) -> None:
        """Start a new run on this rank: the weights ``source`` — a full state dict, or an HF model folder every rank
        reads itself (it also becomes the folder checkpoints take their tokenizer from) — also the KL reference's, a
        fresh optimizer built from ``train_cfg``, the sequence limit, seed and sampling temperature of that run, its
        plugins imported: what a new actor would hold, without its start-up."""
        import torch

        from supo.models import load_policy
        from supo.plugins import load_plugins
        from supo.trainer.policy_trainer import needs_reference

        load_plugins(plugins)
        if isinstance(source, (str, Path)):
            if str(source) != self.model_path:
                self.model_path, self._export = str(source), None
            model_sd = load_policy(source).state_dict()
        else:
            model_sd = source
        torch.manual_seed(seed)
        if needs_reference(train_cfg) != (self.ref is not None):
            raise ValueError("reset: the runs of one trainer group must all keep a reference policy or none "
                             "(train.kl_coef > 0 or train.log_kl_to_init)")
        self.load_state(model_sd, None, model_sd if self.ref is not None else None)
        self._start_run(train_cfg, pad_id, max_seq_len, seed, temperature)

    # -- the weight path and checkpoints (every rank must call these: they gather) -----------------------------------

    def connect_weight_sync(self, workers: Sequence[Any]) -> None:
        """Rank 0 sets up its sender's transport to the rollout workers (``workers``: their actor handles)."""
        if self.sender is not None:
            self.sender.connect(workers)

    def sync_weights(self, workers: Sequence[Any]) -> SyncResult | None:
        """Gather the current weights and (rank 0) send them to ``workers`` itself; rank 0's :class:`SyncResult`."""
        sd = self.full_state_dict(cpu=WEIGHT_SYNCS[self.weight_sync][0].cpu_state_dict)
        return self.sender.send(sd, workers) if self.sender is not None else None

    def _exporter(self) -> tuple[Any, Any]:
        """Rank 0's unsharded CPU model and tokenizer of ``model_path``, loaded once: the HF format it writes."""
        if self._export is None:
            from supo.models import load_policy, load_tokenizer

            self._export = (load_policy(self.model_path), load_tokenizer(self.model_path))
        return self._export

    def _trainer_state(self) -> dict | None:
        """Everything needed to resume (gathered: every rank calls it; rank 0's, None elsewhere): ``model`` and
        ``optimizer`` (full state dicts; the optimizer's keyed by parameter names, ``{}`` before the first step),
        ``updates`` (seeds the mini-batch shuffle), ``world_size`` (informational: a state loads at any world size)
        and, with a reference policy, ``ref_model`` — what :meth:`restore_from` reads back."""
        model_sd, optim_sd, ref_sd = self.full_state_dict(), self.optimizer_state_dict(), self.full_state_dict("ref")
        if self.rank != 0:
            return None
        state = {"model": model_sd, "optimizer": optim_sd, "updates": int(self.trainer.updates),
                 "world_size": self.world_size}
        if ref_sd is not None:  # kl_coef > 0: the reference stays the initial policy after a resume from elsewhere
            state["ref_model"] = ref_sd
        return state

    def save_checkpoint(self, out: str, step: int, history: list[dict], mlflow_run_id: str | None,
                        extra: dict | None, rng: dict) -> str | None:
        """A resumable checkpoint ``<out>/step_<step>`` (``supo.checkpoint``), written by rank 0: the policy in HF
        format, :meth:`_trainer_state`, the driver's ``rng`` state and ``history``."""
        from supo.checkpoint import save_checkpoint

        state = self._trainer_state()
        if state is None:
            return None
        model, tokenizer = self._exporter()
        model.load_state_dict(state["model"], strict=False)
        return str(save_checkpoint(out, step=step, model=model, tokenizer=tokenizer, trainer_state=state,
                                   history=history, mlflow_run_id=mlflow_run_id, extra=extra, rng=rng))

    def save_model(self, out: str) -> str | None:
        """The current policy in HF format (weights, config, tokenizer) at ``out``, written by rank 0."""
        sd = self.full_state_dict()
        if self.rank != 0:
            return None
        model, tokenizer = self._exporter()
        model.load_state_dict(sd, strict=False)
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        return str(out)

    def restore_from(self, checkpoint: str) -> int:
        """Load a checkpoint folder's trainer state (every rank reads the file): weights, optimizer, update counter
        and, when saved, the KL reference. Returns the update counter."""
        import torch

        from supo.checkpoint import TRAINER_STATE

        state = torch.load(Path(checkpoint) / TRAINER_STATE, weights_only=False, mmap=True)["trainer"]
        self.load_state(state["model"], state.get("optimizer"), state.get("ref_model"))
        self.trainer.updates = int(state.get("updates", 0))
        return self.trainer.updates

    def destroy(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _copy_nested(d):
    """A structural copy (the loaders pop and replace entries in place); tensors are shared, not copied."""
    if isinstance(d, dict):
        return {k: _copy_nested(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_copy_nested(v) for v in d]
    return d
