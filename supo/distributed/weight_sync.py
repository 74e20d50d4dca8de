"""The weight path from the trainer to the rollout engines, without the driver (docs/design.md §4).

After each update the trainer ranks gather the full state dict (an FSDP2 collective: every rank takes part) and
trainer rank 0 sends it to every rollout worker itself; the driver only says when, and holds at most an ObjectRef,
never the tensors. A strategy has two halves, chosen by ``trainer.weight_sync`` (:data:`WEIGHT_SYNCS`):

* :class:`WeightSender` — in trainer rank 0: ``connect(workers)`` once the workers exist, ``send(state_dict,
  workers)`` after every update;
* :class:`WeightReceiver` — in each rollout worker: ``connect(info)`` (its part of the set-up), ``receive(payload)``
  → the state dict to load into its engine.

``object-store`` (default; CPU, one node or many): rank 0 puts the state dict into Ray's object store once and calls
every worker's ``receive_weights`` with its ObjectRef; Ray hands each worker the dict (from shared memory on rank 0's
node). The ref goes back to the driver, which keeps it so a restarted worker loads the current weights.

``nccl`` (CUDA; as SkyRL's broadcast strategy): rank 0 and every worker's engine form one NCCL communicator (vLLM's
``StatelessProcessGroup`` + ``PyNcclCommunicator``; rank 0 is its rank 0, worker ``k`` its rank ``k + 1``); after an
update rank 0 tells the workers the tensors' names, dtypes and shapes, then broadcasts them one by one from GPU
memory; each worker receives into GPU buffers and loads them in place. This path needs CUDA and is not exercised by
the test suite (no GPU there): it is written against vLLM 0.32's API and kept behind this interface.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class SyncResult:
    """What a send returns to the driver: the seconds the workers took to load, and (object store) the ObjectRef of
    the weights, for a restarted worker."""

    seconds: float
    ref: Any = None


class WeightSender(ABC):
    """Trainer rank 0's half."""

    cpu_state_dict: bool = True
    """Whether the gathered state dict should be offloaded to CPU (object store) or stay on the device (NCCL)."""

    def connect(self, workers: Sequence[Any]) -> None:  # noqa: B027 - optional set-up
        """Set up the transport to ``workers`` (Ray actor handles of rollout workers)."""

    @abstractmethod
    def send(self, state_dict: dict, workers: Sequence[Any]) -> SyncResult:
        """Deliver ``state_dict`` to every worker; return when every worker has loaded it."""


class WeightReceiver(ABC):
    """A rollout worker's half."""

    def connect(self, info: Any) -> None:  # noqa: B027 - optional set-up
        """This worker's part of the set-up (``info`` from the sender's ``connect``)."""

    @abstractmethod
    def receive(self, payload: Any) -> dict:
        """The state dict carried by ``payload`` (what the sender passed to ``receive_weights``)."""


class ObjectStoreSender(WeightSender):
    def send(self, state_dict: dict, workers: Sequence[Any]) -> SyncResult:
        import ray

        t0 = time.perf_counter()
        ref = ray.put(state_dict)
        ray.get([w.receive_weights.remote(ref) for w in workers])  # a top-level ref: each worker gets the dict
        return SyncResult(time.perf_counter() - t0, ref)


class ObjectStoreReceiver(WeightReceiver):
    def receive(self, payload: Any) -> dict:
        if not isinstance(payload, dict):
            raise TypeError(f"object-store weight sync: expected a state dict, got {type(payload).__name__}")
        return payload


def _need_cuda(what: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"trainer.weight_sync: nccl needs CUDA ({what} has no GPU); use object-store on CPU")


class NcclSender(WeightSender):
    """Rank 0 of a communicator spanning it and every worker's engine (CUDA only; see the module docstring)."""

    cpu_state_dict = False

    def __init__(self) -> None:
        _need_cuda("trainer rank 0")
        self.comm = None

    def connect(self, workers: Sequence[Any]) -> None:
        import ray
        import torch
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        from supo.distributed import free_port

        host, port = ray.util.get_node_ip_address(), free_port()
        world = 1 + len(workers)
        joined = [w.connect_weight_sync.remote({"host": host, "port": port, "rank": k + 1, "world_size": world})
                  for k, w in enumerate(workers)]
        pg = StatelessProcessGroup.create(host=host, port=port, rank=0, world_size=world)
        self.comm = PyNcclCommunicator(pg, device=torch.device("cuda", torch.cuda.current_device()))
        ray.get(joined)

    def send(self, state_dict: dict, workers: Sequence[Any]) -> SyncResult:
        import ray
        import torch

        if self.comm is None:
            raise RuntimeError("nccl weight sync: connect() the workers before the first send")
        t0 = time.perf_counter()
        tensors = {k: v.detach().to("cuda").contiguous() for k, v in state_dict.items()}
        meta = [(k, str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in tensors.items()]
        done = [w.receive_weights.remote(meta) for w in workers]  # the workers post their receives in this order
        stream = torch.cuda.current_stream()
        for k, _, _ in meta:
            self.comm.broadcast(tensors[k], src=0, stream=stream)
        stream.synchronize()
        ray.get(done)
        return SyncResult(time.perf_counter() - t0)


class NcclReceiver(WeightReceiver):
    def __init__(self) -> None:
        _need_cuda("this rollout worker")
        self.comm = None

    def connect(self, info: Any) -> None:
        import torch
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        pg = StatelessProcessGroup.create(host=info["host"], port=info["port"], rank=info["rank"],
                                          world_size=info["world_size"])
        self.comm = PyNcclCommunicator(pg, device=torch.device("cuda", torch.cuda.current_device()))

    def receive(self, payload: Any) -> dict:
        import torch

        if self.comm is None:
            raise RuntimeError("nccl weight sync: this worker was not connected")
        stream = torch.cuda.current_stream()
        out = {}
        for name, dtype, shape in payload:
            buf = torch.empty(shape, dtype=getattr(torch, dtype), device="cuda")
            self.comm.broadcast(buf, src=0, stream=stream)
            out[name] = buf
        stream.synchronize()
        return out


WEIGHT_SYNCS: dict[str, tuple[type[WeightSender], type[WeightReceiver]]] = {
    "object-store": (ObjectStoreSender, ObjectStoreReceiver),
    "nccl": (NcclSender, NcclReceiver),
}
"""``trainer.weight_sync`` → (sender, receiver)."""


def _strategy(name: str) -> tuple[type[WeightSender], type[WeightReceiver]]:
    try:
        return WEIGHT_SYNCS[name]
    except KeyError:
        raise ValueError(f"unknown weight sync {name!r}; choose one of {', '.join(WEIGHT_SYNCS)}") from None


def make_sender(name: str) -> WeightSender:
    return _strategy(name)[0]()


def make_receiver(name: str) -> WeightReceiver:
    return _strategy(name)[1]()
