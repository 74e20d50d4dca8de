"""`supo-cli prepare`: tasks, tokenizer, tiny model and expert demonstrations — all built locally.

Outputs (under ``paths.data`` and ``paths.model``):

* ``train.parquet`` / ``test.parquet`` — the task splits (the test split needs more steps than the train split);
* the tokenizer (byte-level BPE trained on the task text) and a randomly initialised Qwen2, in HF format;
* ``demos.parquet`` — expert demonstrations produced by the *same* agent loop as training, with summary turns and
  trigger-action samples (R5b), the expert's summaries wrong at ``expert.summary_error_rate``;
* ``paths.metrics/prepare.json`` (``supo.layout.metrics_file``) — counts and the expert's own metrics.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from supo.config import Config, effective_context
from supo.data import split_path, write_demos, write_tasks
from supo.layout import metrics_file
from supo.metrics import rollout_metrics
from supo.models import build_model, build_tokenizer, load_tokenizer, num_parameters
from supo.rollout.agent_loop import run_rollouts
from supo.rollout.expert_policy import ExpertPolicy
from supo.runtime import build_runtime


def build_tasks(cfg: Config):
    spec = cfg.env_spec
    return spec.build_split(cfg, "train"), spec.build_split(cfg, "test")


def extra_splits(cfg: Config) -> dict:
    """The env's splits besides train and test (``val`` where the env draws one)."""
    spec = cfg.env_spec
    return {name: spec.build_split(cfg, name) for name in spec.splits if name not in ("train", "test")}


def tokenizer_corpus(cfg: Config, train, test, corpus: Callable[[list], list[str]] | None = None) -> list[str]:
    """The texts the tokenizer is trained on: ``corpus`` (the config's env's by default) of the first 400 train and
    100 test tasks, the summary instruction and continuation, and the chat roles."""
    texts = (corpus or cfg.env_spec.corpus)(train[:400] + test[:100])
    texts += [cfg.prompts.summary_instruction, cfg.prompts.continuation + "\n"] * 50
    texts += [f"{role}\n" for role in ("system", "user", "assistant", "tool")] * 200
    return texts


def run_expert(cfg: Config, tasks, tokenizer, *, num: int, error_rate: float, max_summaries: int, seed: int,
               model_dir: str | Path):
    """Roll the scripted expert through the agent loop; returns its rollouts (the demonstrations)."""
    spec = cfg.env_spec
    rng = random.Random(seed)
    chosen = [tasks[i % len(tasks)] for i in rng.sample(range(max(num, len(tasks))), num)] if num else []
    rt = build_runtime(cfg, model_dir, chosen or tasks[:1], max_summaries=max_summaries,
                       working_context=cfg.budget.working_context, tokenizer=tokenizer)
    rt.settings.train_trigger_action = True  # demonstrations always carry the trigger action (R5b)
    experts = {k: spec.make_expert(t, error_rate, seed + k) for k, t in enumerate(chosen)}
    policy = ExpertPolicy(tokenizer, experts, rt.templates.eos_id, tool_parser=rt.templates.tool_parser)
    items = [(t, f"demo-{k}", 0) for k, t in enumerate(chosen)]
    return run_rollouts(items, policy, tokenizer, rt.templates, rt.settings, spec.make_env, seed=seed)


def prepare(cfg: Config, *, log=print) -> dict:
    data_dir, model_dir = Path(cfg.paths.data), Path(cfg.paths.model)
    data_dir.mkdir(parents=True, exist_ok=True)
    train, test = build_tasks(cfg)
    write_tasks(train, split_path(data_dir, "train"))
    write_tasks(test, split_path(data_dir, "test"))
    stats = {"num_train_tasks": len(train), "num_test_tasks": len(test)}
    for name, tasks in extra_splits(cfg).items():
        write_tasks(tasks, split_path(data_dir, name))
        stats[f"num_{name}_tasks"] = len(tasks)
    log(f"tasks ({cfg.env.name}): " + ", ".join(f"{v} {k[4:-6]}" for k, v in stats.items()))
    if cfg.model.build:
        tok = build_tokenizer(tokenizer_corpus(cfg, train, test), cfg.model.vocab_size, model_dir)
        model = build_model(tok, cfg.model, cfg.seed, model_dir)
        stats.update(vocab_size=len(tok), model_parameters=num_parameters(model))
        log(f"tokenizer: {len(tok)} tokens; model: Qwen2 with {num_parameters(model) / 1e6:.2f}M parameters "
            f"-> {model_dir}")
    else:
        if cfg.model.source:
            from supo.import_model import link_model

            link_model(cfg.model.source, model_dir, log=log)
        tok = load_tokenizer(model_dir)
        stats.update(vocab_size=len(tok))
        log(f"model: using the local model folder {model_dir} ({len(tok)} tokens)")

    if cfg.expert.num_demos > 0:
        n_long = round(cfg.expert.num_demos * cfg.expert.long_context_frac)
        demos = run_expert(cfg, train, tok, num=cfg.expert.num_demos - n_long, error_rate=cfg.expert.summary_error_rate,
                           max_summaries=cfg.expert.max_summaries, seed=cfg.seed, model_dir=model_dir)
        long_demos = run_expert(effective_context(cfg), train, tok, num=n_long, error_rate=0.0, max_summaries=0,
                                seed=cfg.seed + 2, model_dir=model_dir) if n_long else []
        stats["demo_long_context_episodes"] = len(long_demos)
        demos = demos + long_demos
        rows = write_demos(demos, data_dir / "demos.parquet")
        m = rollout_metrics(demos, working_context=cfg.budget.working_context, max_summaries=cfg.expert.max_summaries)
        clean = run_expert(cfg, test, tok, num=min(len(test), 256), error_rate=0.0,
                           max_summaries=cfg.expert.max_summaries, seed=cfg.seed + 1, model_dir=model_dir)
        clean_m = rollout_metrics(clean, working_context=cfg.budget.working_context,
                                  max_summaries=cfg.expert.max_summaries)
        stats.update(
            demo_episodes=len(demos), demo_rows=rows, demo_success_rate=m["success_rate"],
            demo_mean_summaries=m["mean_summaries"], demo_mean_tool_calls=m["mean_tool_calls"],
            demo_mean_working_context_tokens=m["mean_working_context_tokens"],
            expert_test_success_rate_no_errors=clean_m["success_rate"],
            expert_test_mean_summaries=clean_m["mean_summaries"],
        )
        log(f"demonstrations: {len(demos)} episodes -> {rows} rows; expert success {m['success_rate']:.3f} with "
            f"{m['mean_summaries']:.2f} summaries/episode (summary error rate {cfg.expert.summary_error_rate})")
    target = metrics_file(cfg.paths.metrics, "prepare")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(stats, indent=2) + "\n")
    return stats
