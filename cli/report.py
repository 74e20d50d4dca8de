"""`supo-cli report`: the report across environments, arms and seeds (:mod:`supo.report`), stored in MLflow."""

from __future__ import annotations

from typing import Optional

import typer

from cli.app import ConfigOpt, SetOpt, UriOpt, app, clean_errors, fail
from cli.support import load, record_wall
from cli.support import tracking_uri as checked_tracking_uri


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
    report.html (Table 1 and Table 3 analogues, training curves, overlong dynamics, the claims C0–C4 decided by their
    confidence intervals), PNG figures, summary.json (DVC metrics) and plots/*.csv (DVC plots); then log it to MLflow
    as the run `report` and attach each environment's figures to its training runs (without MLflow installed: the
    files only, as with --no-mlflow, and a note saying so)."""
    from supo.report import log_report, roles_from_config, write_report
    from supo.tracking_json import announce_fallback, mlflow_available

    cfg = load(config, set_)
    if not no_mlflow and not mlflow_available():
        announce_fallback(lambda line: typer.echo(line, err=True), root=None)
        no_mlflow = True
    uri = None if no_mlflow else checked_tracking_uri(cfg, tracking_uri)
    roles = roles_from_config(cfg.pipeline.arms, cfg.arms)
    try:
        files = write_report(cfg.paths.evals, cfg.paths.checkpoints, out or cfg.paths.reports, roles=roles,
                             envs=cfg.pipeline.envs, arms=cfg.pipeline.arms, seeds=cfg.pipeline.seeds,
                             title=f"SUPO results ({cfg.profile} profile)")
    except ValueError as e:  # a malformed metrics file: the message names it
        fail(str(e))
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
