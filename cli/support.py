"""What the `supo-cli` commands share: loading the config, the choices listed in ``--help``, the preflight of the
tracking URI, progress bars. Imports stay light (the heavy ones happen inside functions), so ``--help`` answers fast.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from typer.core import TyperOption

T0 = time.time()  # the command's start, for the wall time each stage records (bench/stage_times.py reads them)


def record_wall(path: str | Path) -> None:
    """Add ``wall_seconds`` (this command's wall time so far) to the JSON metrics file the stage wrote."""
    from supo.data import record_wall_seconds

    record_wall_seconds(path, T0)


def load(config: str, overrides: list[str] | None, extra: dict | None = None, env: str | None = None,
         arm: str | None = None, check_files: bool = False):
    """The run config: the params file (code defaults when the default ``params.yaml`` is absent), then ``extra``
    (from flags), then ``-S`` overrides; validated (``check_files``: the selected environment's local files exist)."""
    from supo.config import load_config, parse_override

    path = config if Path(config).exists() or config != "params.yaml" else None
    items = dict(extra or {})
    items.update(dict(parse_override(o) for o in overrides or []))
    return load_config(path, items, env=env, arm=arm, check_files=check_files)


def defined_arms(config: str) -> dict:
    """The ``arms`` mapping of the params file (empty without a file)."""
    import yaml

    p = Path(config)
    if not p.exists():
        return {}
    data = yaml.safe_load(p.read_text()) or {}
    return data.get("arms") or {} if isinstance(data, dict) else {}


# --------------------------------------------------------------------------------------------------------------------
# --help


def hide_flag_types() -> None:
    """Show on/off flags without a value type: typer 0.29 prints ``--resume <bool>``, which invites ``--resume
    true`` (an error: a flag takes no value)."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "_supo_flags", False):
        return

    def display(self, ctx):
        return None if self.is_bool_flag else shown(self, ctx)

    display._supo_flags = True
    TyperOption.display_type_rich = display


def _help_wanted() -> bool:
    """True when this process prints help: only then are the choices computed (importing every env costs ~1 s)."""
    return "--help" in sys.argv[1:]


def _config_in_argv() -> str:
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a in ("-c", "--config") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return "params.yaml"


def env_choices() -> str:
    """`` (one of: array, search, …)`` — the environments of ``supo.envs.ENVS`` — when help is printed."""
    if not _help_wanted():
        return ""
    from supo.envs import ENVS

    return f" (one of: {', '.join(ENVS)})"


def arm_choices() -> str:
    """`` (in params.yaml: grpo-w, supo, …)`` — the arms of the params file — when help is printed."""
    if not _help_wanted():
        return ""
    config = _config_in_argv()
    try:
        arms = defined_arms(config)
    except Exception:  # an unreadable params file is reported when a command loads it, not in --help
        return ""
    return f" (in {config}: {', '.join(arms)})" if arms else ""


# --------------------------------------------------------------------------------------------------------------------
# preflight glue

_CHECKED_URIS: set[str] = set()


def _echo_err(line: str) -> None:
    """Print ``line`` to stderr."""
    import typer

    typer.echo(line, err=True)


def tracking_uri(cfg, flag: str | None) -> str:
    """The tracking URI a command logs to (flag, else MLFLOW_TRACKING_URI, else ``tracking.uri``), checked once per
    process by :func:`supo.preflight.check_tracking_uri` (scheme, sqlite folder, server answering). Without MLflow
    installed it is returned unchecked (runs go to JSON files instead; the note saying so is printed once)."""
    from supo.tracking_json import announce_fallback, mlflow_available
    from supo.tracking_params import tracking_uri_source

    uri, source = tracking_uri_source(flag, cfg.tracking.uri)
    if not mlflow_available():
        announce_fallback(_echo_err)
        return uri
    from supo.preflight import check_tracking_uri

    key = f"{os.getcwd()}\n{uri}"  # a relative sqlite path depends on the current folder
    if key not in _CHECKED_URIS:
        check_tracking_uri(uri, source)
        _CHECKED_URIS.add(key)
    return uri


def check_tracked_run(uri: str, experiment: str, run_id: str, what: str) -> None:
    """Run ``run_id`` (``what`` says where the id came from, e.g. a checkpoint's state) is in the store ``uri`` — or,
    without MLflow installed, a run folder of ``experiment`` under ``tracking_runs/``; else a PreflightError."""
    from supo.preflight import PreflightError, check_run_exists
    from supo.tracking_json import mlflow_available, run_folder

    if mlflow_available():
        check_run_exists(uri, run_id, what)
    elif not (run_folder(experiment, run_id) / "run.json").is_file():
        raise PreflightError(f"{what}: run {run_id} is not in {run_folder(experiment, run_id).parent} (MLflow is not "
                             "installed: runs are JSON files there)")


def check_eval_tasks(cfg, num_tasks_flag: int | None, sizes: dict[str, int], echo=print) -> None:
    """Read the eval split (once per command: ``sizes`` remembers it), every row's env_config validated as it is
    read; ``--num-tasks`` beyond its size is an error, an ``eval.num_tasks`` beyond it is lowered to the size with a
    note."""
    from supo.data import read_tasks, split_path
    from supo.preflight import check_num_tasks

    path = split_path(cfg.paths.data, cfg.eval.split)
    key = str(path.resolve())
    if key not in sizes:
        sizes[key] = len(read_tasks(path))
    size = sizes[key]
    if num_tasks_flag is not None:
        check_num_tasks(num_tasks_flag, size, path)
    elif cfg.eval.num_tasks > size:
        echo(f"note: eval.num_tasks {cfg.eval.num_tasks} > the {size} tasks of {path}: evaluating {size}")
        cfg.eval.num_tasks = size


def docs_in_effect(cfg, sources: dict[str, str], env: str | None = None) -> list[str]:
    """One line per config field: name, the value in effect, ``[where it came from; default X]`` (the default only
    when it differs) and the field's meaning (``supo-cli config --docs``); with ``env``, of the run's own sections and
    that env's options (not the other envs')."""
    from supo.config import Config, describe

    values, defaults, lines = cfg.flat(), Config().flat(), []
    for name, default, help_ in describe(env=env):
        value = repr(values[name])
        value = value if len(value) <= 24 else value[:21] + "..."
        note = sources[name] if values[name] == defaults[name] else f"{sources[name]}; default {default}"
        lines.append(f"{name:36s} {value:>24s}  [{note}]  {help_}")
    return lines


def progress(total: int, label: str):
    """A rich progress bar (disabled by ``SUPO_PROGRESS=0``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=os.environ.get("SUPO_PROGRESS", "1") == "0")
