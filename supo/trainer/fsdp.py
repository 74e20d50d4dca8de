"""FSDP2 helpers shared by the trainer (:mod:`supo.trainer.policy_trainer`) and the trainer ranks
(:mod:`supo.distributed.trainer_rank`): shard a policy, put it back in its sharded state, tell whether it is sharded.

Sharding changes where parameters live, never the update's numbers (R10: the reduced gradient is the single-process
one, see ``policy_trainer``'s module docstring).
"""

from __future__ import annotations


def shard(model, mesh) -> None:
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


def reshard(model) -> None:
    """Put every FSDP group of ``model`` back in its sharded state (after a forward without backward the root stays
    unsharded)."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def is_fsdp(model) -> bool:
    """Whether ``model`` was sharded with ``fully_shard``."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(model, FSDPModule)
