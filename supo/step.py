"""One RL step as a unit (docs/design.md §4): rollouts → advantages (R8, R9) → update (R10) → weight sync → metrics.

:func:`run_step` is the one place a step happens. The training loop (``supo.train_loop``) calls it on Ray actors; the
step-breakdown bench and the GPU trainer check call it in one process (:class:`LocalRollouts`, :class:`LocalLearner`).
Where a step's rollouts come from and who updates the policy are two small contracts (:class:`RolloutSource`,
:class:`Learner`); a caller that needs to look inside a step (the bench's per-part times, a replica that records
samples) passes :class:`StepHook` objects instead of re-implementing the step.

Which tasks a step samples and with which seed are functions of (seed, step) only, so a resumed run, the bench and a
replica draw what an uninterrupted run draws.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from supo.algo.advantage import RolloutAdvantages, broadcast, compute_advantages
from supo.metrics import rollout_metrics
from supo.types import Rollout, TrainingSample


def sample_step_tasks(tasks, step: int, k: int, seed: int):
    """The tasks of one step: a seeded draw without replacement (a function of seed and step only, so a resumed run
    draws what an uninterrupted one would)."""
    rng = random.Random(f"{seed}-step-{step}")
    return rng.sample(tasks, min(k, len(tasks)))


def step_items(tasks, step: int, cfg) -> list[tuple]:
    """The rollouts of one step as (task, group key, index in group): ``rollout.group_size`` per sampled task; the
    group key (R8) is the task id and the step."""
    return [(t, f"{t.id}@{step}", i) for t in sample_step_tasks(tasks, step, cfg.rollout.tasks_per_step, cfg.seed)
            for i in range(cfg.rollout.group_size)]


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of a step's rollouts (the agent loop derives each request's seed from it)."""
    return (seed * 100_003 + step * 7_919) % (2**31)


def step_advantages(rollouts: Sequence[Rollout], cfg) -> RolloutAdvantages:
    """The step's advantages (R8) under the run's estimator, overlong treatment (R9) and epsilon."""
    t = cfg.train
    return compute_advantages(rollouts, t.advantage, overlong=t.overlong, overlong_penalty=t.overlong_penalty,
                              eps=t.adv_eps)


class RolloutSource(Protocol):
    """Where a step's rollouts come from: ``submit`` starts them (it may return at once), ``collect`` waits."""

    def submit(self, items: list[tuple], settings: Any, seed: int) -> Any: ...

    def collect(self, pending: Any) -> list[Rollout]: ...


class Learner(Protocol):
    """Who updates the policy (R10) and sends the new weights to the engines that sample the next step."""

    def update(self, samples: list[TrainingSample]) -> Any: ...  # -> UpdateStats

    def sync(self) -> tuple[float, float]: ...  # (seconds inside the push, seconds of the whole sync)


class StepHook:
    """A look inside a step; every method is optional (the defaults do nothing). Time spent in hooks is not counted
    in the step's phase times."""

    def on_rollouts(self, step: int, rollouts: list[Rollout]) -> None:
        """After the step's rollouts are collected, before the advantages."""

    def on_update(self, step: int, samples: list[TrainingSample], stats: Any) -> None:
        """After the update and the weight sync."""


@dataclass
class StepResult:
    """What one step did: its rollouts, advantages, training samples, the update's statistics, the per-step metrics
    (docs/design.md §6; the training loop's history row without ``step``) and, with ``train.overlap``, the next step's
    rollouts already submitted (``ahead``)."""

    step: int
    rollouts: list[Rollout]
    advantages: RolloutAdvantages
    samples: list[TrainingSample]
    stats: Any
    metrics: dict[str, float]
    seconds: dict[str, float]  # the phases' times: rollout, advantages, update, sync (hooks excluded)
    ahead: Any = None


@dataclass
class StepContext:
    """What every step of a run shares: the config, the train split, the loop settings, S and W, and the two
    contracts."""

    cfg: Any
    tasks: list
    settings: Any
    source: RolloutSource
    learner: Learner

    def submit(self, step: int) -> tuple[Any, float]:
        """Start the step's rollouts; returns the pending step and when it started."""
        items = step_items(self.tasks, step, self.cfg)
        return self.source.submit(items, self.settings, step_seed(self.cfg.seed, step)), time.perf_counter()


def run_step(ctx: StepContext, step: int, *, ahead: tuple[Any, float] | None = None,
             hooks: Sequence[StepHook] = ()) -> StepResult:
    """One RL step. ``ahead``: this step's rollouts, submitted during the previous step (``train.overlap``: they were
    sampled from the weights before the previous update, logged as ``policy_lag`` 1)."""
    cfg = ctx.cfg
    t_step = time.perf_counter()
    lag = int(ahead is not None)
    pending, t_submit = ahead or ctx.submit(step)
    rollouts = ctx.source.collect(pending)
    t_roll = time.perf_counter() - t_submit
    hooked = _run_hooks(hooks, "on_rollouts", step, rollouts)
    t_adv = time.perf_counter()
    adv = step_advantages(rollouts, cfg)
    samples = broadcast(rollouts, adv)
    t_adv = time.perf_counter() - t_adv
    nxt = None
    if cfg.train.overlap and step + 1 < cfg.train.steps:
        # the engines still serve the weights these rollouts came from: the next step samples from them too (lag 1);
        # the weight push after the update reaches each worker after this call, so it waits for it
        nxt = ctx.submit(step + 1)
    t_update = time.perf_counter()
    stats = ctx.learner.update(samples)
    t_update = time.perf_counter() - t_update
    push, sync_total = ctx.learner.sync()
    hooked += _run_hooks(hooks, "on_update", step, samples, stats)
    m = step_metrics(cfg, rollouts, adv, stats)
    m.update(rollout_seconds=t_roll, weight_sync_seconds=sync_total, weight_push_seconds=push,
             step_seconds=time.perf_counter() - t_step - hooked,
             engine_tokens_per_second=sum(r.tokens_generated for r in rollouts) / max(t_roll, 1e-9), policy_lag=lag)
    seconds = {"rollout": t_roll, "advantages": t_adv, "update": t_update, "sync": sync_total}
    return StepResult(step, rollouts, adv, samples, stats, m, seconds, nxt)


def step_metrics(cfg, rollouts: Sequence[Rollout], adv: RolloutAdvantages, stats: Any) -> dict[str, float]:
    """The step's rollout metrics and the update's statistics (docs/design.md §6), without times."""
    m = rollout_metrics(rollouts, working_context=cfg.budget.working_context, max_summaries=cfg.train_max_summaries)
    m.update(
        masked_rollout_frac=float((~adv.trainable).mean()),
        degenerate_group_frac=adv.degenerate_groups / max(1, adv.num_groups),
        loss=stats.loss, clip_frac=stats.clip_frac, grad_norm=stats.grad_norm, kl=stats.kl,
        kl_to_init=stats.kl_to_init, forward_tokens=stats.forward_tokens,
        optimizer_steps=stats.optimizer_steps, train_samples=stats.num_samples,
        train_tokens=stats.num_tokens, train_seconds=stats.seconds,
    )
    return m


def _run_hooks(hooks: Sequence[StepHook], name: str, *args) -> float:
    t0 = time.perf_counter()
    for h in hooks:
        getattr(h, name)(*args)
    return time.perf_counter() - t0 if hooks else 0.0


# ----------------------------------------------------------------------------------------------------------------------
# the in-process contracts: one engine, one trainer, no Ray (the bench, the GPU check, a laptop replica)


class LocalRollouts:
    """Rollouts from an in-process engine (a :class:`~supo.contracts.Policy` with ``push_weights``): ``submit`` only
    records the work, ``collect`` runs the agent loop (``torch`` seeded with the step's seed, as a rollout worker
    does)."""

    def __init__(self, engine: Any, runtime: Any, make_env: Callable, *, keep_transcript: bool = True,
                 judge_summary: Callable | None = None, env_threads: int = 0) -> None:
        """``judge_summary``, ``env_threads``: the env's summary oracle and the env-stepping threads, as a rollout
        worker passes them to the loop."""
        self.engine, self.runtime, self.make_env, self.keep_transcript = engine, runtime, make_env, keep_transcript
        self.judge_summary, self.env_threads = judge_summary, env_threads

    def submit(self, items: list[tuple], settings: Any, seed: int) -> tuple:
        return items, settings, seed

    def collect(self, pending: tuple) -> list[Rollout]:
        import torch

        from supo.rollout.agent_loop import run_rollouts

        items, settings, seed = pending
        torch.manual_seed(seed)
        rt = self.runtime
        return run_rollouts(items, self.engine, rt.tokenizer, rt.templates, settings, self.make_env, seed=seed,
                            keep_transcript=self.keep_transcript, env_threads=self.env_threads,
                            judge_summary=self.judge_summary)


class LocalLearner:
    """An in-process :class:`~supo.trainer.policy_trainer.PolicyTrainer` whose weights are pushed into ``engine``."""

    def __init__(self, trainer: Any, engine: Any) -> None:
        self.trainer, self.engine = trainer, engine

    def update(self, samples: list[TrainingSample]) -> Any:
        return self.trainer.update(samples)

    def sync(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        self.engine.push_weights(self.trainer.state_dict())
        seconds = time.perf_counter() - t0
        return seconds, seconds
