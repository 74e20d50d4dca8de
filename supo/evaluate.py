"""`supo-cli eval`: run a checkpoint through the training rollout code (R12) with any S (and W); write metrics.

Only S (``--max-summaries``) and W (``--working-context``) may differ from training; the loop, templates, parser and
sampling are the same. Outputs: ``metrics.json`` (docs/design.md §6 vocabulary + what was evaluated) and ``rollouts.jsonl``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from supo.config import Config
from supo.data import read_tasks, split_path, update_json, write_rollouts_jsonl
from supo.contracts import Policy
from supo.engines.registry import make_engine
from supo.layout import EVAL_METRICS_FILE, ROLLOUTS_FILE, s_dir, seed_dir
from supo.metrics import rollout_metrics
from supo.models import load_policy
from supo.results import EvalResult, Outcomes
from supo.rollout.agent_loop import run_rollouts
from supo.runtime import build_runtime, shared_engine


def write_eval(folder: str | Path, result: EvalResult, rollouts: Sequence, judged: bool = True) -> Path:
    """One evaluation's files: ``metrics.json`` (``result``), ``outcomes.json`` (:class:`~supo.results.Outcomes` of
    ``rollouts``; ``judged`` False when the env has no summary oracle) and ``rollouts.jsonl``."""
    folder = Path(folder)
    result.write(folder)
    Outcomes.from_rollouts(rollouts, result.split, judged=judged).write(folder)
    write_rollouts_jsonl(rollouts, folder / ROLLOUTS_FILE)
    return folder


def open_engine(cfgs: Sequence[Config], checkpoint: str | Path) -> Policy:
    """One engine able to evaluate every config of ``cfgs`` (its sequence limit is the largest of theirs), serving
    ``checkpoint`` first (``engine.backend``: vLLM or transformers); :func:`evaluate` with ``engine=`` loads each checkpoint's weights into it in place."""
    cfg = cfgs[0]
    return make_engine(checkpoint, shared_engine(cfgs), seed=cfg.seed, temperature=cfg.eval.temperature,
                       top_p=cfg.rollout.top_p)


def evaluate(cfg: Config, *, checkpoint: str | Path, out: str | Path, arm: str | None = None, tracker=None,
             progress=None, log=print, sweep: Sequence[int] | None = None, trackers=None,
             engine: Policy | None = None) -> dict:
    """Evaluate ``checkpoint`` at S_eval = ``eval.max_summaries``, or at every S of ``sweep``; write
    ``<out>/metrics.json`` (single S) or ``<out>/s<N>/metrics.json`` per S (sweep), with the rollouts beside.

    A sweep runs each task once at the largest S and reads every smaller S off the same trajectories where that
    budget would have ended them (``run_rollouts(views=...)``: exact, not an approximation — each S_eval's rollouts are
    what a run at that S would produce, on common trajectories across S). ``engine``: evaluate in this engine (the
    checkpoint's weights are loaded into it) instead of starting one. ``trackers(S)`` (sweep) yields one tracker per
    S_eval. Returns the single :class:`~supo.results.EvalResult`, or with ``sweep`` one per S_eval (``{S: result}``).
    """
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    if not (ckpt / "config.json").exists():
        raise FileNotFoundError(f"checkpoint {ckpt} is not a model folder (no config.json)")
    ev = cfg.eval
    values = [ev.max_summaries] if sweep is None else sorted(sweep)
    if not values or any(s < 0 for s in values) or len(set(values)) != len(values):
        raise ValueError(f"S_eval sweep {list(sweep or [])}: need distinct values ≥ 0")
    W = ev.working_context or cfg.budget.working_context
    spec = cfg.env_spec
    tasks = read_tasks(split_path(cfg.paths.data, ev.split))[: ev.num_tasks]
    wc_field = "eval.working_context" if ev.working_context else "budget.working_context"
    S_max = values[-1]
    rt = build_runtime(cfg, ckpt, tasks, max_summaries=S_max, working_context=W, wc_field=wc_field)
    if engine is None:
        engine = open_engine([cfg], ckpt)
    else:
        engine.push_weights(load_policy(ckpt).state_dict())
    items = [(t, f"{t.id}@eval", i) for t in tasks for i in range(ev.samples_per_task)]
    views: dict[int, list] = {s: [] for s in values[:-1]}
    H = {s: ev.max_steps_at(s, cfg.budget.max_steps, cfg.budget.max_summaries) for s in values}
    settings = dataclasses.replace(rt.settings, max_steps=H[S_max], view_max_steps={s: H[s] for s in values[:-1]})
    t0 = time.perf_counter()
    rollouts = run_rollouts(items, engine, rt.tokenizer, rt.templates, settings, spec.make_env,
                            seed=cfg.seed + 7, keep_transcript=True, progress=progress, views=views,
                            env_threads=cfg.rollout.env_threads, judge_summary=spec.summary_oracle)
    seconds = time.perf_counter() - t0
    views[S_max] = rollouts
    out = Path(out)
    results: dict[int, EvalResult] = {}
    for S in values:
        part = views[S]
        m = rollout_metrics(part, working_context=W, max_summaries=S)
        m["rollout_seconds"] = seconds  # the one run the whole sweep is read from
        m["max_steps"] = float(H[S])  # H at this S_eval (eval.scale_max_steps)
        m["sampling_temperature"] = float(ev.temperature)
        m["seeded_sampling"] = 1.0  # every generation drew from its own seed of (seed, task, sample, turn): CRN
        m["engine_tokens_per_second"] = sum(r.tokens_generated for r in rollouts) / max(seconds, 1e-9)
        result = EvalResult(env=cfg.env.name, arm=arm or ckpt.name, seed=cfg.seed, s_eval=S, working_context=W,
                            split=ev.split, metrics=m, checkpoint=str(checkpoint), num_rollouts=len(part),
                            temperature=ev.temperature, sweep_max_summaries=S_max)
        folder = out if sweep is None else out / s_dir(S)
        write_eval(folder, result, part, judged=spec.summary_oracle is not None)
        tr = tracker if sweep is None else (trackers(S) if trackers is not None else None)
        if tr is not None:
            with (tr if sweep is not None else contextlib.nullcontext(tr)) as run:
                run.log_metrics(dict(m), step=0)
                run.log_artifact(str(folder / EVAL_METRICS_FILE))
                run.log_artifact(str(folder / ROLLOUTS_FILE))
        log(f"eval {result.arm} seed {cfg.seed}: S_eval={S} success {m['success_rate']:.3f} "
            f"summaries {m['mean_summaries']:.2f} overlong {m['overlong_rate']:.3f}")
        results[S] = result
    return results[values[0]] if sweep is None else results


def evaluate_into(cfg: Config, *, checkpoint: str | Path, out: str | Path, arm: str, values: Sequence[int],
                  sweep: bool, engine: Policy, trackers, metrics_target: str | Path, log=print,
                  progress=None) -> list[EvalResult]:
    """The eval stage's unit: :func:`evaluate` ``checkpoint`` at S_eval = ``values[0]``, or (``sweep``) at every S of
    ``values`` read off one run, each S with its tracker (``trackers(S)``, a context manager); then merge
    ``{seed<k>: {arm: {s<N>: numbers}}}`` into ``metrics_target`` (the pipeline's ``eval.json``, or an exploratory
    evaluation's own). Returns one :class:`~supo.results.EvalResult` per S_eval."""
    if sweep:
        rows = list(evaluate(cfg, checkpoint=checkpoint, out=out, arm=arm, log=log, sweep=list(values),
                             trackers=trackers, engine=engine, progress=progress).values())
    else:
        with trackers(values[0]) as tr:
            rows = [evaluate(cfg, checkpoint=checkpoint, out=out, arm=arm, tracker=tr, log=log, engine=engine,
                             progress=progress)]
    update_json(metrics_target, {seed_dir(cfg.seed): {arm: {s_dir(r.s_eval): r.numbers() for r in rows}}})
    return rows
