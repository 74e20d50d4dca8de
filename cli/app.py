"""The `supo-cli` app and what its commands share: global options, the option objects, error handling, the MLflow run
of a stage. Heavy imports happen inside commands, so `supo-cli --help` answers at once.

Every input a command reads is checked before any engine, Ray actor or MLflow run starts (:mod:`supo.preflight`): bad
input is one ``error:`` line naming the file or field, exit code 2. What still fails at run time is one line with the
command, the actor or file and the underlying error, plus the path of a log holding the traceback (exit code 1;
``supo-cli --debug`` prints the traceback instead; :mod:`cli.errors`).
"""

from __future__ import annotations

import functools
import os

import typer

from cli.errors import EXIT_INPUT, report_runtime_failure
from cli.support import env_choices, hide_flag_types
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


def fail(msg: str) -> None:
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
        from supo.errors import DataError
        from supo.preflight import PreflightError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except (ConfigError, DataError, PreflightError, FileNotFoundError) as e:
            fail(str(e))
        except Exception as e:
            code = report_runtime_failure(command, e, _STATE["debug"],
                                          lambda text: typer.secho(text, fg=typer.colors.RED, err=True))
            raise typer.Exit(code) from None

    return wrapper


def seed_flag(seed: int | None) -> None:
    from supo.preflight import check_seed

    if seed is not None:
        check_seed(seed, "--seed")


def checked(cfg, seed_flag: int | None = None):
    """The config after the checks every command shares: the seed in range (named by the flag when it came from
    one)."""
    from supo.preflight import check_seed

    check_seed(cfg.seed, "--seed" if seed_flag is not None else "seed")
    return cfg


def tracker(cfg, run_name: str, uri_flag: str | None, tags: dict, link_run: str | None = None,
             resume_run_id: str | None = None, description: str = ""):
    """The MLflow run of a stage, tagged ``env``, ``seed``, ``profile`` and ``tags`` (``stage``, ``arm``, …).
    ``link_run``: the training run an eval belongs to — tagged ``checkpoint_run_id`` and linked from the run's
    description, not nested (a nested run hides under its parent in the UI's run table, so the README's filters
    would list the parents); the training run lists its evals in turn (:func:`supo.tracking_links.link_eval`). An
    eval (``stage`` ``eval`` with ``arm`` and ``s_eval``) is tagged ``own_setting``; one of the warm start without
    ``link_run`` is linked to the env's newest finished ``sft`` run. Without MLflow installed the run is a
    :class:`supo.tracking_json.JsonTracker` (:func:`json_tracker`)."""
    from supo.tracking_json import mlflow_available

    if not mlflow_available():
        return json_tracker(cfg, run_name, tags, link_run, resume_run_id, description)
    from supo.layout import is_warm_start
    from supo.tracking import Tracker, run_link
    from supo.tracking_links import OWN_SETTING_TAG, link_eval, own_setting, sft_run_id

    uri = checked_tracking_uri(cfg, uri_flag)
    is_eval = tags.get("stage") == "eval" and "arm" in tags and str(tags.get("s_eval", "")).isdigit()
    if is_eval:
        tags = {**tags, OWN_SETTING_TAG: str(own_setting(cfg, tags["arm"], int(tags["s_eval"]))).lower()}
        if link_run is None and is_warm_start(tags["arm"]):
            link_run = sft_run_id(uri, cfg.tracking.experiment, cfg.env.name)
    if link_run is not None:
        tags = {**tags, "checkpoint_run_id": link_run}
        link = run_link(uri, link_run)
        description += f"; trained in {link}" if link else f"; trained in run {link_run} (not in this store)"
    run = Tracker(uri, cfg.tracking.experiment, f"{cfg.env.name}-{run_name}", params=cfg.flat(),
                  tags={"profile": cfg.profile, "seed": str(cfg.seed), "env": cfg.env.name, **tags},
                  resume_run_id=resume_run_id, description=description or None)
    if is_eval and link_run is not None:
        link_eval(uri, run.run_id, link_run)
    return run


def json_tracker(cfg, run_name: str, tags: dict, link_run: str | None = None, resume_run_id: str | None = None,
                 description: str = ""):
    """The stage's run as JSON files under ``tracking_runs/`` (MLflow is not installed; the note saying so is printed
    once per process): the tags and params of :func:`tracker`, ``link_run`` as the tag ``checkpoint_run_id``; no
    links between runs are looked up or written."""
    from supo.tracking_json import DEFAULT_ROOT, JsonTracker, announce_fallback

    announce_fallback(lambda line: typer.echo(line, err=True))
    tags = dict(tags)
    if tags.get("stage") == "eval" and "arm" in tags and str(tags.get("s_eval", "")).isdigit():
        from supo.tracking_links import OWN_SETTING_TAG, own_setting  # imports MLflow only where it talks to it

        tags[OWN_SETTING_TAG] = str(own_setting(cfg, tags["arm"], int(tags["s_eval"]))).lower()
    if link_run is not None:
        tags["checkpoint_run_id"] = link_run
        description += f"; trained in run {link_run}"
    return JsonTracker(cfg.tracking.experiment, f"{cfg.env.name}-{run_name}", params=cfg.flat(),
                       tags={"profile": cfg.profile, "seed": str(cfg.seed), "env": cfg.env.name, **tags},
                       resume_run_id=resume_run_id, description=description or None, root=DEFAULT_ROOT)
