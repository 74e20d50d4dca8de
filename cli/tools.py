"""`supo-cli ui` (the MLflow UI, with saved comparison views) and `supo-cli config` (the resolved config, or every
field with its value, source and meaning)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from cli.app import ConfigOpt, EnvOpt, SetOpt, UriOpt, app, clean_errors, fail
from cli.support import arm_choices, docs_in_effect, env_choices, load
from cli.support import tracking_uri as checked_tracking_uri


@app.command()
@clean_errors
def ui(
    config: str = ConfigOpt,
    port: int = typer.Option(5000, "--port", help="port on 127.0.0.1"),
    tracking_uri: str | None = UriOpt,
    experiment: str | None = typer.Option(None, "--experiment", help="save views of this experiment — per env "
                                                                        "of pipeline.envs (or --env): its evals at "
                                                                        "each arm's own setting, the warm start's "
                                                                        "included (bar charts, one bar per seed), "
                                                                        "and its training runs (lines over steps), "
                                                                        "grouped by arm, runs in the report's "
                                                                        "colour per arm — and print (with --open, "
                                                                        "open) the first eval view"),
    env: str | None = typer.Option(None, "--env", help="the env whose views --experiment saves" + env_choices()),
    filter_: str | None = typer.Option(None, "--filter", help="one view of these runs instead (an MLflow search "
                                                                 "filter, e.g. \"tags.stage = 'eval' and "
                                                                 "tags.s_eval = '5'\"): bar charts when every "
                                                                 "matched run has one-step metrics, else lines"),
    open_: bool = typer.Option(False, "--open", help="open the URL in a browser once the UI answers"),
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the run store (one server worker, no job runner); its URL is printed
    once its API answers. Ctrl-C or SIGTERM stops it and every process it started."""
    from supo.tracking_json import DEFAULT_ROOT, mlflow_available

    if not mlflow_available():
        fail(f"supo-cli ui needs mlflow, which is not installed (pip install mlflow); without it runs are logged as "
             f"JSON files under {DEFAULT_ROOT}")
    from supo.tracking_ui import experiment_url, serve_ui

    cfg = load(config, None)
    uri = checked_tracking_uri(cfg, tracking_uri)
    base, url = f"http://127.0.0.1:{port}", None
    if experiment is not None:
        url = experiment_url(base, _experiment_id(uri, experiment), charts=True,
                             view=_save_views(cfg, uri, experiment, [env] if env else cfg.pipeline.envs, filter_))
    code = serve_ui(uri, host="127.0.0.1", port=port, url=url, open_browser=open_, experiment=experiment)
    if code > 128:  # stopped by Ctrl-C or SIGTERM, the server already gone: skip tearing down torch & co. (seconds)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def _experiment_id(uri: str, experiment: str) -> str:
    """The id of ``experiment`` in store ``uri``; an input error naming the experiments there when it is missing."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        fail(f"--experiment {experiment}: no such experiment in {uri} (there: {', '.join(names) or 'none'})")
    return exp.experiment_id


def _save_views(cfg, uri: str, experiment: str, envs: list[str], filter_: str | None) -> str:
    """Colour the experiment's runs by arm, tag old evals' ``own_setting``, repair a moved project's artifact paths,
    save the views (per env: evals, then training runs; or the ``--filter`` one) and name them; the key of the view
    to open (the first env's eval view, or its training view when it has no evals)."""
    from supo.tracking import find_runs
    from supo.tracking_links import relocate_artifacts, tag_own_setting
    from supo.tracking_views import (
        arm_palette,
        colour_runs,
        legend,
        read_view,
        save_eval_view,
        save_filter_view,
        save_training_view,
    )

    exp_id = _experiment_id(uri, experiment)
    if old := relocate_artifacts(uri, experiment):
        typer.echo(f"the project moved: artifacts of {experiment} now read from next to the store (were {old})")
    palette = arm_palette(cfg)
    colour_runs(uri, exp_id, palette)
    tag_own_setting(uri, exp_id)
    names = legend(palette)
    if filter_:
        keys = [save_filter_view(uri, exp_id, filter_, names)]
    else:
        keys = []
        for e in envs:
            has_evals = bool(find_runs(uri, experiment, f"tags.env = '{e}' and tags.stage = 'eval' and "
                                                        "tags.own_setting = 'true'"))
            views = [save_eval_view(uri, exp_id, e, names), save_training_view(uri, exp_id, e, names)]
            keys += views if has_evals else views[::-1]
    typer.echo(f"saved in experiment {experiment} (the UI's Views menu): "
               f"{'; '.join(read_view(uri, exp_id, k)[0] for k in keys)}")
    return keys[0]


@app.command("config")
@clean_errors
def config_(config: str = ConfigOpt, set_: list[str] | None = SetOpt, env: str | None = EnvOpt,
            arm: str | None = typer.Option(None, "--arm", help="apply this arm's overrides" + arm_choices()),
            docs: bool = typer.Option(False, "--docs", help="print every field: its value in effect, where that "
                                                            "value comes from, its meaning (with --env: that env's "
                                                            "options, not the other envs')")) -> None:
    """Validate the config and print it resolved as a stage would use it (with --env and --arm: that env's and arm's
    overrides applied), or with --docs every field with its value, its source and its meaning (with --env: the
    run's own sections and that env's options, a plugin env's — train.plugins — too)."""
    import yaml

    from supo.config import parse_override, provenance

    cfg = load(config, set_, env=env, arm=arm)
    if not docs:
        typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return
    path = config if Path(config).exists() or config != "params.yaml" else None
    sources = provenance(path, dict(parse_override(o) for o in set_ or []), env=env, arm=arm)
    for line in docs_in_effect(cfg, sources, env=env):
        typer.echo(line)
