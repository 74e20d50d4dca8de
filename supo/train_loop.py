"""`supo-cli train`: the single-controller RL loop (docs/design.md §4).

The driver runs the loop; the heavy parts are Ray actors. Each step: sample tasks → G rollouts per task, spread across
``rollout.num_workers`` rollout workers (each a vLLM engine plus its environments) → one reward per rollout →
advantages grouped by task (R8) → broadcast onto segments with overlong masking (R9) → the policy update on
``trainer.world_size`` FSDP2 ranks (R10) → trainer rank 0 sends the new weights to every rollout worker itself
(``trainer.weight_sync``: Ray's object store, or NCCL on CUDA). GRPO is the same loop with S = 0 (R11). A laptop runs
the very same code with one worker and one rank; ``trainer.backend: local`` runs the same loop with the engine and
one rank in the driver's process, without Ray (``supo.local_actors``). With ``train.overlap`` the next step's rollouts are sampled while
this step's update runs (one-step off-policy, logged as ``policy_lag``).

The driver never holds the model: the ranks read the initial weights from their folder, rank 0 sends them to the
engines and writes every checkpoint and the final HF model (``supo.distributed.trainer_group``); the driver keeps an
ObjectRef of the latest weights at most (for a restarted worker). Every ``train.checkpoint_every`` steps (and at the
end) a checkpoint is written atomically (``supo.checkpoint``);
``resume=True`` continues from the latest one — same weights, optimizer, RNG states, data cursor and MLflow run — and
ends with the same metrics as an uninterrupted run of the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from supo.checkpoint import STATE, latest_checkpoint, load_checkpoint, rng_state, set_rng_state
from supo.config import Config
from supo.data import read_tasks, split_path, update_json, write_rollouts_jsonl
from supo.layout import STEPS_DIR, metrics_file, seed_dir
from supo.local_actors import LocalActors
from supo.metrics import overlong_warning
from supo.plugins import import_plugins
from supo.results import TrainResult
from supo.runtime import build_runtime, shared_actor_settings
from supo.step import StepContext, StepHook, run_step


def resume_info(out: str | Path) -> dict:
    """What ``--resume`` would continue from: the latest checkpoint's step and MLflow run id (empty if none)."""
    path = latest_checkpoint(Path(out) / STEPS_DIR)
    if path is None:
        return {}
    st = json.loads((path / STATE).read_text())
    return {"path": str(path), "step": st["step"], "mlflow_run_id": st.get("mlflow_run_id")}


def preflight(cfg: Config, init: str | Path) -> None:
    """The checks that need the data and the tokenizer (budgets against prompts, engine limit), before any run starts."""
    tasks = read_tasks(split_path(cfg.paths.data, "train"))
    build_runtime(cfg, init, tasks, max_summaries=cfg.train_max_summaries, working_context=cfg.budget.working_context)


@dataclass
class Actors:
    """Rollout workers and trainer ranks that several runs share one after another (``train(..., actors=)``): each
    run resets them to its initial weights, optimizer and seed, and the Ray/vLLM/FSDP start-up is paid once."""

    pool: Any
    group: Any

    @classmethod
    def start(cls, cfgs: list[Config], init: str | Path, log=print) -> "Actors":
        """Actors able to run every config of ``cfgs`` (the engine's sequence limit is the largest of theirs)."""
        from supo.distributed import init_ray
        from supo.distributed.rollout_workers import RolloutPool
        from supo.distributed.trainer_group import TrainerGroup

        cfg = cfgs[0]
        engine_cfg, plugins = shared_actor_settings(cfgs)  # every run's plugins, imported in the actors too
        run_cfg = dataclasses.replace(cfg, engine=engine_cfg)
        t0 = time.perf_counter()
        n_actors = cfg.rollout.num_workers + cfg.trainer.world_size
        init_ray(num_cpus=max(n_actors * max(1.0, cfg.rollout.num_cpus_per_worker, cfg.trainer.num_cpus_per_rank), 2))
        pool = RolloutPool(cfg.rollout.num_workers, str(init), run_cfg, temperature=cfg.rollout.temperature,
                           seed=cfg.seed, num_cpus_per_worker=cfg.rollout.num_cpus_per_worker, plugins=plugins)
        # rollouts and updates alternate, so each phase may use all of the node's cores; with train.overlap they run
        # at once, and the update (off the critical path while it is shorter) gets half of its share: on 2 cores an
        # overlapped step took 9.8 s with 2 trainer threads and 5.9 s with 1 (the same rollouts, medians of 6 steps)
        threads = cfg.trainer.threads_per_rank or max(1, (os.cpu_count() or 1) // cfg.trainer.world_size
                                                      // (2 if any(c.train.overlap for c in cfgs) else 1))
        group = TrainerGroup(cfg.trainer.world_size, str(init), cfg.train, 0, None, cfg.seed,
                             num_cpus_per_rank=cfg.trainer.num_cpus_per_rank, threads_per_rank=threads,
                             temperature=cfg.rollout.temperature, plugins=plugins,
                             weight_sync=cfg.trainer.weight_sync)
        group.connect_weight_sync(pool.workers)  # rank 0 sends weights to the workers itself from now on

        actors = cls(pool, group)

        def resync(_k: int) -> None:  # a restarted worker without an object-store copy to load: sync them all
            group.connect_weight_sync(pool.workers)
            actors.sync_weights()

        pool.on_restart = resync
        log(f"actors up in {time.perf_counter() - t0:.1f}s: {cfg.rollout.num_workers} rollout worker(s), "
            f"{cfg.trainer.world_size} trainer rank(s), engine limit {engine_cfg.max_model_len}")
        return actors

    def sync_weights(self):
        """Rank 0 sends the current weights to every rollout worker; the pool keeps the ObjectRef (for a restarted
        worker). Returns rank 0's ``SyncResult``."""
        sent = self.group.sync_weights(self.pool.workers)
        self.pool.current_weights(sent.ref)
        return sent

    # the step's contracts (supo.step): the pool is the rollout source, the trainer group the learner

    def submit(self, items: list[tuple], settings, seed: int):
        return self.pool.submit(items, settings, seed=seed, keep_transcript=True)

    def collect(self, pending) -> list:
        return self.pool.collect(pending)

    def update(self, samples):
        return self.group.update(samples)

    def sync(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        sent = self.sync_weights()  # rank 0 sends them to the workers; the driver gets a ref
        return sent.seconds, time.perf_counter() - t0

    def shutdown(self) -> None:
        self.pool.shutdown()
        self.group.shutdown()


def actors_class(backend: str) -> type:
    """The actors of ``trainer.backend`` (``supo.config.schema.TRAINER_BACKENDS``): :class:`Actors` (ray) or
    :class:`~supo.local_actors.LocalActors` (local)."""
    classes = {"ray": Actors, "local": LocalActors}
    if backend not in classes:
        raise KeyError(f"trainer.backend: unknown backend {backend!r}; choose one of {', '.join(classes)}")
    return classes[backend]


def train(cfg: Config, *, init: str | Path, out: str | Path, arm: str | None = None, tracker=None, progress=None,
          resume: bool = False, log=print, actors: Actors | None = None, hooks: Sequence[StepHook] = ()) -> dict:
    """Run ``train.steps`` RL steps (:func:`supo.step.run_step`) from the model at ``init`` (or from the latest
    checkpoint in ``out``), with tracking, checkpoints and the run's files around them.

    ``actors``: run on these (:class:`Actors`, or ``trainer.backend: local``'s
    :class:`~supo.local_actors.LocalActors`; reset to ``init``'s weights, a fresh optimizer and this run's seed) and leave them up;
    without, start them for this run and shut them down at the end. ``hooks``: looks inside each step.
    """
    t_run = time.perf_counter()
    if actors is not None and resume:
        raise ValueError("--resume continues one run in its own actors; it cannot share them")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arm = arm or cfg.train.algo
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    tasks = read_tasks(split_path(cfg.paths.data, "train"))
    state = _resume_state(out, log) if resume else None
    if state is not None:
        init = state.path
    rt = build_runtime(cfg, init, tasks, max_summaries=cfg.train_max_summaries,
                       working_context=cfg.budget.working_context)
    t0 = time.perf_counter()
    own = actors is None
    if own:
        actors = actors_class(cfg.trainer.backend).start([cfg], init, log=log)
    try:
        _prepare_actors(actors, cfg, init, rt, state, fresh=own)
        log(f"train {arm}: algo={cfg.train.algo} S={cfg.train_max_summaries} W={cfg.budget.working_context} "
            f"L={rt.budgets.trigger} G={cfg.rollout.group_size} tasks/step={cfg.rollout.tasks_per_step} "
            f"steps={state.step if state else 0}->{cfg.train.steps} workers={cfg.rollout.num_workers} "
            f"world_size={cfg.trainer.world_size}; actors up in {time.perf_counter() - t0:.1f}s")
        ctx = StepContext(cfg, tasks, rt.settings, actors, actors)
        history, rollouts = _run_steps(ctx, actors.group, out, arm, state, tracker=tracker, progress=progress,
                                       log=log, hooks=hooks)
    finally:
        if own:
            actors.shutdown()
    run_id = tracker.run_id if tracker is not None else None
    write_run_files(out, cfg, arm, history, run_id)
    if rollouts:
        write_rollouts_jsonl(rollouts, out / "last_rollouts.jsonl")
    summary = train_result(cfg, arm, history, None).summary(run_seconds=time.perf_counter() - t_run)
    update_json(metrics_file(cfg.paths.metrics, "train"), {seed_dir(cfg.seed): {arm: summary}})
    first, last = history[0], history[-1]
    log(f"train {arm}: reward {first['mean_reward']:.3f} -> {last['mean_reward']:.3f}, summaries/rollout "
        f"{last['mean_summaries']:.2f}; checkpoint -> {out}")
    return {"history": history, "summary": summary}


def _resume_state(out: Path, log):
    """The latest checkpoint's state in ``out`` (``--resume``); the ranks read its weights and optimizer themselves."""
    ckpt = latest_checkpoint(out / STEPS_DIR)
    if ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {out / STEPS_DIR} (no 'latest' pointer there)")
    state = load_checkpoint(ckpt, trainer_state=False)
    log(f"resume: from {ckpt} (step {state.step})")
    return state


def _prepare_actors(actors: Actors, cfg: Config, init, rt, state, *, fresh: bool) -> None:
    """This run's weights (each rank reads them from ``init``; the driver never holds them), a fresh optimizer, its
    sequence limit and seed; then a resumed run's ranks load its checkpoint."""
    max_seq = cfg.train.max_seq_len or rt.budgets.trainer_needed
    actors.group.reset(init, cfg.train, max_seq, cfg.seed, rt.tokenizer.pad_token_id, cfg.rollout.temperature,
                       import_plugins(cfg.train.plugins))
    if not fresh:  # a shared engine still serves the previous run's policy: rank 0 sends it this run's
        actors.sync_weights()
    if state is not None:
        actors.group.restore_from(state.path)
        set_rng_state(state.rng)


def _run_steps(ctx: StepContext, group, out: Path, arm: str, state, *, tracker, progress, log,
               hooks: Sequence[StepHook]) -> tuple[list[dict], list]:
    """The loop over steps: each step, then its history row, warning, tracking, progress and checkpoint; the final
    checkpoint and HF model. Returns the history and the last step's rollouts."""
    cfg = ctx.cfg
    start, history = (state.step, list(state.history)) if state is not None else (0, [])
    run_id = tracker.run_id if tracker is not None else None
    warned, rollouts, ahead = False, [], None
    for step in range(start, cfg.train.steps):
        res = run_step(ctx, step, ahead=ahead, hooks=hooks)
        rollouts, ahead, m = res.rollouts, res.ahead, res.metrics
        history.append({"step": step, **m})
        warning = overlong_warning(history)
        if warning and not warned:
            warned = True
            log(f"warning: {arm}: {warning}")
            if tracker is not None:
                tracker.set_tags({"overlong_warning": warning})
        if tracker is not None:
            _track_step(tracker, cfg, step, m, rollouts)
        if progress is not None:
            progress(step + 1, m)
        done = step + 1
        if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.train.steps:
            _checkpoint(group, out, done, history, run_id, cfg, arm)
    if len(history) > start or state is None:
        _checkpoint(group, out, len(history), history, run_id, cfg, arm)
    group.save_model(out)  # the final policy in HF format at `out` itself (what `eval --checkpoint out` reads)
    return history, rollouts


def _track_step(tracker, cfg: Config, step: int, m: dict, rollouts: list) -> None:
    """The step's metrics, and every ``train.log_rollouts_every`` steps (and the last) two groups' rollouts."""
    tracker.log_metrics(m, step=step)
    every = cfg.train.log_rollouts_every
    if every and (step % every == 0 or step == cfg.train.steps - 1):
        sample = rollouts[: 2 * cfg.rollout.group_size]
        tracker.log_text("\n".join(json.dumps(r.to_record()) for r in sample), f"rollouts/step_{step:04d}.jsonl")


def _checkpoint(group, out: Path, step: int, history: list[dict], run_id: str | None, cfg: Config, arm: str) -> Path:
    """Trainer rank 0 writes the resumable checkpoint (weights, optimizer, the driver's RNG states, the history)."""
    return group.save_checkpoint(out / STEPS_DIR, step, history, run_id, {"arm": arm, "algo": cfg.train.algo},
                                 rng_state())


def train_result(cfg: Config, arm: str, history: list[dict], run_id: str | None) -> TrainResult:
    """The run's :class:`~supo.results.TrainResult`: what was trained under ``cfg`` and its history."""
    return TrainResult(env=cfg.env.name, arm=arm, seed=cfg.seed, algo=cfg.train.algo,
                       max_summaries=cfg.train_max_summaries, working_context=cfg.budget.working_context,
                       history=tuple(history), mlflow_run_id=run_id)


def write_run_files(out: str | Path, cfg: Config, arm: str, history: list[dict], run_id: str | None) -> None:
    """``supo_run.json`` (what was trained, and the MLflow run) and ``train_metrics.json`` (the per-step history) in
    a checkpoint folder — what ``eval`` and the report read (:class:`~supo.results.TrainResult`)."""
    train_result(cfg, arm, history, run_id).write(out)
