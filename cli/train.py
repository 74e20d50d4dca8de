"""`supo-cli train`: parse the flags, plan the runs (arms × seeds, :func:`supo.pipeline.plan_train`), check every input
they read, run them one after another on shared actors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.app import ConfigOpt, EnvOpt, SetOpt, UriOpt, app, checked, clean_errors, fail, seed_flag, tracker
from cli.errors import involving
from cli.support import arm_choices, check_tracked_run, defined_arms, load, progress, record_wall
from cli.support import tracking_uri as checked_tracking_uri


def plan_arms(arm: list[str] | None, all_arms: bool, base) -> list[str | None]:
    """:func:`supo.pipeline.plan_arms` for ``base``'s pipeline.arms; a conflict fails with exit code 2."""
    from supo.pipeline import plan_arms as plan

    try:
        return plan(arm, all_arms, base.pipeline.arms)
    except ValueError as e:
        fail(str(e))


def plan_seeds(seed: int | None, all_seeds: bool, base) -> list[int | None]:
    """:func:`supo.pipeline.plan_seeds` for ``base``'s pipeline.seeds; a conflict fails with exit code 2."""
    from supo.pipeline import plan_seeds as plan

    try:
        return plan(seed, all_seeds, base.pipeline.seeds)
    except ValueError as e:
        fail(str(e))


def is_pipeline_run(spec, out: str | None, init: str | None, defined: dict) -> bool:
    """True when a run is one of the pipeline's (what ``train --all-arms`` plans): an arm of ``pipeline.arms`` defined
    in the params file, trained from ``paths.sft`` into its default folder ``paths.checkpoints/seed<k>/<arm>``. Only
    those merge into ``paths.metrics/train.json``; any other run keeps its numbers in ``<its folder>/train.json``."""
    return out is None and init is None and spec.arm in defined and spec.arm in spec.cfg.pipeline.arms


@app.command()
@clean_errors
def train(
    algo: Optional[str] = typer.Option(None, "--algo", help="supo (S = budget.max_summaries) or grpo (S = 0); default: "
                                                          "the arm's train.algo, else supo"),
    config: str = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    env: Optional[str] = EnvOpt,
    init: Optional[str] = typer.Option(None, "--init", help="model to start from (default: paths.sft)"),
    out: Optional[str] = typer.Option(None, "--out", help="checkpoint folder, one run only (default: "
                                                          "paths.checkpoints/seed<seed>/<arm>)"),
    arm: Optional[list[str]] = typer.Option(None, "--arm", help="an arm of the params file's `arms` (applies its "
                                                                "overrides; names outputs and MLflow runs); repeat it "
                                                                "to train several arms one after another on the same "
                                                                "actors; default: the algo" + arm_choices()),
    all_arms: bool = typer.Option(False, "--all-arms", help="train every arm of pipeline.arms (as repeated --arm)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override seed (RL sampling and training order; "
                                                            "0..2^31-1)"),
    all_seeds: bool = typer.Option(False, "--all-seeds", help="train every seed of pipeline.seeds, one after another "
                                                              "on the same actors"),
    steps: Optional[int] = typer.Option(None, "--steps", help="override train.steps"),
    workers: Optional[int] = typer.Option(None, "--workers", help="rollout-worker actors (rollout.num_workers)"),
    world_size: Optional[int] = typer.Option(None, "--world-size", help="FSDP2 trainer ranks (trainer.world_size)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the latest checkpoint in --out, in the same "
                                                        "MLflow run"),
    tracking_uri: Optional[str] = UriOpt,
) -> None:
    """RL training with SUPO or GRPO: rollouts on the engine (engine.backend: vLLM or transformers), advantages grouped by task, clipped token-mean
    loss, weights pushed into the engine every step (trainer.backend: Ray actors, or local: one process); writes an
    HF-format checkpoint per (seed, arm)."""
    from supo.layout import metrics_file
    from supo.pipeline import plan_train

    seed_flag(seed)
    extra = {k: v for k, v in (("train.algo", algo), ("train.steps", steps), ("rollout.num_workers", workers),
                               ("trainer.world_size", world_size), ("seed", seed)) if v is not None}
    base = load(config, set_, extra, env=env)
    arms, seeds = plan_arms(arm, all_arms, base), plan_seeds(seed, all_seeds, base)
    if resume and len(arms) * len(seeds) > 1:
        fail("--resume takes one run: several arms or seeds write to paths.checkpoints/seed<k>/<arm>")
    try:
        specs = plan_train(lambda a, s: checked(load(config, set_, {**extra, **({} if s is None else {"seed": s})},
                                                     env=env, arm=a), seed), arms, seeds, out)
    except ValueError as e:
        fail(str(e))
    defined = defined_arms(config)
    pipeline = {spec.out: is_pipeline_run(spec, out, init, defined) for spec in specs}
    pipeline_metrics = metrics_file(load(config, None, {}, env=env).paths.metrics, "train")  # the params file's
    for spec in specs:  # any other run's numbers stay beside its checkpoint (<out>/train.json), unless -S names a file
        if not pipeline[spec.out] and metrics_file(spec.cfg.paths.metrics, "train").resolve() == \
                pipeline_metrics.resolve():
            spec.cfg.paths.metrics = str(spec.out)
    previous, init = _preflight(specs, resume, init, out, tracking_uri)
    _run_all(specs, previous, init, resume, tracking_uri, pipeline, pipeline_metrics)
    for target in dict.fromkeys(metrics_file(s.cfg.paths.metrics, "train") for s in specs):
        record_wall(target)


def _preflight(specs, resume: bool, init, out, tracking_uri) -> tuple[dict, str]:
    """Every file a run reads or writes, the budgets, data and tracking store, before any actor starts or MLflow run
    opens. Returns what each resumed run continues from (by checkpoint folder) and the initial model."""
    from supo.checkpoint import STATE
    from supo.layout import STEPS_DIR, metrics_file
    from supo.preflight import check_metrics_file, check_model_dir, check_resume, check_writable_dir
    from supo.train_loop import preflight, resume_info

    previous = {}
    for spec in specs:  # every file the resume reads, before anything (the MLflow run included) is touched
        if resume:
            check_resume(spec.out / STEPS_DIR)
            previous[spec.out] = resume_info(spec.out)
    init_flag = "--init" if init else "paths.sft"
    init = init or specs[0].cfg.paths.sft
    if not Path(init).exists():
        fail(f"{init_flag} {init} does not exist; run `supo-cli sft` first (or pass --init)")
    check_model_dir(init, init_flag)
    for spec in specs:  # bad budgets, data or tracking fail here, before any MLflow run is opened
        uri = checked_tracking_uri(spec.cfg, tracking_uri)
        prev = previous.get(spec.out, {})
        if prev.get("mlflow_run_id"):
            check_tracked_run(uri, spec.cfg.tracking.experiment, prev["mlflow_run_id"],
                              f"--resume: {prev['path']}/{STATE}")
        preflight(spec.cfg, prev.get("path", init))
        check_writable_dir(spec.out, "--out" if out else "checkpoint folder")  # before the first step, not after it
        check_metrics_file(metrics_file(spec.cfg.paths.metrics, "train"), "train metrics file")
    return previous, init


def _run_all(specs, previous: dict, init: str, resume: bool, tracking_uri, pipeline: dict, pipeline_metrics) -> None:
    """Each planned run in turn, on actors shared by all of them (when there are several), with its tracker and
    progress bar."""
    from supo.layout import metrics_file
    from supo.train_loop import actors_class
    from supo.train_loop import train as run

    with involving(f"the actors' start-up from {init}"):
        actors = actors_class(specs[0].cfg.trainer.backend).start([s.cfg for s in specs], init, log=typer.echo) \
            if len(specs) > 1 else None
    try:
        for spec in specs:
            cfg, prev = spec.cfg, previous.get(spec.out, {})
            tags = {"stage": "train", "arm": spec.arm, "algo": cfg.train.algo,
                    "max_summaries": str(cfg.train_max_summaries)}
            with tracker(cfg, f"train-{spec.arm}-seed{cfg.seed}", tracking_uri, tags,
                         resume_run_id=prev.get("mlflow_run_id")) as tr, \
                    progress(cfg.train.steps, f"train {spec.arm} seed {cfg.seed}") as pb:
                task = pb.add_task("train", total=cfg.train.steps, completed=prev.get("step", 0), info="")
                with involving(f"arm {spec.arm} seed {cfg.seed} (checkpoints {spec.out})"):
                    run(cfg, init=init, out=spec.out, arm=spec.arm, tracker=tr, resume=resume, log=typer.echo,
                        actors=actors,
                        progress=lambda n, m: pb.update(task, completed=n, info=f"reward {m['mean_reward']:.3f} "
                                                                                f"summaries {m['mean_summaries']:.2f}"))
            target = metrics_file(cfg.paths.metrics, "train")
            if pipeline[spec.out]:
                typer.echo(f"merged into {target} (seed{cfg.seed}.{spec.arm})")
            else:
                typer.echo(f"not a pipeline run (--out, --init or an arm outside pipeline.arms): its numbers are in "
                           f"{target}, not in the pipeline's {pipeline_metrics}")
    finally:
        if actors is not None:
            actors.shutdown()
