"""Checking the run configuration: static checks (ranges, choices, conflicts; each environment's options) when it
loads (:func:`validate`), and the checks that need the tokenizer — the summary instruction's length, the longest
initial prompt — once it is known (:func:`derive_budgets`, :func:`validate_budgets`). Each failure is a
:class:`~supo.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from supo.config.schema import ARM_ROLE_KEY, ARM_ROLES, TRAINER_BACKENDS, Config, EngineConfig, ModelConfig, TrainConfig
from supo.engines.registry import ENGINE_BACKENDS
from supo.envs import ENVS
from supo.envs.spec import validate_options
from supo.envs.tool_parsers import TOOL_PARSERS
from supo.errors import require
from supo.plugins import import_plugins

VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
ALGOS = ("supo", "grpo")


def validate(cfg: Config, *, check_files: bool = False) -> None:
    """Static checks: ranges, choices and conflicts that need no tokenizer; every environment's options, what the
    selected one requires, and with ``check_files`` the files it reads. ``train.plugins`` are imported first (their
    registrations are among the choices)."""
    from supo.distributed.weight_sync import WEIGHT_SYNCS  # the registry imports neither Ray nor torch

    b, r, e, m, ev = cfg.budget, cfg.rollout, cfg.engine, cfg.model, cfg.eval
    import_plugins(cfg.train.plugins)  # first: a plugin registers the names checked below
    _validate_train(cfg.train)
    require(cfg.env.name in ENVS, "env.name", f"unknown environment {cfg.env.name!r}; choose one of {', '.join(ENVS)}")
    require(b.max_summaries >= 0, "budget.max_summaries", f"must be ≥ 0, got {b.max_summaries}")
    require(ev.max_summaries >= 0, "eval.max_summaries", f"must be ≥ 0, got {ev.max_summaries}")
    require(all(s >= 0 for s in ev.sweep), "eval.sweep", f"every S_eval must be ≥ 0, got {ev.sweep}")
    require(b.working_context > 0, "budget.working_context", f"must be > 0, got {b.working_context}")
    require(ev.working_context >= 0, "eval.working_context", f"must be ≥ 0 (0 = training W), got {ev.working_context}")
    require(0.0 < b.trigger_frac <= 1.0, "budget.trigger_frac", f"must be in (0, 1], got {b.trigger_frac}")
    for name in ("max_steps", "max_turn_tokens", "max_summary_tokens", "max_obs_tokens"):
        require(getattr(b, name) > 0, f"budget.{name}", f"must be > 0, got {getattr(b, name)}")
    require(r.group_size >= 2, "rollout.group_size", f"GRPO needs at least 2 rollouts per task, got {r.group_size}")
    require(r.num_workers >= 1, "rollout.num_workers", f"must be ≥ 1, got {r.num_workers}")
    require(r.env_threads >= 0, "rollout.env_threads", f"must be ≥ 0, got {r.env_threads}")
    require(r.num_cpus_per_worker > 0, "rollout.num_cpus_per_worker", f"must be > 0, got {r.num_cpus_per_worker}")
    require(cfg.trainer.world_size >= 1, "trainer.world_size", f"must be ≥ 1, got {cfg.trainer.world_size}")
    require(cfg.trainer.num_cpus_per_rank > 0, "trainer.num_cpus_per_rank",
            f"must be > 0, got {cfg.trainer.num_cpus_per_rank}")
    require(cfg.trainer.threads_per_rank >= 0, "trainer.threads_per_rank",
            f"must be ≥ 0, got {cfg.trainer.threads_per_rank}")
    require(cfg.trainer.weight_sync in WEIGHT_SYNCS, "trainer.weight_sync",
            f"unknown strategy {cfg.trainer.weight_sync!r}; choose one of {', '.join(WEIGHT_SYNCS)}")
    require(r.tasks_per_step >= 1, "rollout.tasks_per_step", f"must be ≥ 1, got {r.tasks_per_step}")
    require(r.temperature > 0.0, "rollout.temperature",
            f"must be > 0 (training samples from the policy at this temperature), got {r.temperature}")
    require(ev.temperature >= 0.0, "eval.temperature", f"must be ≥ 0, got {ev.temperature}")
    require(r.top_p == 1.0, "rollout.top_p", f"must be 1: the trainer's log-probs are those of the whole "
            f"distribution at rollout.temperature, so a nucleus would bias the importance ratio; got {r.top_p}")
    require(cfg.sft.steps >= 0, "sft.steps", f"must be ≥ 0, got {cfg.sft.steps}")
    require(cfg.sft.batch_size >= 1, "sft.batch_size", f"must be ≥ 1, got {cfg.sft.batch_size}")
    require(0.0 <= cfg.expert.long_context_frac <= 1.0, "expert.long_context_frac",
            f"must be in [0, 1], got {cfg.expert.long_context_frac}")
    require(0.0 <= cfg.expert.summary_error_rate <= 1.0, "expert.summary_error_rate",
            f"must be in [0, 1], got {cfg.expert.summary_error_rate}")
    require(ev.split in ("train", "val", "test"), "eval.split", f"must be train, val or test, got {ev.split!r}")
    require(ev.num_tasks >= 1, "eval.num_tasks", f"must be ≥ 1, got {ev.num_tasks}")
    require(ev.samples_per_task >= 1, "eval.samples_per_task", f"must be ≥ 1, got {ev.samples_per_task}")
    for name, spec in cfg.arms.items():
        role = spec.get(ARM_ROLE_KEY) if isinstance(spec, dict) else None
        require(role is None or role in ARM_ROLES, f"arms.{name}.{ARM_ROLE_KEY}",
                f"must be one of {', '.join(ARM_ROLES)}, got {role!r}")
    unknown = [a for a in cfg.pipeline.arms if a not in cfg.arms]
    require(not cfg.arms or not unknown, "pipeline.arms",
            f"{unknown} not defined under `arms` (defined: {', '.join(cfg.arms)})")
    require(len(set(cfg.pipeline.seeds)) == len(cfg.pipeline.seeds) and cfg.pipeline.seeds, "pipeline.seeds",
            f"need at least one seed and no repeats, got {cfg.pipeline.seeds}")
    require(all(n in ENVS for n in cfg.pipeline.envs), "pipeline.envs",
            f"unknown environment in {cfg.pipeline.envs}; choose from {', '.join(ENVS)}")
    require(e.backend in ENGINE_BACKENDS, "engine.backend",
            f"unknown backend {e.backend!r}; choose one of {', '.join(ENGINE_BACKENDS)}")
    _validate_local_trainer(cfg)
    require(e.dtype in ("float32", "bfloat16", "float16"), "engine.dtype", f"unknown dtype {e.dtype!r}")
    require(e.kv_cache_gib > 0, "engine.kv_cache_gib", f"must be > 0, got {e.kv_cache_gib}")
    require(e.max_num_seqs >= 1, "engine.max_num_seqs", f"must be ≥ 1, got {e.max_num_seqs}")
    require(e.block_size >= 0 and e.block_size % 16 == 0, "engine.block_size",
            f"must be 0 (vLLM's default) or a multiple of 16 (32 on CPU), got {e.block_size}")
    validate_envs(cfg, check_files=check_files)
    require(m.tool_parser in TOOL_PARSERS, "model.tool_parser",
            f"unknown tool-call format {m.tool_parser!r}; choose one of {', '.join(TOOL_PARSERS)}")
    require(not (m.build and m.source), "model.source", f"{m.source!r} is for model.build: false (a built model has "
            f"no source)")
    if m.build:
        _validate_tiny_model(m, e)


def _validate_local_trainer(cfg) -> None:
    """``trainer.backend``: ray or local; local runs one engine and one rank in the driver's process, so it takes
    neither several ranks or workers, nor a weight transport, nor overlapped steps (one process does one thing at a
    time: an overlapped step would sample with the new weights and log a lag it does not have)."""
    tr = cfg.trainer
    require(tr.backend in TRAINER_BACKENDS, "trainer.backend",
            f"unknown backend {tr.backend!r}; choose one of {', '.join(TRAINER_BACKENDS)}")
    if tr.backend != "local":
        return
    require(tr.world_size == 1, "trainer.world_size", f"trainer.backend local runs one rank; got {tr.world_size}")
    require(cfg.rollout.num_workers == 1, "rollout.num_workers",
            f"trainer.backend local runs one engine in the driver; got {cfg.rollout.num_workers}")
    require(tr.weight_sync == "object-store", "trainer.weight_sync",
            f"trainer.backend local passes the weights in process; {tr.weight_sync!r} is a Ray transport")
    require(not cfg.train.overlap, "train.overlap", "trainer.backend local runs rollouts and updates in turn; "
            "set train.overlap: false (or trainer.backend: ray)")


def _validate_train(t: TrainConfig) -> None:
    """``train``: the registered variants (algo, advantage, overlong treatment, policy loss, aggregation) and
    ranges."""
    from supo.algo.advantage import ADVANTAGE_ESTIMATORS
    from supo.algo.loss import POLICY_LOSSES
    from supo.algo.objective import AGGREGATIONS
    from supo.algo.overlong import OVERLONG_TREATMENTS

    require(t.algo in ALGOS, "train.algo", f"unknown algo {t.algo!r}; choose one of {', '.join(ALGOS)}")
    require(t.advantage in ADVANTAGE_ESTIMATORS, "train.advantage",
            f"unknown estimator {t.advantage!r}; choose one of {', '.join(ADVANTAGE_ESTIMATORS)}")
    require(t.overlong in OVERLONG_TREATMENTS, "train.overlong",
            f"unknown treatment {t.overlong!r}; choose one of {', '.join(OVERLONG_TREATMENTS)}")
    require(t.overlong_penalty < 0, "train.overlong_penalty", f"must be < 0, got {t.overlong_penalty}")
    require(t.policy_loss in POLICY_LOSSES, "train.policy_loss",
            f"unknown loss {t.policy_loss!r}; choose one of {', '.join(POLICY_LOSSES)}")
    require(t.loss_agg in AGGREGATIONS, "train.loss_agg",
            f"unknown aggregation {t.loss_agg!r}; choose one of {', '.join(AGGREGATIONS)}")
    require(t.clip_low >= 0 and t.clip_high >= 0, "train.clip_low/clip_high", "clip ranges must be ≥ 0")
    require(t.clip_low < 1.0, "train.clip_low", f"must be < 1 (the ratio is clipped at 1 − clip_low), got {t.clip_low}")
    require(t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    require(t.steps >= 1, "train.steps", f"must be ≥ 1, got {t.steps}")
    require(t.mini_batches >= 1, "train.mini_batches", f"must be ≥ 1, got {t.mini_batches}")
    require(t.ppo_epochs >= 1, "train.ppo_epochs", f"must be ≥ 1, got {t.ppo_epochs}")
    require(t.micro_batch_size >= 1, "train.micro_batch_size", f"must be ≥ 1, got {t.micro_batch_size}")
    require(t.pack_tokens >= 1, "train.pack_tokens", f"must be ≥ 1, got {t.pack_tokens}")
    require(t.kl_coef >= 0 and t.entropy_coef >= 0, "train.kl_coef/entropy_coef", "must be ≥ 0")
    require(t.max_seq_len >= 0, "train.max_seq_len", f"must be ≥ 0 (0 = derived), got {t.max_seq_len}")
    require(t.checkpoint_every >= 0, "train.checkpoint_every", f"must be ≥ 0, got {t.checkpoint_every}")
    require(t.kl_to_init_every >= 1, "train.kl_to_init_every", f"must be ≥ 1, got {t.kl_to_init_every}")


def validate_envs(cfg: Config, *, check_files: bool = False) -> None:
    """Every env-option section of ``cfg`` (each registered env's options), then the selected environment's
    requirements (and with ``check_files`` its files)."""
    for options in cfg.env_sections.values():
        validate_options(options)
    cfg.env_spec.check(cfg.env_options, check_files=check_files)


def _validate_tiny_model(m: ModelConfig, e: EngineConfig) -> None:
    require(m.hidden_size % m.num_heads == 0, "model.num_heads",
            f"hidden_size {m.hidden_size} is not divisible by num_heads {m.num_heads}")
    require(m.hidden_size // m.num_heads in VLLM_CPU_HEAD_SIZES, "model.num_heads",
            f"head size {m.hidden_size // m.num_heads} is not one vLLM's CPU attention accepts "
            f"({', '.join(map(str, VLLM_CPU_HEAD_SIZES))})")
    require(m.num_heads % m.num_kv_heads == 0, "model.num_kv_heads",
            f"must divide num_heads ({m.num_heads}), got {m.num_kv_heads}")
    require(m.max_position_embeddings >= e.max_model_len, "model.max_position_embeddings",
            f"{m.max_position_embeddings} < engine.max_model_len {e.max_model_len}")


@dataclass(frozen=True)
class Budgets:
    """Derived lengths (tokens), computed once the tokenizer is known."""

    trigger: int  # L
    summary_prompt: int  # |v_sum| (the instruction chunk)
    continuation: int  # the continuation chunk of a reset prompt
    max_prompt: int  # the longest initial prompt
    obs_chunk: int  # the longest observation chunk (template + max_obs_tokens)
    engine_needed: int  # what engine.max_model_len must cover
    trainer_needed: int  # the longest possible segment


def derive_budgets(cfg: Config, *, working_context: int, summary_chunk_len: int, continuation_chunk_len: int,
                   max_prompt_len: int, obs_overhead: int) -> Budgets:
    b = cfg.budget
    trigger = int(math.ceil(b.trigger_frac * working_context))
    obs_chunk = obs_overhead + b.max_obs_tokens
    gen = max(b.max_turn_tokens, summary_chunk_len + b.max_summary_tokens)
    return Budgets(
        trigger=trigger,
        summary_prompt=summary_chunk_len,
        continuation=continuation_chunk_len,
        max_prompt=max_prompt_len,
        obs_chunk=obs_chunk,
        engine_needed=trigger + gen + obs_chunk,
        trainer_needed=trigger + gen,
    )


def validate_budgets(cfg: Config, budgets: Budgets, *, working_context: int, wc_field: str = "budget.working_context") -> None:
    """Checks that need the tokenizer: W against the prompt, engine and trainer limits against the derived budget."""
    reset_prompt = budgets.max_prompt + budgets.continuation + cfg.budget.max_summary_tokens
    require(budgets.max_prompt < budgets.trigger, wc_field,
            f"W = {working_context} (L = {budgets.trigger}) is smaller than the initial prompt "
            f"({budgets.max_prompt} tokens)")
    require(reset_prompt + cfg.budget.max_turn_tokens + budgets.obs_chunk < budgets.trigger, wc_field,
            f"W = {working_context} (L = {budgets.trigger}) leaves no room for a step after a reset: initial prompt "
            f"{budgets.max_prompt} + continuation {budgets.continuation} + max_summary_tokens "
            f"{cfg.budget.max_summary_tokens} + max_turn_tokens {cfg.budget.max_turn_tokens} + longest observation "
            f"{budgets.obs_chunk} ≥ L (the first step after a summary would trigger the next summary at once)")
    require(cfg.engine.max_model_len >= budgets.engine_needed, "engine.max_model_len",
            f"{cfg.engine.max_model_len} is below the derived budget {budgets.engine_needed} = L {budgets.trigger} + "
            f"max(max_turn_tokens, |v_sum| {budgets.summary_prompt} + max_summary_tokens) + longest observation "
            f"{budgets.obs_chunk}")
    if cfg.train.max_seq_len:
        require(cfg.train.max_seq_len >= budgets.trainer_needed, "train.max_seq_len",
                f"{cfg.train.max_seq_len} is below the longest possible segment ({budgets.trainer_needed} tokens)")
