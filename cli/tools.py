"""`supo-cli ui` (the MLflow UI, with saved comparison views) and `supo-cli config` (the resolved config, or every
field with its value, source and meaning)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.app import ConfigOpt, EnvOpt, SetOpt, UriOpt, app, clean_errors, fail
from cli.support import arm_choices, docs_in_effect, env_choices, load
from cli.support import tracking_uri as checked_tracking_uri


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
            fail(f"--experiment {experiment}: no such experiment in {uri} (there: {', '.join(names) or 'none'})")
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
