"""Rollout workers: Ray actors that each hold an engine (``engine.backend``: vLLM or transformers) and step their own environments.

The driver hands a step's rollouts to the pool; the pool cuts them into one contiguous shard per worker, runs the
shards in parallel and returns the rollouts in the driver's order. After each policy update trainer rank 0 sends the
new weights to every worker itself (``supo.distributed.weight_sync``: through Ray's object store, or a NCCL broadcast
on CUDA) and each worker loads them in place (``reload_weights``, then a prefix-cache reset); the driver never holds
them. :meth:`RolloutPool.push_weights` still loads a state dict the caller holds (tools and tests).

A worker that dies (its process is killed, it runs out of memory) is restarted with the current weights (the object
store's copy, or a fresh sync from the trainer) and its shard of the step is redone; the pool logs one line saying
so.

Sampling is reproducible: before each shard the worker seeds torch's global generator, which the in-process engine's
sampler draws from, with ``seed + shard index`` — the same step with the same weights gives the same rollouts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from supo.distributed.weight_sync import make_receiver

from supo.rollout.agent_loop import LoopSettings
from supo.types import Rollout, Task

log = logging.getLogger("supo.rollout")


class RolloutWorker:
    """One engine + its environments. Created through :class:`RolloutPool` as a Ray actor."""

    def __init__(self, model_path: str, cfg, *, temperature: float, top_p: float, seed: int, threads: int = 0,
                 plugins: Sequence[tuple[str, str | None]] = ()) -> None:
        import os

        from supo.plugins import load_plugins

        self.plugins = load_plugins(plugins)  # before the env registry is read (train.plugins, supo.plugins)

        if threads:  # Ray sets OMP_NUM_THREADS=1 in actors; rollouts and training alternate, so use the node's cores
            os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        from supo.engines.registry import make_engine
        from supo.models import load_tokenizer
        from supo.rollout.templates import Templates

        if threads:
            torch.set_num_threads(threads)
        self.policy = make_engine(model_path, cfg.engine, seed=seed, temperature=temperature, top_p=top_p)
        self.receiver = make_receiver(cfg.trainer.weight_sync)
        self.tokenizer = load_tokenizer(model_path)
        self.templates = Templates.from_config(self.tokenizer, cfg)
        self.make_env = cfg.env_spec.make_env
        self.judge_summary = cfg.env_spec.summary_oracle
        self.env_threads = cfg.rollout.env_threads

    def run(self, items: Sequence[tuple[Task, str, int]], settings: LoopSettings, seed: int,
            keep_transcript: bool = False) -> list[Rollout]:
        import torch

        from supo.rollout.agent_loop import run_rollouts

        torch.manual_seed(seed)
        return run_rollouts(items, self.policy, self.tokenizer, self.templates, settings, self.make_env, seed=seed,
                            keep_transcript=keep_transcript, env_threads=self.env_threads,
                            judge_summary=self.judge_summary)

    def push_weights(self, state_dict: dict) -> float:
        return self.policy.push_weights(state_dict)

    def connect_weight_sync(self, info: Any) -> None:
        """This worker's part of the weight-sync set-up (called by trainer rank 0's sender)."""
        self.receiver.connect(info)

    def receive_weights(self, payload: Any) -> float:
        """Load the weights trainer rank 0 sends (``payload`` as its strategy carries them); the seconds it took."""
        sd = self.receiver.receive(payload)
        return self.policy.push_weights(sd, to_cpu=not any(t.is_cuda for t in sd.values()))

    def engine_stats(self) -> dict[str, float]:
        p = self.policy
        return {"tokens_generated": p.tokens_generated, "generate_seconds": p.generate_seconds,
                "start_seconds": p.start_seconds}

    def pid(self) -> int:
        import os

        return os.getpid()


@dataclass
class PendingStep:
    """A step's rollouts in flight on the pool (``RolloutPool.submit``): each worker's share and its ObjectRef."""

    parts: list[list[tuple[Task, str, int]]]
    settings: LoopSettings
    seed: int
    keep_transcript: bool
    refs: dict[int, Any]


class RolloutPool:
    """``num_workers`` :class:`RolloutWorker` actors; spreads a step's rollouts across them."""

    def __init__(self, num_workers: int, model_path: str, cfg, *, temperature: float, seed: int,
                 num_cpus_per_worker: float = 1.0, threads_per_worker: int | None = None, max_restarts: int = 3,
                 plugins: Sequence[tuple[str, str | None]] = ()) -> None:
        """``threads_per_worker`` defaults to this node's cores divided among the workers; ``plugins``: the
        ``train.plugins`` refs (``supo.plugins.import_plugins``) every worker imports when it starts."""
        import os

        if num_workers < 1:
            raise ValueError(f"rollout.num_workers must be ≥ 1, got {num_workers}")
        if threads_per_worker is None:
            threads_per_worker = max(1, (os.cpu_count() or 1) // num_workers)
        self.num_workers = num_workers
        from pathlib import Path

        self._args = (str(Path(model_path).resolve()) if Path(model_path).exists() else str(model_path), cfg)
        self._kwargs = dict(temperature=temperature, top_p=cfg.rollout.top_p, seed=seed, threads=threads_per_worker,
                            plugins=[tuple(p) for p in plugins])
        self._num_cpus = num_cpus_per_worker
        self._weights: Any = None  # the ObjectRef of the latest weights, for restarted workers
        self.on_restart: Callable[[int], None] | None = None  # without an ObjectRef: bring worker k up to date
        self.max_restarts = max_restarts
        self.restarts = 0
        self.workers = [self._spawn() for _ in range(num_workers)]
        ray.get([w.pid.remote() for w in self.workers])  # wait until every engine is up

    def _spawn(self):
        actor_cls = ray.remote(num_cpus=self._num_cpus)(RolloutWorker)
        return actor_cls.remote(*self._args, **self._kwargs)

    def _restart(self, k: int, why: BaseException) -> None:
        self.restarts += 1
        if self.restarts > self.max_restarts * self.num_workers:
            raise RuntimeError(f"rollout worker {k} died again after {self.restarts - 1} restarts: {why}") from why
        log.warning("rollout worker %d died (%s); restarting it and redoing its share of the step", k,
                    why.__class__.__name__)
        try:
            ray.kill(self.workers[k], no_restart=True)
        except Exception:  # already gone
            pass
        self.workers[k] = self._spawn()
        if self._weights is not None:
            ray.get(self.workers[k].push_weights.remote(self._weights))
        elif self.on_restart is not None:
            self.on_restart(k)

    @staticmethod
    def shards(n: int, num_workers: int) -> list[range]:
        """Contiguous, balanced index ranges, one per worker (some empty when n < num_workers)."""
        size, extra = divmod(n, num_workers)
        out, start = [], 0
        for k in range(num_workers):
            end = start + size + (1 if k < extra else 0)
            out.append(range(start, end))
            start = end
        return out

    def run(self, items: Sequence[tuple[Task, str, int]], settings: LoopSettings, seed: int,
            keep_transcript: bool = False) -> list[Rollout]:
        """All rollouts of a step, in the order of ``items``."""
        return self.collect(self.submit(items, settings, seed, keep_transcript))

    def submit(self, items: Sequence[tuple[Task, str, int]], settings: LoopSettings, seed: int,
               keep_transcript: bool = False) -> PendingStep:
        """Start a step's rollouts and return at once. Each worker runs its calls in the order they reach it, so a
        weight push sent after this samples the next step, not this one."""
        shards = self.shards(len(items), self.num_workers)
        step = PendingStep([[items[i] for i in sh] for sh in shards], settings, seed, keep_transcript, {})
        for k, part in enumerate(step.parts):
            if part:
                step.refs[k] = self.workers[k].run.remote(part, settings, seed + k, keep_transcript)
        return step

    def collect(self, step: PendingStep) -> list[Rollout]:
        """Wait for a submitted step's rollouts (a worker that died is restarted and redoes its share, from the
        weights the pool last sent)."""
        done: dict[int, list[Rollout]] = {k: [] for k, part in enumerate(step.parts) if not part}
        while step.refs:
            for k, ref in sorted(step.refs.items()):
                try:
                    done[k] = ray.get(ref)
                    del step.refs[k]
                except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as e:
                    self._restart(k, e)
                    step.refs[k] = self.workers[k].run.remote(step.parts[k], step.settings, step.seed + k,
                                                              step.keep_transcript)
        return [r for k in range(len(step.parts)) for r in done[k]]

    def push_weights(self, state_dict: dict) -> float:
        """Put the weights (held by the caller) into the object store once; every worker loads them in place. Returns
        wall seconds."""
        t0 = time.perf_counter()
        self._weights = ray.put(state_dict)
        ray.get([w.push_weights.remote(self._weights) for w in self.workers])
        return time.perf_counter() - t0

    def current_weights(self, ref: Any) -> None:
        """Remember the ObjectRef of the weights the workers now serve (sent by trainer rank 0), for restarts."""
        self._weights = ref

    def engine_stats(self) -> list[dict[str, float]]:
        return ray.get([w.engine_stats.remote() for w in self.workers])

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:
                pass
        self.workers = []
