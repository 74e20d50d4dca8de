"""`supo-cli`: prepare → sft → train → eval → report, plus the MLflow UI. Heavy imports happen inside commands, so
`supo-cli --help` answers at once.

Every input a command reads is checked before any engine, Ray actor or MLflow run starts (:mod:`supo.preflight`): bad
input is one ``error:`` line naming the file or field, exit code 2. What still fails at run time is one line with the
command, the actor or file and the underlying error, plus the path of a log holding the traceback (exit code 1;
``supo-cli --debug`` prints the traceback instead; :mod:`cli.errors`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

import typer

from cli.errors import EXIT_INPUT, involving, report_runtime_failure
from cli.support import (arm_choices, check_eval_tasks, defined_arms, docs_in_effect, env_choices, hide_flag_types,
                          load, progress, record_wall)
from cli.support import tracking_uri as checked_tracking_uri

hide_flag_types()
_STATE = {"debug": False}

app = typer.Typer(
    name="supo-cli",
    help="SUPO (summarization-augmented policy optimization) and multi-turn GRPO for long-horizon tool use: "
    "build data and a tiny model, warm-start, train, evaluate with any number of test-time summaries, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = typer.Option("params.yaml", "--config", "-c", help="params file (the DVC params.yaml)")
SetOpt = typer.Option(None, "--set", "-S", help="override a config field: -S train.lr=1e-5 (repeatable)")
UriOpt = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (else MLFLOW_TRACKING_URI, else the config)")
EnvOpt = typer.Option(None, "--env", help="environment to run on: applies the params file's envs.<NAME> overrides and "
                                          "puts every stage path under <path>/<NAME>" + env_choices())
SeedOpt = typer.Option(None, "--seed", help="override seed (0..2^31-1)")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"supo-cli {version('supo')}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="print the full traceback of a runtime failure instead of "
                                                      "writing it to logs/ (also SUPO_DEBUG=1)"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    """SUPO and multi-turn GRPO for long-horizon tool use."""
    _STATE["debug"] = debug or os.environ.get("SUPO_DEBUG", "") not in ("", "0")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_INPUT)


def clean_errors(fn):
    """Bad input (config, data, preflight, missing paths) becomes one red line and exit code 2; any other failure
    one line with its cause first and the log holding the traceback, exit code 1 (:mod:`cli.errors`)."""
    command = fn.__name__.rstrip("_")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from typer._click.exceptions import ClickException

        from supo.config import ConfigError
        from supo.data import DataError
        from supo.preflight import PreflightError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except (ConfigError, DataError, PreflightError, FileNotFoundError) as e:
            _fail(str(e))
        except Exception as e:
            code = report_runtime_failure(command, e, _STATE["debug"],
                                          lambda text: typer.secho(text, fg=typer.colors.RED, err=True))
            raise typer.Exit(code) from None

    return wrapper


def _seed_flag(seed: int | None) -> None:
    from supo.preflight import check_seed

    if seed is not None:
        check_seed(seed, "--seed")


def _checked(cfg, seed_flag: int | None = None):
    """The config after the checks every command shares: the seed in range (named by the flag when it came from
    one)."""
    from supo.preflight import check_seed

    check_seed(cfg.seed, "--seed" if seed_flag is not None else "seed")
    return cfg


def _tracker(cfg, run_name: str, uri_flag: str | None, tags: dict, link_run: str | None = None,
             resume_run_id: str | None = None, description: str = ""):
    """The MLflow run of a stage, tagged ``env``, ``seed``, ``profile`` and ``tags`` (``stage``, ``arm``, …).
    ``link_run``: the training run an eval belongs to — tagged ``checkpoint_run_id`` and linked from the run's
    description, not nested (a nested run hides under its parent in the UI's run table, so the README's filters
    would list the parents)."""
    from supo.tracking import Tracker, run_link

    uri = checked_tracking_uri(cfg, uri_flag)
    if link_run is not None:
        tags = {**tags, "checkpoint_run_id": link_run}
        link = run_link(uri, link_run)
        description += f"; trained in {link}" if link else f"; trained in run {link_run} (not in this store)"
    return Tracker(uri, cfg.tracking.experiment, f"{cfg.env.name}-{run_name}", params=cfg.flat(),
                   tags={"profile": cfg.profile, "seed": str(cfg.seed), "env": cfg.env.name, **tags},
                   resume_run_id=resume_run_id, description=description or None)


@app.command()
@clean_errors
def prepare(config: str = ConfigOpt, set_: Optional[list[str]] = SetOpt, env: Optional[str] = EnvOpt) -> None:
    """Build everything locally: task splits (parquet), a BPE tokenizer trained on the task text, a randomly
    initialised tiny Qwen2 (HF format) and expert demonstrations with summary turns."""
    from supo.preflight import check_model_dir
    from supo.prepare import prepare as run

    cfg = _checked(load(config, set_, env=env))
    if not cfg.model.build:  # a local model folder is used as is
        check_model_dir(cfg.paths.model, "paths.model")
    run(cfg, log=typer.echo)
    record_wall(Path(cfg.paths.metrics) / "prepare.json")


@app.command()
@clean_errors
def sft(config: str = ConfigOpt, set_: Optional[list[str]] = SetOpt, env: Optional[str] = EnvOpt,
        tracking_uri: Optional[str] = UriOpt) -> None:
    """Warm-start the tiny model on the expert demonstrations (cross-entropy on the policy's tokens)."""
    from supo.data import DEMO_COLUMNS, check_parquet
    from supo.preflight import check_model_dir
    from supo.sft import run_sft

    cfg = _checked(load(config, set_, env=env))
    check_model_dir(cfg.paths.model, "paths.model")
    check_parquet(Path(cfg.paths.data) / "demos.parquet", DEMO_COLUMNS, "demonstrations")
    checked_tracking_uri(cfg, tracking_uri)
    with _tracker(cfg, "sft", tracking_uri, {"stage": "sft", "arm": "sft"}) as tr, progress(cfg.sft.steps, "sft") as pb:
        task = pb.add_task("sft", total=cfg.sft.steps, info="")
        with involving(f"the warm start of {cfg.paths.model}"):
            result = run_sft(cfg, tracker=tr, log=typer.echo,
                             progress=lambda n, ema: pb.update(task, completed=n, info=f"loss {ema:.4f}"))
        tr.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))}, step=cfg.sft.steps)
    record_wall(Path(cfg.paths.metrics) / "sft.json")


@app.command()
@clean_errors
def train(
    algo: Optional[str] = typer.Option(None, "--algo", help="supo (S = budget.max_summaries) or grpo (S = 0); default: "
                                                          "the arm's train.algo, else supo"),
    config: str = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    env: Optional[str] = EnvOpt,
    init: Optional[str] = typer.Option(None, "--init", help="model to start from (default: paths.sft)"),
    out: Optional[str] = typer.Option(None, "--out", help="checkpoint folder (default: paths.checkpoints/seed<seed>/<arm>)"),
    arm: Optional[list[str]] = typer.Option(None, "--arm", help="an arm of the params file's `arms` (applies its "
                                                                "overrides; names outputs and MLflow runs); repeat it to "
                                                                "train several arms one after another on the same "
                                                                "actors; default: the algo" + arm_choices()),
    all_arms: bool = typer.Option(False, "--all-arms", help="train every arm of pipeline.arms (as repeated --arm)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override seed (RL sampling and training order; "
                                                            "0..2^31-1)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="override train.steps"),
    workers: Optional[int] = typer.Option(None, "--workers", help="rollout-worker actors (rollout.num_workers)"),
    world_size: Optional[int] = typer.Option(None, "--world-size", help="FSDP2 trainer ranks (trainer.world_size)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the latest checkpoint in --out, in the same "
                                                        "MLflow run"),
    tracking_uri: Optional[str] = UriOpt,
) -> None:
    """RL training with SUPO or GRPO: rollouts on the vLLM engine, advantages grouped by task, clipped token-mean
    loss, weights pushed into the engine every step; writes an HF-format checkpoint per arm."""
    from supo.preflight import check_model_dir, check_resume, check_run_exists
    from supo.train_loop import STEPS_DIR, Actors, preflight, resume_info
    from supo.train_loop import train as run

    _seed_flag(seed)
    extra = {}
    for key, val in (("train.algo", algo), ("train.steps", steps), ("rollout.num_workers", workers),
                     ("trainer.world_size", world_size), ("seed", seed)):
        if val is not None:
            extra[key] = val
    arms = list(arm or [])
    if all_arms:
        if arms:
            _fail("--all-arms and --arm conflict: --all-arms trains pipeline.arms")
        arms = load(config, set_, extra, env=env).pipeline.arms
    if len(arms) != len(set(arms)):
        _fail(f"--arm: {arms} repeats an arm")
    if len(arms) > 1 and (out or resume):
        _fail("--out and --resume take one arm: several arms write to paths.checkpoints/seed<seed>/<arm>")
    runs = []  # (cfg, arm name, out, previous checkpoint info)
    for name in arms or [None]:
        cfg = _checked(load(config, set_, extra, env=env, arm=name), seed)
        name = name or cfg.train.algo
        run_out = out or str(Path(cfg.paths.checkpoints) / f"seed{cfg.seed}" / name)
        if resume:  # every file the resume reads, before anything (the MLflow run included) is touched
            check_resume(Path(run_out) / STEPS_DIR)
        runs.append((cfg, name, run_out, resume_info(run_out) if resume else {}))
    init_flag = "--init" if init else "paths.sft"
    init = init or runs[0][0].paths.sft
    if not Path(init).exists():
        _fail(f"{init_flag} {init} does not exist; run `supo-cli sft` first (or pass --init)")
    check_model_dir(init, init_flag)
    for cfg, _, _, previous in runs:  # bad budgets, data or tracking fail here, before any MLflow run is opened
        uri = checked_tracking_uri(cfg, tracking_uri)
        if previous.get("mlflow_run_id"):
            check_run_exists(uri, previous["mlflow_run_id"], f"--resume: {previous['path']}/state.json")
        preflight(cfg, previous.get("path", init))
    with involving(f"the actors' start-up from {init}"):
        actors = Actors.start([r[0] for r in runs], init, log=typer.echo) if len(runs) > 1 else None
    try:
        for cfg, name, run_out, previous in runs:
            tags = {"stage": "train", "arm": name, "algo": cfg.train.algo,
                    "max_summaries": str(cfg.train_max_summaries)}
            with _tracker(cfg, f"train-{name}-seed{cfg.seed}", tracking_uri, tags,
                          resume_run_id=previous.get("mlflow_run_id")) as tr, \
                    progress(cfg.train.steps, f"train {name}") as pb:
                task = pb.add_task("train", total=cfg.train.steps, completed=previous.get("step", 0), info="")
                with involving(f"arm {name} (checkpoints {run_out})"):
                    run(cfg, init=init, out=run_out, arm=name, tracker=tr, resume=resume, log=typer.echo,
                        actors=actors,
                        progress=lambda n, m: pb.update(task, completed=n, info=f"reward {m['mean_reward']:.3f} "
                                                                                f"summaries {m['mean_summaries']:.2f}"))
    finally:
        if actors is not None:
            actors.shutdown()
    record_wall(Path(runs[0][0].paths.metrics) / f"train-seed{runs[0][0].seed}.json")


@app.command("eval")
@clean_errors
def eval_(
    checkpoint: Optional[list[str]] = typer.Option(None, "--checkpoint", help="model folder to evaluate (HF format); "
                                                                             "repeat it to evaluate several in one "
                                                                             "engine"),
    all_arms: bool = typer.Option(False, "--all-arms", help="evaluate every arm of pipeline.arms trained with --seed "
                                                            "(paths.checkpoints/seed<seed>/<arm>), in one engine"),
    max_summaries: Optional[int] = typer.Option(None, "--max-summaries", help="S at test time (default eval.max_summaries)"),
    sweep: bool = typer.Option(False, "--sweep", help="evaluate at every S_eval of eval.sweep (default {0, 1, S, 2S, "
                                                      "4S}), read off one run at the largest; writes <out>/s<N>/ each"),
    working_context: Optional[int] = typer.Option(None, "--working-context", help="W at test time (default: training W)"),
    split: Optional[str] = typer.Option(None, "--split", help="train or test (default eval.split)"),
    num_tasks: Optional[int] = typer.Option(None, "--num-tasks", help="evaluate the first N tasks of the split (at "
                                                                      "most its size)"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder, one checkpoint only (default: "
                                                          "paths.evals/seed<seed>/<arm>, plus /s<N> without --sweep)"),
    arm: Optional[str] = typer.Option(None, "--arm", help="arm name, one checkpoint only (default: the checkpoint's "
                                                          "training arm, else its folder's name); an arm of the params "
                                                          "file's `arms` also applies its overrides (its W)"
                                                          + arm_choices()),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed for sampling and the outputs' label (default: the "
                                                            "checkpoint's training seed, else the config's)"),
    metrics_file: Optional[str] = typer.Option(None, "--metrics-file", help="also merge every result into this JSON "
                                                                           "file as {arm: {s<N>: metrics}} (for `dvc "
                                                                           "metrics`)"),
    config: str = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    env: Optional[str] = EnvOpt,
    tracking_uri: Optional[str] = UriOpt,
) -> None:
    """Evaluate checkpoints with the training rollout code and any number of summaries; prints a table and writes
    metrics.json (docs/design.md §6 metrics) and rollouts.jsonl per S_eval."""
    from supo.data import update_json
    from supo.evaluate import evaluate, open_engine
    from supo.preflight import check_model_dir, read_json_object
    from supo.train_loop import RUN_FILE

    _seed_flag(seed)
    checkpoint = list(checkpoint or [])
    flag = "--checkpoint"
    if all_arms:
        if checkpoint:
            _fail("--all-arms and --checkpoint conflict: --all-arms evaluates pipeline.arms' checkpoints")
        flag = "--all-arms: checkpoint"
        base = load(config, set_, {"seed": seed} if seed is not None else None, env=env)
        checkpoint = [str(Path(base.paths.checkpoints) / f"seed{base.seed}" / a) for a in base.pipeline.arms]
    if not checkpoint:
        _fail("give --checkpoint PATH (repeatable) or --all-arms")
    for c in checkpoint:
        if not Path(c).exists():
            _fail(f"{flag} {c} does not exist")
    if len(checkpoint) > 1 and (out or arm):
        _fail("--out and --arm take one --checkpoint: with several, each is named by its training arm and seed")
    if sweep and max_summaries is not None:
        _fail("--sweep and --max-summaries conflict: the sweep's values come from eval.sweep")
    defined = defined_arms(config)
    jobs = []  # (checkpoint, arm, cfg, training run id)
    for c in checkpoint:
        run_file = Path(c) / RUN_FILE
        info = read_json_object(run_file, "run info") if run_file.exists() else {}
        name = arm or info.get("arm") or Path(c).name
        extra = {}
        for key, val in (("eval.max_summaries", max_summaries), ("eval.working_context", working_context),
                         ("eval.split", split), ("eval.num_tasks", num_tasks),
                         ("seed", seed if seed is not None else info.get("seed"))):
            if val is not None:
                extra[key] = val
        cfg = _checked(load(config, set_, extra, env=env, arm=name if name in defined else None), seed)
        jobs.append((c, name, cfg, info.get("mlflow_run_id")))
    sizes: dict[str, int] = {}
    for c, _, cfg, _ in jobs:  # every file and the tracking store, before the engine starts
        check_model_dir(c, flag)
        check_eval_tasks(cfg, num_tasks, sizes, typer.echo)
        checked_tracking_uri(cfg, tracking_uri)
    with involving(f"the engine's start-up on {checkpoint[0]}"):
        engine = open_engine([j[2] for j in jobs], checkpoint[0])
    for c, name, cfg, parent in jobs:
        n = cfg.eval.num_tasks * cfg.eval.samples_per_task
        base_tags = {"stage": "eval", "arm": name, "checkpoint": str(c)}
        if sweep:
            values = cfg.eval.sweep_values(cfg.budget.max_summaries)
            where = out or str(Path(cfg.paths.evals) / f"seed{cfg.seed}" / name)

            def trackers(S: int, cfg=cfg, name=name, base_tags=base_tags, parent=parent, c=c):
                return _tracker(cfg, f"eval-{name}-seed{cfg.seed}-s{S}", tracking_uri, {**base_tags, "s_eval": str(S)},
                                parent, description=f"Eval of `{c}` at S_eval = {S}")

            with progress(n, f"eval {name} seed {cfg.seed} S_eval={values}") as pb:
                task = pb.add_task("eval", total=n, info="")
                with involving(f"checkpoint {c}"):
                    res = evaluate(cfg, checkpoint=c, out=where, arm=name, log=typer.echo, sweep=values,
                                   trackers=trackers, engine=engine,
                                   progress=lambda done: pb.update(task, completed=done, info=""))
            rows = list(res["sweep"].values())
        else:
            S = cfg.eval.max_summaries
            where = out or str(Path(cfg.paths.evals) / f"seed{cfg.seed}" / name / f"s{S}")
            with _tracker(cfg, f"eval-{name}-seed{cfg.seed}-s{S}", tracking_uri, {**base_tags, "s_eval": str(S)},
                          parent, description=f"Eval of `{c}` at S_eval = {S}") as tr, \
                    progress(n, f"eval {name} S={S}") as pb:
                task = pb.add_task("eval", total=n, info="")
                with involving(f"checkpoint {c}"):
                    rows = [evaluate(cfg, checkpoint=c, out=where, arm=name, tracker=tr, log=typer.echo,
                                     engine=engine, progress=lambda done: pb.update(task, completed=done, info=""))]
        if metrics_file:
            numbers = {f"s{r['s_eval']}": {k: v for k, v in r.items() if isinstance(v, (int, float))} for r in rows}
            update_json(metrics_file, {name: numbers})
        _print_eval_table(f"{name} seed {cfg.seed}", rows)
        typer.echo(f"metrics -> {where}")
    if metrics_file:
        record_wall(metrics_file)


def _print_eval_table(arm: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    first = rows[0]
    table = Table(title=f"{arm} · W={first['working_context']} · split={first['split']}")
    table.add_column("metric")
    for r in rows:
        table.add_column(f"S_eval={r['s_eval']}", justify="right")
    for k in ("success_rate", "mean_tool_calls", "mean_summaries", "summary_format_miss_rate",
              "mean_working_context_tokens", "max_working_context_tokens", "effective_context_tokens",
              "overlong_rate", "segments_per_rollout", "tokens_generated", "tokens_processed", "rollout_seconds"):
        table.add_row(k, *[f"{r[k]:.3f}" if isinstance(r[k], float) and not float(r[k]).is_integer() else f"{r[k]:.0f}"
                           for r in rows])
    Console().print(table)
@app.command()
@clean_errors
def report(
    config: str = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    out: Optional[str] = typer.Option(None, "--out", help="report folder (default paths.reports)"),
    tracking_uri: Optional[str] = UriOpt,
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="write the report files only; log nothing to MLflow"),
) -> None:
    """Write the report from every environment's eval and training outputs: report.md and a self-contained
    report.html (Table 1 and Table 3 analogues, training curves, the claims C1–C4 held or not with their numbers),
    PNG figures, summary.json (DVC metrics) and plots/*.csv (DVC plots); then log it to MLflow as the run `report` and
    attach each environment's figures to its training runs."""
    from supo.report import log_report, roles_from_config, write_report

    cfg = load(config, set_)
    uri = None if no_mlflow else checked_tracking_uri(cfg, tracking_uri)
    roles = roles_from_config(cfg.pipeline.arms, cfg.arms)
    try:
        files = write_report(cfg.paths.evals, cfg.paths.checkpoints, out or cfg.paths.reports, roles=roles,
                             envs=cfg.pipeline.envs, arms=cfg.pipeline.arms, seeds=cfg.pipeline.seeds,
                             title=f"SUPO results ({cfg.profile} profile)")
    except ValueError as e:  # a malformed metrics file: the message names it
        _fail(str(e))
    for env, claims in files.claims.items():
        typer.echo(f"{env}: " + "; ".join(f"{c.key} {c.label}" for c in claims))
    if uri is not None:
        params = {"paths.evals": cfg.paths.evals, "paths.checkpoints": cfg.paths.checkpoints,
                  "pipeline.envs": cfg.pipeline.envs, "pipeline.arms": cfg.pipeline.arms,
                  "pipeline.seeds": cfg.pipeline.seeds}
        run_id, attached = log_report(files, uri, cfg.tracking.experiment, profile=cfg.profile, params=params)
        typer.echo(f"MLflow run report ({run_id}) in {uri}, experiment {cfg.tracking.experiment}; figures attached "
                   f"to {len(attached)} training run(s)")
    record_wall(files.summary_json)
    typer.echo(f"report -> {files.markdown}")
    typer.echo(f"report -> {files.html}")


@app.command()
@clean_errors
def ui(
    config: str = ConfigOpt,
    port: int = typer.Option(5000, "--port", help="port on 127.0.0.1"),
    tracking_uri: Optional[str] = UriOpt,
    experiment: Optional[str] = typer.Option(None, "--experiment", help="save views of this experiment — per env "
                                                                        "of pipeline.envs (or --env), its training "
                                                                        "runs grouped by arm (mean and band over "
                                                                        "seeds), success_rate, mean_reward, "
                                                                        "overlong_rate, mean_summaries charted first "
                                                                        "— and print (with --open, open) the first"),
    env: Optional[str] = typer.Option(None, "--env", help="the env whose view --experiment opens" + env_choices()),
    filter_: Optional[str] = typer.Option(None, "--filter", help="one view of these runs instead (an MLflow search "
                                                                 "filter, e.g. \"tags.s_eval = '3'\")"),
    open_: bool = typer.Option(False, "--open", help="open the URL in a browser once the UI answers"),
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the run store; its URL is printed once the server answers (Ctrl-C stops
    it and its workers)."""
    from mlflow import MlflowClient

    from supo.tracking import experiment_url, save_comparison_view, serve_ui

    cfg = load(config, None)
    uri = checked_tracking_uri(cfg, tracking_uri)
    base, url = f"http://127.0.0.1:{port}", None
    if experiment is not None:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [e.name for e in client.search_experiments()]
            _fail(f"--experiment {experiment}: no such experiment in {uri} (there: {', '.join(names) or 'none'})")
        if filter_:
            filters = {filter_: filter_}
        else:  # one view per env: arms are compared within an env
            filters = {f"{e} training runs": f"tags.env = '{e}' and tags.stage = 'train'"
                       for e in ([env] if env else cfg.pipeline.envs)}
        names = [f"supo: {label} by arm" for label in filters]
        views = [save_comparison_view(uri, exp.experiment_id, flt, "arm", name=name)
                 for name, flt in zip(names, filters.values())]
        typer.echo(f"saved in experiment {experiment} (the UI's Views menu): {', '.join(names)}")
        url = experiment_url(base, exp.experiment_id, charts=True, view=views[0])
    raise typer.Exit(serve_ui(uri, host="127.0.0.1", port=port, url=url, open_browser=open_))


@app.command("config")
@clean_errors
def config_(config: str = ConfigOpt, set_: Optional[list[str]] = SetOpt, env: Optional[str] = EnvOpt,
            arm: Optional[str] = typer.Option(None, "--arm", help="apply this arm's overrides" + arm_choices()),
            docs: bool = typer.Option(False, "--docs", help="print every field: its value in effect, where that "
                                                            "value comes from, its meaning")) -> None:
    """Validate the config and print it resolved as a stage would use it (with --env and --arm: that env's and arm's
    overrides applied), or with --docs every field with its value, its source and its meaning."""
    import yaml

    from supo.config import parse_override, provenance

    cfg = load(config, set_, env=env, arm=arm)
    if not docs:
        typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return
    path = config if Path(config).exists() or config != "params.yaml" else None
    for line in docs_in_effect(cfg, provenance(path, dict(parse_override(o) for o in set_ or []), env=env, arm=arm)):
        typer.echo(line)


if __name__ == "__main__":
    app()
