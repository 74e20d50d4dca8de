"""`supo-cli`: prepare → sft → train → eval → report, plus the MLflow UI. Heavy imports happen inside commands, so
`supo-cli --help` answers at once."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

import typer

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
                                          "puts every stage path under <path>/<NAME>")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def clean_errors(fn):
    """Turn user-facing errors (config, data, missing paths) into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from supo.config import ConfigError
        from supo.data import DataError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, FileNotFoundError) as e:
            _fail(str(e))

    return wrapper


def _load(config: str, overrides: list[str] | None, extra: dict | None = None, env: str | None = None):
    from supo.config import load_config, parse_override

    path = config if Path(config).exists() or config != "params.yaml" else None
    items = dict(parse_override(o) for o in overrides or [])
    items.update(extra or {})
    return load_config(path, items, env=env)


def _tracker(cfg, run_name: str, uri_flag: str | None, tags: dict, parent: str | None = None,
             resume_run_id: str | None = None):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from supo.tracking import Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(uri_flag, cfg.tracking.uri)
    if parent is not None:  # nest under the checkpoint's training run when it is in this store; else only tag it
        tags = {**tags, "checkpoint_run_id": parent}
        try:
            MlflowClient(tracking_uri=uri).get_run(parent)
        except MlflowException:
            parent = None
    return Tracker(uri, cfg.tracking.experiment, f"{cfg.env.name}-{run_name}", params=cfg.flat(),
                   tags={"profile": cfg.profile, "seed": str(cfg.seed), "env": cfg.env.name, **tags},
                   parent_run_id=parent,
                   resume_run_id=resume_run_id)


def _progress(total: int, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=os.environ.get("SUPO_PROGRESS", "1") == "0")


@app.command()
@clean_errors
def prepare(config: str = ConfigOpt, set_: Optional[list[str]] = SetOpt, env: Optional[str] = EnvOpt) -> None:
    """Build everything locally: task splits (parquet), a BPE tokenizer trained on the task text, a randomly
    initialised tiny Qwen2 (HF format) and expert demonstrations with summary turns."""
    from supo.prepare import prepare as run

    cfg = _load(config, set_, env=env)
    run(cfg, log=typer.echo)


@app.command()
@clean_errors
def sft(config: str = ConfigOpt, set_: Optional[list[str]] = SetOpt, env: Optional[str] = EnvOpt,
        tracking_uri: Optional[str] = UriOpt) -> None:
    """Warm-start the tiny model on the expert demonstrations (cross-entropy on the policy's tokens)."""
    from supo.sft import run_sft

    cfg = _load(config, set_, env=env)
    with _tracker(cfg, "sft", tracking_uri, {"stage": "sft"}) as tr, _progress(cfg.sft.steps, "sft") as pb:
        task = pb.add_task("sft", total=cfg.sft.steps, info="")
        result = run_sft(cfg, tracker=tr, log=typer.echo,
                         progress=lambda n, ema: pb.update(task, completed=n, info=f"loss {ema:.4f}"))
        tr.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))}, step=cfg.sft.steps)


@app.command()
@clean_errors
def train(
    algo: str = typer.Option("supo", "--algo", help="supo (S = budget.max_summaries) or grpo (S = 0)"),
    config: str = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    env: Optional[str] = EnvOpt,
    init: Optional[str] = typer.Option(None, "--init", help="model to start from (default: paths.sft)"),
    out: Optional[str] = typer.Option(None, "--out", help="checkpoint folder (default: paths.checkpoints/<arm>)"),
    arm: Optional[str] = typer.Option(None, "--arm", help="arm name for outputs and MLflow (default: the algo)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="override train.steps"),
    workers: Optional[int] = typer.Option(None, "--workers", help="rollout-worker actors (rollout.num_workers)"),
    world_size: Optional[int] = typer.Option(None, "--world-size", help="FSDP2 trainer ranks (trainer.world_size)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the latest checkpoint in --out, in the same "
                                                        "MLflow run"),
    tracking_uri: Optional[str] = UriOpt,
) -> None:
    """RL training with SUPO or GRPO: rollouts on the vLLM engine, advantages grouped by task, clipped token-mean
    loss, weights pushed into the engine every step; writes an HF-format checkpoint."""
    from supo.train_loop import preflight, resume_info
    from supo.train_loop import train as run

    extra = {"train.algo": algo}
    for key, val in (("train.steps", steps), ("rollout.num_workers", workers), ("trainer.world_size", world_size)):
        if val is not None:
            extra[key] = val
    cfg = _load(config, set_, extra, env=env)
    arm = arm or algo
    init = init or cfg.paths.sft
    out = out or str(Path(cfg.paths.checkpoints) / arm)
    if not Path(init).exists():
        _fail(f"--init {init} does not exist; run `supo-cli sft` first (or pass --init)")
    previous = resume_info(out) if resume else {}
    if resume and not previous:
        _fail(f"--resume: no checkpoint under {out}/steps to resume from")
    preflight(cfg, previous.get("path", init))  # bad budgets or data fail here, before an MLflow run is opened
    tags = {"stage": "train", "arm": arm, "algo": algo, "max_summaries": str(cfg.train_max_summaries)}
    with _tracker(cfg, f"train-{arm}", tracking_uri, tags, resume_run_id=previous.get("mlflow_run_id")) as tr, \
            _progress(cfg.train.steps, f"train {arm}") as pb:
        task = pb.add_task("train", total=cfg.train.steps, completed=previous.get("step", 0), info="")
        run(cfg, init=init, out=out, arm=arm, tracker=tr, resume=resume, log=typer.echo,
            progress=lambda n, m: pb.update(task, completed=n, info=f"reward {m['mean_reward']:.3f} "
                                                                    f"summaries {m['mean_summaries']:.2f}"))


@app.command("eval")
@clean_errors
def eval_(
    checkpoint: str = typer.Option(..., "--checkpoint", help="model folder to evaluate (HF format)"),
    max_summaries: Optional[int] = typer.Option(None, "--max-summaries", help="S at test time (default eval.max_summaries)"),
    working_context: Optional[int] = typer.Option(None, "--working-context", help="W at test time (default: training W)"),
    split: Optional[str] = typer.Option(None, "--split", help="train or test (default eval.split)"),
    num_tasks: Optional[int] = typer.Option(None, "--num-tasks", help="evaluate the first N tasks of the split"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder (default: paths.evals/<arm>/s<N>)"),
    arm: Optional[str] = typer.Option(None, "--arm", help="arm name (default: the checkpoint folder's name)"),
    config: str = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    env: Optional[str] = EnvOpt,
    tracking_uri: Optional[str] = UriOpt,
) -> None:
    """Evaluate a checkpoint with the training rollout code and any number of summaries; prints a table and writes
    metrics.json (docs/design.md §6 metrics) and rollouts.jsonl."""
    from rich.console import Console
    from rich.table import Table

    from supo.evaluate import evaluate
    from supo.train_loop import read_run_info

    if not Path(checkpoint).exists():
        _fail(f"--checkpoint {checkpoint} does not exist")
    extra = {}
    for key, val in (("eval.max_summaries", max_summaries), ("eval.working_context", working_context),
                     ("eval.split", split), ("eval.num_tasks", num_tasks)):
        if val is not None:
            extra[key] = val
    cfg = _load(config, set_, extra, env=env)
    arm = arm or Path(checkpoint).name
    out = out or str(Path(cfg.paths.evals) / arm / f"s{cfg.eval.max_summaries}")
    parent = read_run_info(checkpoint).get("mlflow_run_id")
    tags = {"stage": "eval", "arm": arm, "s_eval": str(cfg.eval.max_summaries), "checkpoint": str(checkpoint)}
    n = cfg.eval.num_tasks * cfg.eval.samples_per_task
    with _tracker(cfg, f"eval-{arm}-s{cfg.eval.max_summaries}", tracking_uri, tags, parent) as tr, \
            _progress(n, f"eval {arm} S={cfg.eval.max_summaries}") as pb:
        task = pb.add_task("eval", total=n, info="")
        res = evaluate(cfg, checkpoint=checkpoint, out=out, arm=arm, tracker=tr, log=typer.echo,
                       progress=lambda done: pb.update(task, completed=done, info=""))
    table = Table(title=f"{arm} · S_eval={res['s_eval']} · W={res['working_context']} · split={res['split']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in ("success_rate", "mean_tool_calls", "mean_summaries", "summary_format_miss_rate",
              "mean_working_context_tokens", "max_working_context_tokens", "effective_context_tokens",
              "overlong_rate", "segments_per_rollout", "tokens_generated", "tokens_processed", "rollout_seconds"):
        v = res[k]
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) and not float(v).is_integer() else f"{v:.0f}")
    Console().print(table)
    typer.echo(f"metrics -> {Path(out) / 'metrics.json'}")


@app.command()
@clean_errors
def report(
    config: str = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    out: Optional[str] = typer.Option(None, "--out", help="report folder (default paths.reports)"),
) -> None:
    """Write the report (markdown table of the docs/design.md §6 metrics per arm and S_eval, training curves summary,
    a figure) from the eval and training outputs."""
    from supo.report import write_report

    cfg = _load(config, set_)
    path = write_report(cfg.paths.evals, cfg.paths.checkpoints, out or cfg.paths.reports)
    typer.echo(f"report -> {path}")


@app.command()
def ui(
    config: str = ConfigOpt,
    port: int = typer.Option(5000, "--port", help="port on 127.0.0.1"),
    tracking_uri: Optional[str] = UriOpt,
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the run store (Ctrl-C stops it and its workers)."""
    from supo.tracking import resolve_tracking_uri, serve_ui

    cfg = _load(config, None)
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    typer.echo(f"MLflow UI on http://127.0.0.1:{port} (store {uri})")
    raise typer.Exit(serve_ui(uri, host="127.0.0.1", port=port))


@app.command("config")
@clean_errors
def config_(config: str = ConfigOpt, set_: Optional[list[str]] = SetOpt,
            docs: bool = typer.Option(False, "--docs", help="print every field with its default and meaning")) -> None:
    """Validate the config and print it resolved (or, with --docs, every field's documentation)."""
    import yaml

    from supo.config import describe

    if docs:
        for name, default, help_ in describe():
            typer.echo(f"{name:36s} {default:>14s}  {help_}")
        return
    cfg = _load(config, set_)
    typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


if __name__ == "__main__":
    app()
