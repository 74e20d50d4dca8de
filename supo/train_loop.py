"""`supo-cli train`: the single-controller RL loop (docs/design.md §4).

Each step: sample tasks → G rollouts per task through the agent loop on the engine → one reward per rollout →
advantages (grouped by task, R8) → broadcast onto segments (R9 masking) → policy update (R10) → push the new weights
into the engine. GRPO is the same loop with S = 0 (R11).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from supo.algo.advantage import broadcast, compute_advantages
from supo.config import Config
from supo.data import read_tasks, split_path, write_rollouts_jsonl
from supo.engines.vllm_engine import VLLMPolicy
from supo.envs import get_env_spec
from supo.metrics import rollout_metrics
from supo.models import load_policy
from supo.rollout.agent_loop import run_rollouts
from supo.runtime import build_runtime
from supo.trainer.policy_trainer import PolicyTrainer

RUN_FILE = "supo_run.json"
SUMMARY_KEYS = ("mean_reward", "success_rate", "mean_summaries", "mean_tool_calls", "overlong_rate")


def sample_step_tasks(tasks, step: int, k: int, seed: int):
    """The tasks of one step: a seeded draw without replacement (reproducible for a given seed and step)."""
    rng = random.Random(f"{seed}-step-{step}")
    return rng.sample(tasks, min(k, len(tasks)))


def train(cfg: Config, *, init: str | Path, out: str | Path, arm: str | None = None, tracker=None, progress=None,
          log=print) -> dict:
    """Run ``train.steps`` RL steps from the model at ``init``; write an HF checkpoint to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    spec = get_env_spec(cfg.env.name)
    tasks = read_tasks(split_path(cfg.paths.data, "train"))
    S = cfg.train_max_summaries
    W = cfg.budget.working_context
    rt = build_runtime(cfg, init, tasks, max_summaries=S, working_context=W)
    max_seq = cfg.train.max_seq_len or rt.budgets.trainer_needed
    engine = VLLMPolicy(init, cfg.engine, seed=cfg.seed, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p)
    model = load_policy(init)
    trainer = PolicyTrainer(model, cfg.train, pad_id=rt.tokenizer.pad_token_id, max_seq_len=max_seq, seed=cfg.seed)
    log(f"train: algo={cfg.train.algo} S={S} W={W} L={rt.budgets.trigger} G={cfg.rollout.group_size} "
        f"tasks/step={cfg.rollout.tasks_per_step} steps={cfg.train.steps}; engine started in {engine.start_seconds:.1f}s")
    history = []
    for step in range(cfg.train.steps):
        t0 = time.perf_counter()
        step_tasks = sample_step_tasks(tasks, step, cfg.rollout.tasks_per_step, cfg.seed)
        items = [(t, f"{t.id}@{step}", i) for t in step_tasks for i in range(cfg.rollout.group_size)]
        rollouts = run_rollouts(items, engine, rt.tokenizer, rt.templates, rt.settings, spec["make_env"],
                                seed=cfg.seed * 100_003 + step, keep_transcript=True)
        t_roll = time.perf_counter() - t0
        adv = compute_advantages(rollouts, cfg.train.advantage, overlong_mask=cfg.train.overlong_mask,
                                 overlong_in_group_stats=cfg.train.overlong_in_group_stats, eps=cfg.train.adv_eps)
        samples = broadcast(rollouts, adv)
        stats = trainer.update(samples)
        sync = engine.push_weights(trainer.state_dict())
        m = rollout_metrics(rollouts, working_context=W, max_summaries=S)
        m.update(
            masked_rollout_frac=float((~adv.trainable).mean()),
            degenerate_group_frac=adv.degenerate_groups / max(1, adv.num_groups),
            loss=stats.loss, clip_frac=stats.clip_frac, grad_norm=stats.grad_norm, kl=stats.kl,
            optimizer_steps=stats.optimizer_steps, train_samples=stats.num_samples, train_tokens=stats.num_tokens,
            rollout_seconds=t_roll, train_seconds=stats.seconds, weight_sync_seconds=sync,
            step_seconds=time.perf_counter() - t0,
            engine_tokens_per_second=sum(r.tokens_generated for r in rollouts) / max(t_roll, 1e-9),
        )
        history.append({"step": step, **m})
        if tracker is not None:
            tracker.log_metrics(m, step=step)
            every = cfg.train.log_rollouts_every
            if every and (step % every == 0 or step == cfg.train.steps - 1):
                tracker.log_text("\n".join(json.dumps(r.to_record()) for r in rollouts[: 2 * cfg.rollout.group_size]),
                                 f"rollouts/step_{step:04d}.jsonl")
        if progress is not None:
            progress(step + 1, m)
        if cfg.train.checkpoint_every and (step + 1) % cfg.train.checkpoint_every == 0 and step + 1 < cfg.train.steps:
            _save(model, rt.tokenizer, out / f"step_{step + 1:05d}", cfg, tracker, history, arm or cfg.train.algo)
    arm = arm or cfg.train.algo
    _save(model, rt.tokenizer, out, cfg, tracker, history, arm)
    write_rollouts_jsonl(rollouts, out / "last_rollouts.jsonl")
    first, last = history[0], history[-1]
    summary = {"arm": arm, "steps": len(history), **{f"first_{k}": first[k] for k in SUMMARY_KEYS},
               **{f"last_{k}": last[k] for k in SUMMARY_KEYS},
               "mean_step_seconds": sum(h["step_seconds"] for h in history) / len(history),
               "mean_engine_tokens_per_second": sum(h["engine_tokens_per_second"] for h in history) / len(history)}
    Path(cfg.paths.metrics).mkdir(parents=True, exist_ok=True)
    (Path(cfg.paths.metrics) / f"train-{arm}.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"train: reward {first['mean_reward']:.3f} -> {last['mean_reward']:.3f}, summaries/rollout "
        f"{last['mean_summaries']:.2f}; checkpoint -> {out}")
    return {"history": history, "engine_start_seconds": engine.start_seconds}


def _save(model, tokenizer, path: Path, cfg: Config, tracker, history, arm: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    run = {"arm": arm, "algo": cfg.train.algo, "max_summaries": cfg.train_max_summaries,
           "working_context": cfg.budget.working_context, "steps_done": len(history),
           "mlflow_run_id": tracker.run_id if tracker is not None else None}
    (path / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    (path / "train_metrics.json").write_text(json.dumps({"arm": arm, "history": history}, indent=1) + "\n")


def read_run_info(checkpoint: str | Path) -> dict:
    p = Path(checkpoint) / RUN_FILE
    return json.loads(p.read_text()) if p.exists() else {}

