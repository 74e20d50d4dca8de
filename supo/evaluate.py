"""`supo-cli eval`: run a checkpoint through the training rollout code (R12) with any S (and W); write metrics.

Only S (``--max-summaries``) and W (``--working-context``) may differ from training; the loop, templates, parser and
sampling are the same. Outputs: ``metrics.json`` (docs/design.md §6 vocabulary + what was evaluated) and ``rollouts.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

from supo.config import Config
from supo.data import read_tasks, split_path, write_rollouts_jsonl
from supo.engines.vllm_engine import VLLMPolicy
from supo.envs import get_env_spec
from supo.metrics import rollout_metrics
from supo.rollout.agent_loop import run_rollouts
from supo.runtime import build_runtime


def evaluate(cfg: Config, *, checkpoint: str | Path, out: str | Path, arm: str | None = None, tracker=None,
             progress=None, log=print, sweep: Sequence[int] | None = None, trackers=None) -> dict:
    """Evaluate ``checkpoint`` at S_eval = ``eval.max_summaries`` (or at every S of ``sweep``, all batched into one
    engine's calls); write ``<out>/metrics.json`` (single S) or ``<out>/s<N>/metrics.json`` per S (sweep).

    Returns the single result, or ``{"sweep": {S: result}}``. ``trackers(S)`` (sweep) yields one tracker per S_eval.
    """
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    if not (ckpt / "config.json").exists():
        raise FileNotFoundError(f"checkpoint {ckpt} is not a model folder (no config.json)")
    ev = cfg.eval
    values = [ev.max_summaries] if sweep is None else list(sweep)
    if not values or any(s < 0 for s in values) or len(set(values)) != len(values):
        raise ValueError(f"S_eval sweep {values}: need distinct values ≥ 0")
    W = ev.working_context or cfg.budget.working_context
    spec = get_env_spec(cfg.env.name)
    tasks = read_tasks(split_path(cfg.paths.data, ev.split))[: ev.num_tasks]
    wc_field = "eval.working_context" if ev.working_context else "budget.working_context"
    rts = {s: build_runtime(cfg, ckpt, tasks, max_summaries=s, working_context=W, wc_field=wc_field) for s in values}
    rt = rts[values[0]]
    engine = VLLMPolicy(ckpt, cfg.engine, seed=cfg.seed, temperature=ev.temperature, top_p=cfg.rollout.top_p)
    items = [(t, f"{t.id}@eval", i) for t in tasks for i in range(ev.samples_per_task)]
    all_items = [it for _ in values for it in items]
    settings = [rts[s].settings for s in values for _ in items]
    t0 = time.perf_counter()
    rollouts = run_rollouts(all_items, engine, rt.tokenizer, rt.templates, settings, spec["make_env"],
                            seed=cfg.seed + 7, keep_transcript=True, progress=progress)
    seconds = time.perf_counter() - t0
    out = Path(out)
    results: dict[int, dict] = {}
    for j, S in enumerate(values):
        part = rollouts[j * len(items):(j + 1) * len(items)]
        m = rollout_metrics(part, working_context=W, max_summaries=S)
        m["rollout_seconds"] = seconds  # the whole batched call (the S values share the engine's batches)
        m["engine_tokens_per_second"] = sum(r.tokens_generated for r in rollouts) / max(seconds, 1e-9)
        result = {"env": cfg.env.name, "arm": arm or ckpt.name, "seed": cfg.seed, "s_eval": S, "working_context": W,
                  "split": ev.split, "checkpoint": str(checkpoint), "num_rollouts": len(part),
                  "temperature": ev.temperature, **m}
        folder = out if sweep is None else out / f"s{S}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        write_rollouts_jsonl(part, folder / "rollouts.jsonl")
        tr = tracker if sweep is None else (trackers(S) if trackers is not None else None)
        if tr is not None:
            with (tr if sweep is not None else contextlib.nullcontext(tr)) as run:
                run.log_metrics(dict(m), step=0)
                run.log_artifact(str(folder / "metrics.json"))
                run.log_artifact(str(folder / "rollouts.jsonl"))
        log(f"eval {result['arm']}: S_eval={S} success {m['success_rate']:.3f} summaries {m['mean_summaries']:.2f} "
            f"overlong {m['overlong_rate']:.3f}")
        results[S] = result
    return results[values[0]] if sweep is None else {"sweep": results, "rollout_seconds": seconds}
