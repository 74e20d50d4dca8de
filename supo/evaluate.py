"""`supo-cli eval`: run a checkpoint through the training rollout code (R12) with any S (and W); write metrics.

Only S (``--max-summaries``) and W (``--working-context``) may differ from training; the loop, templates, parser and
sampling are the same. Outputs: ``metrics.json`` (docs/design.md §6 vocabulary + what was evaluated) and ``rollouts.jsonl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from supo.config import Config
from supo.data import read_tasks, split_path, write_rollouts_jsonl
from supo.engines.vllm_engine import VLLMPolicy
from supo.envs import get_env_spec
from supo.metrics import rollout_metrics
from supo.rollout.agent_loop import run_rollouts
from supo.runtime import build_runtime


def evaluate(cfg: Config, *, checkpoint: str | Path, out: str | Path, arm: str | None = None, tracker=None,
             progress=None, log=print) -> dict:
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    if not (ckpt / "config.json").exists():
        raise FileNotFoundError(f"checkpoint {ckpt} is not a model folder (no config.json)")
    ev = cfg.eval
    S = ev.max_summaries
    W = ev.working_context or cfg.budget.working_context
    spec = get_env_spec(cfg.env.name)
    tasks = read_tasks(split_path(cfg.paths.data, ev.split))[: ev.num_tasks]
    wc_field = "eval.working_context" if ev.working_context else "budget.working_context"
    rt = build_runtime(cfg, ckpt, tasks, max_summaries=S, working_context=W, wc_field=wc_field)
    engine = VLLMPolicy(ckpt, cfg.engine, seed=cfg.seed, temperature=ev.temperature, top_p=cfg.rollout.top_p)
    items = [(t, f"{t.id}@eval", i) for t in tasks for i in range(ev.samples_per_task)]
    t0 = time.perf_counter()
    rollouts = run_rollouts(items, engine, rt.tokenizer, rt.templates, rt.settings, spec["make_env"],
                            seed=cfg.seed + 7, keep_transcript=True, progress=progress)
    seconds = time.perf_counter() - t0
    m = rollout_metrics(rollouts, working_context=W, max_summaries=S)
    m["rollout_seconds"] = seconds
    m["engine_tokens_per_second"] = m["tokens_generated"] / max(seconds, 1e-9)
    result = {"env": cfg.env.name, "arm": arm or ckpt.name, "s_eval": S, "working_context": W, "split": ev.split,
              "checkpoint": str(checkpoint), "num_rollouts": len(rollouts), "temperature": ev.temperature, **m}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    write_rollouts_jsonl(rollouts, out / "rollouts.jsonl")
    if tracker is not None:
        tracker.log_metrics({k: v for k, v in m.items()}, step=0)
        tracker.log_artifact(str(out / "metrics.json"))
        tracker.log_artifact(str(out / "rollouts.jsonl"))
    return result
