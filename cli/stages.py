"""`supo-cli prepare` and `supo-cli sft`: the stages before training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.app import ConfigOpt, EnvOpt, SetOpt, UriOpt, app, checked, clean_errors, tracker
from cli.errors import involving
from cli.support import load, progress, record_wall
from cli.support import tracking_uri as checked_tracking_uri
from supo.layout import metrics_file


@app.command()
@clean_errors
def prepare(config: str = ConfigOpt, set_: Optional[list[str]] = SetOpt, env: Optional[str] = EnvOpt) -> None:
    """Build everything locally: task splits (parquet), a BPE tokenizer trained on the task text, a randomly
    initialised tiny Qwen2 (HF format) and expert demonstrations with summary turns."""
    from supo.preflight import check_model_dir
    from supo.prepare import prepare as run

    cfg = checked(load(config, set_, env=env, check_files=True))  # the env's local files exist (file-backed envs)
    if not cfg.model.build:  # a local model folder is used as is (model.source: prepare links it as paths.model)
        check_model_dir(cfg.model.source or cfg.paths.model, "model.source" if cfg.model.source else "paths.model")
    run(cfg, log=typer.echo)
    record_wall(metrics_file(cfg.paths.metrics, "prepare"))


@app.command()
@clean_errors
def sft(config: str = ConfigOpt, set_: Optional[list[str]] = SetOpt, env: Optional[str] = EnvOpt,
        tracking_uri: Optional[str] = UriOpt) -> None:
    """Warm-start the tiny model on the expert demonstrations (cross-entropy on the policy's tokens)."""
    from supo.data import DEMO_COLUMNS, check_parquet
    from supo.preflight import check_model_dir
    from supo.sft import run_sft

    cfg = checked(load(config, set_, env=env))
    check_model_dir(cfg.paths.model, "paths.model")
    check_parquet(Path(cfg.paths.data) / "demos.parquet", DEMO_COLUMNS, "demonstrations")
    checked_tracking_uri(cfg, tracking_uri)
    with tracker(cfg, "sft", tracking_uri, {"stage": "sft", "arm": "sft"}) as tr, progress(cfg.sft.steps, "sft") as pb:
        task = pb.add_task("sft", total=cfg.sft.steps, info="")
        with involving(f"the warm start of {cfg.paths.model}"):
            result = run_sft(cfg, tracker=tr, log=typer.echo,
                             progress=lambda n, ema: pb.update(task, completed=n, info=f"loss {ema:.4f}"))
        tr.log_metrics(result.numbers(), step=cfg.sft.steps)
    record_wall(metrics_file(cfg.paths.metrics, "sft"))
