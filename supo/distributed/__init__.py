"""Ray and ``torch.distributed`` plumbing: the trainer group (FSDP2 ranks as Ray actors) and Ray start-up.

Kept light: importing this package imports neither Ray nor torch; the actor modules are imported where they are used
(``supo.distributed.trainer_group``).
"""

from __future__ import annotations

import math
import os


def init_ray(num_cpus: int | float | None = None) -> None:
    """Start Ray once: join the cluster at ``RAY_ADDRESS`` when it is set, else start a local one.

    ``num_cpus`` sizes a local cluster (logical CPUs: more than the machine's cores is fine for actors that mostly
    wait); it is ignored when joining a cluster. A no-op when Ray is already initialised.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token authentication on a local cluster (quiet warning)
    # the actors do the work (engines, trainer ranks): with Ray's default worker niceness (15) any other process on
    # the machine would starve them while the driver waits
    os.environ.setdefault("RAY_worker_niceness", "0")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        cpus = None if num_cpus is None else math.ceil(num_cpus)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)


def free_port() -> int:
    """A TCP port free on this host now (for a rendezvous)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


__all__ = ["free_port", "init_ray"]
