"""`supo-cli eval`: parse the flags, plan the evaluations (:mod:`supo.pipeline`), check every input they read, run
them all in one engine (each checkpoint's weights loaded in place)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.app import ConfigOpt, EnvOpt, SetOpt, UriOpt, app, checked, clean_errors, fail, seed_flag, tracker
from cli.errors import involving
from cli.support import arm_choices, check_eval_tasks, defined_arms, load, progress, record_wall
from cli.support import tracking_uri as checked_tracking_uri
from cli.train import plan_seeds


EXPLORATORY_METRICS = "eval.json"
"""The metrics file of an exploratory evaluation, in its output folder (``{"seed<k>": {label: {"s<N>": ...}}}``, the
layout of the pipeline's ``<metrics>/eval.json``)."""


def _is_pipeline_checkpoint(cfg, name: str, checkpoint: Path, out, defined: dict, config, set_, env) -> bool:
    """True when ``--checkpoint`` names exactly what ``--all-arms`` / ``--warm-start`` would evaluate for (``name``,
    the seed): an arm of ``pipeline.arms`` and its checkpoint ``paths.checkpoints/seed<k>/<arm>`` (or the warm start
    ``sft`` and ``paths.sft``), the default output folder and the eval settings of that config (split, number of tasks,
    W; S_eval may differ: each has its own folder)."""
    from supo.layout import checkpoint_dir, warm_start_label

    if out or not defined:  # without the params file's arms there is no pipeline
        return False
    if name in cfg.pipeline.arms and name in defined:
        expected, arm = checkpoint_dir(cfg.paths.checkpoints, cfg.seed, name), name
    elif name == warm_start_label():
        expected, arm = Path(cfg.paths.sft), None
    else:
        return False
    if checkpoint.resolve() != expected.resolve():
        return False
    planned = load(config, set_, {"seed": cfg.seed}, env=env, arm=arm)
    return all(getattr(cfg.eval, f) == getattr(planned.eval, f) for f in ("split", "num_tasks", "working_context"))


def _checkpoint_specs(checkpoint: list[str], arm, seed, out, sweep, extra, config, set_, env):
    """One spec per ``--checkpoint``: labelled by ``--arm``, else the checkpoint's training arm, else its folder; with
    whether it is one of the pipeline's own evaluations (:func:`_is_pipeline_checkpoint`)."""
    from supo.layout import eval_dir
    from supo.pipeline import EvalSpec
    from supo.preflight import read_run_info

    if len(checkpoint) > 1 and (out or arm):
        fail("--out and --arm take one --checkpoint: with several, each is named by its training arm and seed")
    defined, specs = defined_arms(config), []
    for c in checkpoint:
        if not Path(c).exists():
            fail(f"--checkpoint {c} does not exist")
        info = read_run_info(c)
        name = arm or (info.arm if info else None) or Path(c).name
        run_seed = seed if seed is not None else (info.seed if info else None)
        cfg = checked(load(config, set_, {**extra, **({} if run_seed is None else {"seed": run_seed})}, env=env,
                           arm=name if name in defined else None), seed)
        values = tuple(cfg.eval.sweep_values(cfg.budget.max_summaries)) if sweep else None
        where = Path(out) if out else eval_dir(cfg.paths.evals, cfg.seed, name,
                                                None if sweep else cfg.eval.max_summaries)
        specs.append((EvalSpec(cfg, name, cfg.seed, Path(c), where, values),
                      _is_pipeline_checkpoint(cfg, name, Path(c), out, defined, config, set_, env)))
    return specs


def _pipeline_folder(spec, defined: dict) -> Path | None:
    """The pipeline's evaluation folder (``paths.evals/seed<k>/<label>`` of an arm of ``pipeline.arms`` or a
    warm-start label) that ``spec.out`` lies in, if any (none without the params file's arms: no pipeline)."""
    import re

    from supo.layout import is_warm_start

    root = Path(spec.cfg.paths.evals).resolve()
    try:
        parts = spec.out.resolve().relative_to(root).parts
    except ValueError:
        return None
    if not defined or len(parts) < 2 or not re.fullmatch(r"seed\d+", parts[0]):
        return None
    label = parts[1]
    if (label in spec.cfg.pipeline.arms and label in defined) or is_warm_start(label):
        return Path(spec.cfg.paths.evals) / parts[0] / label
    return None


def _check_settings(spec, tasks: dict, tokenizers: dict) -> None:
    """What :func:`supo.evaluate.evaluate` checks once the engine is up, checked before it starts: the S_eval
    values, W against the prompts, the derived budgets against ``engine.max_model_len`` (the checkpoint's tokenizer,
    the split's prompts)."""
    from supo.config import ConfigError
    from supo.data import read_tasks, split_path
    from supo.models import load_tokenizer
    from supo.runtime import build_runtime

    cfg, ev = spec.cfg, spec.cfg.eval
    values = [ev.max_summaries] if spec.sweep is None else sorted(spec.sweep)
    if not values or any(s < 0 for s in values) or len(set(values)) != len(values):
        raise ConfigError(f"eval.sweep: {list(spec.sweep or [])}: need distinct values ≥ 0")
    path = split_path(cfg.paths.data, ev.split)
    key = str(path.resolve())
    if key not in tasks:
        tasks[key] = read_tasks(path)
    ckpt = str(spec.checkpoint.resolve())
    if ckpt not in tokenizers:
        tokenizers[ckpt] = load_tokenizer(spec.checkpoint)
    W = ev.working_context or cfg.budget.working_context
    wc_field = "eval.working_context" if ev.working_context else "budget.working_context"
    build_runtime(cfg, spec.checkpoint, tasks[key][: ev.num_tasks], max_summaries=values[-1], working_context=W,
                  wc_field=wc_field, tokenizer=tokenizers[ckpt])


def _check_outputs(spec, metrics_path: Path) -> None:
    """The folders the evaluation writes (each S_eval's, the metrics file's) can be created and written, and the
    metrics file it merges into is a JSON object (a corrupt one is moved aside and named) — before any rollout."""
    from supo.layout import s_dir
    from supo.preflight import check_metrics_file, check_writable_dir

    folders = [spec.out] if spec.sweep is None else [spec.out / s_dir(s) for s in spec.sweep]
    for folder in folders:
        check_writable_dir(folder, "eval output folder")
    check_metrics_file(metrics_path, "eval metrics file")


def _merge_targets(specs, defined: dict, pipeline_metrics: Path) -> list[Path]:
    """Every setting and output of every ``(spec, is a pipeline evaluation)``, checked before the engine starts; the
    metrics file each spec's numbers merge into (the pipeline's for its own evaluations, else ``<out>/eval.json``
    unless ``-S paths.metrics`` names another). An exploratory evaluation whose folder lies inside the pipeline's is
    refused."""
    from supo.layout import metrics_file

    targets: list[Path] = []
    tasks: dict = {}
    tokenizers: dict = {}
    for spec, pipeline in specs:
        _check_settings(spec, tasks, tokenizers)
        if not pipeline:
            inside = _pipeline_folder(spec, defined)
            if inside is not None:
                fail(f"{spec.out} is inside {inside}, the pipeline's evaluation of {inside.name} seed "
                     f"{spec.seed}; {spec.checkpoint} (label {spec.label}) is not that evaluation (another checkpoint, "
                     "label or eval setting): give --out <folder> (and --arm <name>) to keep it apart")
        target = metrics_file(spec.cfg.paths.metrics, "eval")
        if not pipeline and target.resolve() == pipeline_metrics.resolve():
            target = spec.out / EXPLORATORY_METRICS
        _check_outputs(spec, target)
        targets.append(target)
    return targets


@app.command("eval")
@clean_errors
def eval_(
    checkpoint: Optional[list[str]] = typer.Option(None, "--checkpoint", help="model folder to evaluate (HF format); "
                                                                             "repeat it to evaluate several in one "
                                                                             "engine"),
    all_arms: bool = typer.Option(False, "--all-arms", help="evaluate every arm of pipeline.arms trained with the "
                                                            "seed(s) (paths.checkpoints/seed<k>/<arm>)"),
    warm_start: bool = typer.Option(False, "--warm-start", help="evaluate the warm start (paths.sft) at every arm's "
                                                                "own setting: the sweep at W (label sft) and each "
                                                                "other arm's W at its S (label sft-<arm>)"),
    all_seeds: bool = typer.Option(False, "--all-seeds", help="with --all-arms / --warm-start: every seed of "
                                                              "pipeline.seeds"),
    max_summaries: Optional[int] = typer.Option(None, "--max-summaries", help="S at test time (default "
                                                                              "eval.max_summaries)"),
    sweep: bool = typer.Option(False, "--sweep", help="evaluate at every S_eval of eval.sweep (default {0, 1, S, 2S, "
                                                      "4S}), read off one run at the largest; writes <out>/s<N>/ each"),
    working_context: Optional[int] = typer.Option(None, "--working-context", help="W at test time (default: training "
                                                                                  "W)"),
    split: Optional[str] = typer.Option(None, "--split", help="train, val or test (default eval.split)"),
    num_tasks: Optional[int] = typer.Option(None, "--num-tasks", help="evaluate the first N tasks of the split (at "
                                                                      "most its size)"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder, one checkpoint only (default: "
                                                          "paths.evals/seed<seed>/<arm>, plus /s<N> without --sweep); "
                                                          "its numbers go to <out>/eval.json, not into the "
                                                          "pipeline's paths.metrics/eval.json"),
    arm: Optional[str] = typer.Option(None, "--arm", help="arm name, one checkpoint only (default: the checkpoint's "
                                                          "training arm, else its folder's name); an arm of the params "
                                                          "file's `arms` also applies its overrides (its W)"
                                                          + arm_choices()),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed for sampling and the outputs' label (default: the "
                                                            "checkpoint's training seed, else the config's)"),
    config: str = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    env: Optional[str] = EnvOpt,
    tracking_uri: Optional[str] = UriOpt,
) -> None:
    """Evaluate checkpoints with the training rollout code and any number of summaries; prints a table and writes
    metrics.json (docs/design.md §6 metrics), outcomes.json and rollouts.jsonl per S_eval. The pipeline's own
    evaluations (--all-arms, --warm-start, or --checkpoint of an arm's checkpoint with the default folder) merge into
    paths.metrics/eval.json; any other (exploratory) evaluation writes <out>/eval.json instead (or, with
    -S paths.metrics=DIR, DIR/eval.json)."""
    from supo.evaluate import open_engine
    from supo.layout import metrics_file
    from supo.preflight import check_model_dir

    seed_flag(seed)
    if sweep and max_summaries is not None:
        fail("--sweep and --max-summaries conflict: the sweep's values come from eval.sweep")
    extra = {k: v for k, v in (("eval.max_summaries", max_summaries), ("eval.working_context", working_context),
                               ("eval.split", split), ("eval.num_tasks", num_tasks)) if v is not None}
    if (all_arms or warm_start) and (checkpoint or out or arm):
        fail("--all-arms / --warm-start plan their own checkpoints, labels and folders: not with --checkpoint, "
             "--out or --arm")
    specs = _plan(checkpoint, all_arms, warm_start, all_seeds, sweep, out, arm, seed, extra, config, set_, env)
    # the params file's metrics file: every -S but one naming paths.metrics (an env may need its -S files to load)
    params_only = [o for o in set_ or [] if not o.replace(" ", "").startswith("paths.metrics=")]
    pipeline_metrics = metrics_file(load(config, params_only, {}, env=env).paths.metrics, "eval")
    sizes: dict[str, int] = {}
    for spec, _ in specs:  # every file and the tracking store, before the engine starts
        if not spec.checkpoint.exists():
            fail(f"checkpoint {spec.checkpoint} does not exist (train it first)")
        check_model_dir(spec.checkpoint, "--checkpoint")
        check_eval_tasks(spec.cfg, num_tasks, sizes, typer.echo)
        checked_tracking_uri(spec.cfg, tracking_uri)
    targets = _merge_targets(specs, defined_arms(config), pipeline_metrics)
    with involving(f"the engine's start-up on {specs[0][0].checkpoint}"):
        engine = open_engine([s.cfg for s, _ in specs], specs[0][0].checkpoint)
    for (spec, pipeline), target in zip(specs, targets, strict=True):
        _run_spec(spec, pipeline, target, engine, tracking_uri)
        if not pipeline:
            typer.echo(f"exploratory evaluation: its numbers are in {target}, not merged into the pipeline's "
                       f"{pipeline_metrics}")
    for target in dict.fromkeys(targets):
        record_wall(target)


def _plan(checkpoint, all_arms, warm_start, all_seeds, sweep, out, arm, seed, extra, config, set_, env) -> list:
    """The evaluations to run, as (spec, whether it is one of the pipeline's own)."""
    from supo.pipeline import plan_eval, plan_warm_start

    base = load(config, set_, extra, env=env)
    seeds = plan_seeds(seed, all_seeds, base)
    planned = lambda a, s: checked(load(config, set_, {**extra, **({} if s is None else {"seed": s})}, env=env,  # noqa: E731
                                        arm=a), seed)
    specs = []
    if warm_start:
        specs += [(s, True) for s in plan_warm_start(planned, base.pipeline.arms, seeds)]
    if all_arms:
        specs += [(s, True) for s in plan_eval(planned, base.pipeline.arms, seeds, sweep=sweep)]
    if checkpoint:
        specs += _checkpoint_specs(list(checkpoint), arm, seed, out, sweep, extra, config, set_, env)
    if not specs:
        fail("give --checkpoint PATH (repeatable), --all-arms or --warm-start")
    return specs


def _run_spec(spec, pipeline: bool, target: Path, engine, tracking_uri) -> None:
    """One planned evaluation in the shared engine (``supo.evaluate.evaluate_into`` runs it and merges its numbers
    into ``target``), with its trackers and progress bar; prints its table."""
    from supo.evaluate import evaluate_into
    from supo.layout import seed_dir
    from supo.preflight import read_run_info

    cfg, name, c = spec.cfg, spec.label, spec.checkpoint
    info = read_run_info(c)
    parent = info.mlflow_run_id if info else None
    n = cfg.eval.num_tasks * cfg.eval.samples_per_task
    base_tags = {"stage": "eval", "arm": name, "checkpoint": str(c)}
    if not pipeline:
        base_tags["exploratory"] = "true"

    def trackers(S: int):
        return tracker(cfg, f"eval-{name}-seed{cfg.seed}-s{S}", tracking_uri, {**base_tags, "s_eval": str(S)},
                       parent, description=f"Eval of `{c}` at S_eval = {S}")

    values = list(spec.sweep) if spec.sweep else [cfg.eval.max_summaries]
    with progress(n, f"eval {name} seed {cfg.seed} S_eval={values}") as pb:
        task = pb.add_task("eval", total=n, info="")
        with involving(f"checkpoint {c}"):
            rows = evaluate_into(cfg, checkpoint=c, out=spec.out, arm=name, values=values, sweep=bool(spec.sweep),
                                 engine=engine, trackers=trackers, metrics_target=target, log=typer.echo,
                                 progress=lambda done: pb.update(task, completed=done, info=""))
    _print_eval_table(f"{name} seed {cfg.seed}", rows)
    typer.echo(f"metrics -> {spec.out}")
    if pipeline:
        typer.echo(f"merged into {target} ({seed_dir(cfg.seed)}.{name})")


def _print_eval_table(arm: str, results: list) -> None:
    """One column per S_eval of ``results`` (:class:`~supo.results.EvalResult`)."""
    from rich.console import Console
    from rich.table import Table

    first = results[0]
    table = Table(title=f"{arm} · W={first.working_context} · split={first.split}")
    table.add_column("metric")
    rows = [r.metrics for r in results]
    for r in results:
        table.add_column(f"S_eval={r.s_eval}", justify="right")
    for k in ("success_rate", "mean_tool_calls", "mean_summaries", "summary_format_miss_rate",
              "mean_working_context_tokens", "max_working_context_tokens", "effective_context_tokens",
              "overlong_rate", "error_loop_rate", "segments_per_rollout", "tokens_generated", "rollout_seconds"):
        table.add_row(k, *[f"{r[k]:.3f}" if isinstance(r[k], float) and not float(r[k]).is_integer() else f"{r[k]:.0f}"
                           for r in rows])
    Console().print(table)
