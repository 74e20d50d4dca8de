"""``trainer.backend: local`` — the training loop's actors in the driver's own process: one engine
(``engine.backend``: vLLM or ``transformers``) and one trainer rank (world size 1), no Ray.

:class:`LocalActors` has the contract :func:`supo.train_loop.train` drives (:class:`~supo.train_loop.Actors`'):
``submit``/``collect`` (the step's rollouts, :class:`supo.step.RolloutSource`), ``update``/``sync``
(:class:`supo.step.Learner`), ``sync_weights``, ``shutdown`` and a ``group`` with the trainer group's run methods
(``reset``, ``restore_from``, ``save_checkpoint``, ``save_model``). The rank is the very
:class:`~supo.distributed.trainer_rank.TrainerRank` the Ray path runs as an actor (FSDP2 over a mesh of one, gloo on
CPU, NCCL on CUDA), built here as a plain object; the rollouts are the agent loop a rollout worker runs, seeded the
same way (``torch.manual_seed(seed)`` before a step's only shard), with the env's summary oracle. After each update
the rank's full state dict is pushed into the engine; on one device the ``hf`` engine takes those tensors as its
parameters (no copy).

What it is for: machines without Ray (or a GPU machine without a package index), debugging in one process, and the
GPU script (``scripts/gpu_smollm2.sh``). What it leaves out: several ranks or workers, ``train.overlap`` and the
weight transports (rejected by the config checks), a restarted worker (one process: a failure ends the run).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

class LocalGroup:
    """The trainer group's methods (:class:`~supo.distributed.trainer_group.TrainerGroup`) on one in-process rank."""

    def __init__(self, rank: Any) -> None:
        self.rank = rank

    def update(self, samples):
        return self.rank.update(list(samples))

    def reset(self, source, train_cfg, max_seq_len, seed: int, pad_id: int, temperature: float = 1.0,
              plugins: Sequence[tuple[str, str | None]] = ()) -> None:
        src = str(Path(source).resolve()) if isinstance(source, (str, Path)) else source
        self.rank.reset(src, train_cfg, max_seq_len, seed, pad_id, temperature, [tuple(p) for p in plugins])

    def restore_from(self, checkpoint: str | Path) -> int:
        return self.rank.restore_from(str(Path(checkpoint).resolve()))

    def save_checkpoint(self, out, step: int, history: list[dict], mlflow_run_id: str | None, extra: dict | None,
                        rng: dict) -> Path:
        return Path(self.rank.save_checkpoint(str(Path(out).resolve()), step, list(history), mlflow_run_id, extra,
                                              rng))

    def save_model(self, out) -> Path:
        return Path(self.rank.save_model(str(Path(out).resolve())))

    def state_dict(self) -> dict:
        """The full weights, on the rank's device (rank 0 of a group of one holds them all)."""
        return self.rank.full_state_dict(cpu=not self.rank.cuda)

    def shutdown(self) -> None:
        self.rank.destroy()


class LocalActors:
    """An engine and a trainer rank in this process, for the runs of ``cfgs`` one after another."""

    def __init__(self, engine: Any, group: LocalGroup, runtime: Any, cfg: Any) -> None:
        from supo.step import LocalRollouts

        self.engine, self.group = engine, group
        self.rollouts = LocalRollouts(engine, runtime, cfg.env_spec.make_env, judge_summary=cfg.env_spec.summary_oracle,
                                      env_threads=cfg.rollout.env_threads)

    @classmethod
    def start(cls, cfgs: list[Any], init: str | Path, log=print) -> "LocalActors":
        """The engine (``engine.backend``, the largest sequence limit of ``cfgs``) and the rank, from ``init``."""
        import dataclasses

        import torch

        from supo.distributed import free_port
        from supo.distributed.trainer_rank import TrainerRank
        from supo.engines.registry import make_engine
        from supo.models import load_tokenizer
        from supo.rollout.templates import Templates
        from supo.runtime import shared_actor_settings

        cfg = cfgs[0]
        t0 = time.perf_counter()
        engine_cfg, plugins = shared_actor_settings(cfgs)
        threads = torch.get_num_threads()
        engine = make_engine(init, engine_cfg, seed=cfg.seed, temperature=cfg.rollout.temperature,
                             top_p=cfg.rollout.top_p)
        torch.set_num_threads(cfg.trainer.threads_per_rank or threads)  # the engine and the rank take turns
        tok = load_tokenizer(init)
        rank = TrainerRank(0, 1, "127.0.0.1", free_port(), str(Path(init).resolve()), cfg.train, tok.pad_token_id,
                           None, cfg.seed, threads=torch.get_num_threads(), temperature=cfg.rollout.temperature,
                           plugins=[tuple(p) for p in plugins])
        runtime = _Runtime(tok, Templates.from_config(tok, dataclasses.replace(cfg, engine=engine_cfg)))
        log(f"local actors up in {time.perf_counter() - t0:.1f}s: engine {engine_cfg.backend} on "
            f"{getattr(engine, 'device', 'cpu')}, one trainer rank ({rank.device}), engine limit "
            f"{engine_cfg.max_model_len}; no Ray")
        return cls(engine, LocalGroup(rank), runtime, cfg)

    # -- the step's contracts (supo.step) ---------------------------------------------------------------------------

    def submit(self, items: list[tuple], settings, seed: int) -> tuple:
        return self.rollouts.submit(items, settings, seed)

    def collect(self, pending: tuple) -> list:
        return self.rollouts.collect(pending)  # torch seeded with the step's seed, as a worker's only shard is

    def update(self, samples):
        return self.group.update(samples)

    def sync(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        seconds = self.sync_weights()
        return seconds, time.perf_counter() - t0

    def sync_weights(self) -> float:
        """The rank's current weights into the engine; the seconds the engine took to load them."""
        return self.engine.push_weights(self.group.state_dict(), to_cpu=not self.group.rank.cuda)

    def shutdown(self) -> None:
        self.group.shutdown()


class _Runtime:
    """What the agent loop needs besides the engine: the tokenizer and the templates."""

    def __init__(self, tokenizer: Any, templates: Any) -> None:
        self.tokenizer, self.templates = tokenizer, templates
