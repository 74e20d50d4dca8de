"""The trainer group: ``world_size`` Ray actors forming one ``torch.distributed`` group, the policy sharded with FSDP2.

Each :class:`TrainerRank` joins the process group (gloo on CPU, NCCL on CUDA), loads the policy, applies
``fully_shard`` to every decoder layer and then to the root, and wraps it in a data-parallel
:class:`~supo.trainer.policy_trainer.PolicyTrainer`. :class:`TrainerGroup` is the driver's handle: it puts a step's
samples into the object store once and calls every rank; every rank runs the same sequence of methods in the same
order (Ray runs one actor's calls in the order one caller submits them), which is what the collectives inside need.

Weights leave the group as rank 0's full state dict (plain CPU tensors, the HF keys, tied ``lm_head.weight``
included), for the rollout workers' ``reload_weights``. :meth:`TrainerGroup.checkpoint_state` /
:meth:`TrainerGroup.restore` round-trip the model, the optimizer and the update counter, so training continues
exactly as if it had not stopped; with ``kl_coef > 0`` they carry the frozen KL reference too, so it stays the
initial policy even when a resumed group is built from a checkpoint's weights.

The same code runs with ``world_size = 1`` (one rank, a mesh of one).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supo.trainer.policy_trainer import UpdateStats, _reshard
from supo.types import TrainingSample


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _rendezvous_probe() -> tuple[str, str, int]:
    """Run on the node that will host rank 0: its node id, its IP and a port free there."""
    import ray

    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), _free_port()


def _shard(model, mesh) -> None:
    """FSDP2: ``fully_shard`` every decoder layer (the HF ``_no_split_modules`` classes), then the root."""
    from torch.distributed.fsdp import fully_shard

    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:  # fall back to the usual HF layout
        inner = getattr(model, "model", None)
        layers = list(getattr(inner, "layers", []))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


class TrainerRank:
    """One trainer rank (a Ray actor: the group applies ``ray.remote`` with its resources when creating it)."""

    def __init__(self, rank: int, world_size: int, master_addr: str, master_port: int, model_path: str, train_cfg,
                 pad_id: int, max_seq_len: int | None, seed: int, threads: int | None = None,
                 temperature: float = 1.0) -> None:
        t0 = time.perf_counter()
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        from supo.models import load_policy
        from supo.trainer.policy_trainer import PolicyTrainer, needs_reference

        if threads is None:  # the CPUs Ray reserved for this actor (at least one)
            try:
                import ray

                threads = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
            except Exception:  # noqa: BLE001 - outside Ray
                threads = 1
        torch.set_num_threads(max(1, int(threads)))
        self.rank, self.world_size = rank, world_size
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

        def load():
            m = load_policy(model_path)
            if self.cuda:
                m = m.to(self.device)
            _shard(m, self.mesh)
            return m

        self.pad_id = pad_id
        self.model = load()
        self.ref = None
        if needs_reference(train_cfg):  # the frozen reference policy, sharded the same way
            self.ref = load()
            for p in self.ref.parameters():
                p.requires_grad_(False)
        self.trainer = PolicyTrainer(self.model, train_cfg, pad_id, max_seq_len, seed, rank=rank,
                                     world_size=world_size, ref_model=self.ref, temperature=temperature)
        self.timings["total_s"] = time.perf_counter() - t0

    # -- training -----------------------------------------------------------------------------------------------------

    def update(self, samples: Sequence[TrainingSample]) -> UpdateStats:
        return self.trainer.update(list(samples))

    def set_updates(self, n: int) -> None:
        self.trainer.updates = int(n)

    def get_updates(self) -> int:
        return int(self.trainer.updates)

    def ping(self) -> dict[str, Any]:
        import torch

        return {"rank": self.rank, "world_size": self.world_size, "device": str(self.device),
                "threads": torch.get_num_threads(), "pid": os.getpid(), "timings": dict(self.timings)}

    # -- state (every rank must call these: they gather or scatter) ----------------------------------------------------

    def full_state_dict(self, which: str = "policy") -> dict | None:
        """The full (unsharded) model state dict as plain CPU tensors on rank 0; None on the other ranks.
        ``which="ref"``: the frozen KL reference instead (None everywhere when there is none)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        model = self.model if which == "policy" else self.ref
        if model is None:
            return None
        _reshard(model)
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank != 0:
            return None
        return {k: v.detach().cpu() for k, v in sd.items()}

    def optimizer_state_dict(self) -> dict | None:
        """The full optimizer state dict (keyed by parameter names) on rank 0; None on the other ranks."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        if not self.trainer.optimizer.state:
            # no step taken yet: nothing to save (and get_optimizer_state_dict would initialise the state with a
            # zero-lr step, which sets Adam's step count to 1 and so changes the bias correction of later steps)
            return {} if self.rank == 0 else None
        _reshard(self.model)
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
        _reshard(self.model)
        set_model_state_dict(self.model, dict(model_sd), options=opts)
        if optim_sd:
            set_optimizer_state_dict(self.model, self.trainer.optimizer, _copy_nested(optim_sd), options=opts)
        else:  # saved before any step: a fresh optimizer
            self.trainer.optimizer.state.clear()
        if ref_sd and self.ref is not None:
            _reshard(self.ref)
            set_model_state_dict(self.ref, dict(ref_sd), options=opts)

    def reset(self, model_sd: dict, train_cfg, max_seq_len: int | None, seed: int, pad_id: int,
              temperature: float = 1.0) -> None:
        """Start a new run on this rank: the weights ``model_sd`` (also the KL reference's), a fresh optimizer built
        from ``train_cfg``, the sequence limit, seed and sampling temperature of that run — what a new actor would
        hold, without its start-up."""
        import torch

        from supo.trainer.policy_trainer import PolicyTrainer, needs_reference

        torch.manual_seed(seed)
        if needs_reference(train_cfg) != (self.ref is not None):
            raise ValueError("reset: the runs of one trainer group must all keep a reference policy or none "
                             "(train.kl_coef > 0 or train.log_kl_to_init)")
        self.pad_id = pad_id
        self.load_state(model_sd, None, model_sd if self.ref is not None else None)
        self.trainer = PolicyTrainer(self.model, train_cfg, self.pad_id, max_seq_len, seed, rank=self.rank,
                                     world_size=self.world_size, ref_model=self.ref, temperature=temperature)

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


class TrainerGroup:
    """``world_size`` :class:`TrainerRank` actors sharing one process group; the driver-side handle.

    ``num_cpus_per_rank``: Ray CPUs each rank reserves; ``threads_per_rank``: torch threads in each rank (None = the
    reserved CPUs). ``use_gpu``: one GPU per rank and NCCL; None = when the Ray cluster has GPUs.
    """

    def __init__(self, world_size: int, model_path: str, train_cfg, pad_id: int, max_seq_len: int | None, seed: int,
                 num_cpus_per_rank: float = 1, threads_per_rank: int | None = None,
                 use_gpu: bool | None = None, temperature: float = 1.0) -> None:
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
                temperature))
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

    def state_dict(self) -> dict:
        """The full model state dict (plain CPU tensors, HF keys) from rank 0."""
        return self._all("full_state_dict")[0]

    def checkpoint_state(self) -> dict:
        """Everything needed to resume: ``model`` and ``optimizer`` (full state dicts, rank 0's; the optimizer's is
        keyed by parameter names and ``{}`` before the first step), ``updates`` (seeds the mini-batch shuffle),
        ``world_size`` (informational: a state loads at any world size) and, with ``kl_coef > 0``, ``ref_model``."""
        import ray

        model_refs = [a.full_state_dict.remote() for a in self.ranks]
        optim_refs = [a.optimizer_state_dict.remote() for a in self.ranks]
        ref_refs = [a.full_state_dict.remote("ref") for a in self.ranks]
        updates = ray.get(self.ranks[0].get_updates.remote())
        state = {"model": self._gather(model_refs)[0], "optimizer": self._gather(optim_refs)[0], "updates": updates,
                 "world_size": self.world_size}
        ref = self._gather(ref_refs)[0]
        if ref is not None:  # kl_coef > 0: the reference stays the initial policy after a resume from elsewhere
            state["ref_model"] = ref
        return state

    def restore(self, state: dict) -> None:
        """Load a :meth:`checkpoint_state` (from any world size) into every rank."""
        import ray

        model_ref = ray.put(state["model"])
        optim_ref = ray.put(state.get("optimizer"))
        ref_ref = ray.put(state.get("ref_model"))
        self._all("load_state", model_ref, optim_ref, ref_ref)
        self._all("set_updates", int(state.get("updates", 0)))

    def reset(self, model_sd: dict, train_cfg, max_seq_len: int | None, seed: int, pad_id: int,
              temperature: float = 1.0) -> None:
        """Start a new run on the same actors (see :meth:`TrainerRank.reset`)."""
        import ray

        self._all("reset", ray.put(model_sd), train_cfg, max_seq_len, seed, pad_id, temperature)

    def get_updates(self) -> int:
        return self._all("get_updates")[0]

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
