"""MLflow tracking: tracking-URI resolution, a thin run context manager, run links and figures (the UI server is
in :mod:`supo.tracking_ui`).

Everything here talks to MLflow through an explicit ``mlflow.MlflowClient(tracking_uri=...)``
instead of the global ``mlflow.start_run`` state, so several stores (e.g. one per test) can be
used in one process without interfering.  Logging is synchronous.

Known MLflow 3.17 behaviour this module works around:

* ``sqlite:///mlflow.db`` works; the file store (``./mlruns``) is refused by MLflow 3.17.
* The UI's run table shows a nested run under its (collapsed) parent, so a filter that matches
  only children lists their parents; eval runs are therefore linked to their training run by a
  tag and a description link (see :func:`run_link`), not nested.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from supo.tracking_params import (
    DEFAULT_TRACKING_URI,
    flatten_params,
    is_finite_number,
    sqlite_db_path,
    tracking_uri_source,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "NOTE_TAG",
    "PARAMS_PER_BATCH",
    "Tracker",
    "default_artifact_location",
    "find_runs",
    "flatten_params",
    "log_figures",
    "resolve_tracking_uri",
    "run_link",
    "tag_value",
    "tracking_uri_source",
]

log = logging.getLogger(__name__)

PARAMS_PER_BATCH = min(100, MAX_PARAMS_TAGS_PER_BATCH)
"""Params are sent with ``log_batch`` in chunks of this many."""

_PARENT_RUN_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI (markdown)


# --------------------------------------------------------------------------------------------
# Tracking URI
# --------------------------------------------------------------------------------------------


def resolve_tracking_uri(flag: str | None, config_uri: str = DEFAULT_TRACKING_URI) -> str:
    """Pick the tracking URI: the CLI flag, else ``$MLFLOW_TRACKING_URI``, else the config value.

    Empty strings count as unset; an empty config value falls back to ``sqlite:///mlflow.db``.
    Nothing is created: a ``sqlite:///`` URI whose folder is missing is refused by
    :func:`supo.preflight.check_tracking_uri` instead of silently made.
    """
    return tracking_uri_source(flag, config_uri)[0]


# --------------------------------------------------------------------------------------------
# Params helpers
# --------------------------------------------------------------------------------------------


def _param_value(value: Any) -> str:
    """Stringify a param value and truncate it to MLflow's param value limit."""
    return str(value)[:MAX_PARAM_VAL_LENGTH]


def tag_value(value: Any) -> str:
    """Stringify a tag value and truncate it to MLflow's tag value limit."""
    return str(value)[:MAX_TAG_VAL_LENGTH]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Yield consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def default_artifact_location(uri: str, experiment: str) -> str | None:
    """For a sqlite store, keep artifacts next to the database instead of in ``./mlruns``.

    Returns None (MLflow's default) for other stores, e.g. a tracking server that proxies
    artifacts itself.
    """
    db_path = sqlite_db_path(uri)
    if db_path is None:
        return None
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("._") or "default"
    return (db_path.parent.resolve() / "mlartifacts" / safe_name).as_uri()


def _get_or_create_experiment(client: MlflowClient, uri: str, name: str) -> str:
    """Return the id of experiment ``name``, creating it when missing."""
    if not name:
        raise ValueError("MLflow experiment name must be a non-empty string")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=default_artifact_location(uri, name))
        except MlflowException:
            # Another process may have created it in between; anything else re-raises below.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise ValueError(
            f"MLflow experiment {name!r} in {uri} is deleted; restore it "
            f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) or use another name"
        )
    return experiment.experiment_id


# --------------------------------------------------------------------------------------------
# Tracker
# --------------------------------------------------------------------------------------------


class Tracker:
    """One MLflow run, as a context manager.

    Creates the experiment if missing and a new run (nested under ``parent_run_id`` when given),
    or reopens ``resume_run_id`` (status set back to RUNNING; params it already has are not
    logged again). ``with Tracker(...) as t:`` ends the run FINISHED, or FAILED when an exception
    escapes the block — except a resumed run that fails before this tracker logged anything: it
    gets back the status it had (a failed resume never turns a FINISHED run FAILED).
    ``description`` is the run's description in the UI (markdown).
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
        description: str | None = None,
    ) -> None:
        """Open the run; see the class docstring. ``params`` may be flat (dotted keys) or nested."""
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = _get_or_create_experiment(self.client, uri, experiment)
        self._ended = False
        self._logged = False
        self._status_before: str | None = None  # a resumed run's status before this tracker reopened it

        run_tags = {key: tag_value(value) for key, value in (tags or {}).items()}
        if description:
            run_tags[NOTE_TAG] = tag_value(description)
        if parent_run_id:
            self._require_run(parent_run_id, "parent_run_id")
            run_tags[_PARENT_RUN_TAG] = parent_run_id

        if resume_run_id:
            run = self._require_run(resume_run_id, "resume_run_id")
            if run.info.experiment_id != self.experiment_id:
                raise ValueError(
                    f"cannot resume run {resume_run_id}: it belongs to experiment id "
                    f"{run.info.experiment_id}, not to {experiment!r} (id {self.experiment_id})"
                )
            self._run_id = resume_run_id
            self._status_before = run.info.status
            self.client.update_run(resume_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            existing_params = dict(run.data.params)
            if run_tags:
                self.set_tags(run_tags)
        else:
            run = self.client.create_run(self.experiment_id, tags=run_tags, run_name=run_name)
            self._run_id = run.info.run_id
            existing_params = {}
        self.run_name = run.info.run_name
        self._log_params(flatten_params(params or {}), existing_params)

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> Tracker:
        """Return the tracker itself; the run is already open."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End the run FAILED when an exception escapes the block, FINISHED otherwise; a resumed run that failed
        before anything was logged gets its previous status back."""
        if exc_type is not None and self._status_before is not None and not self._logged:
            self.client.update_run(self._run_id, status=self._status_before)  # keeps its end time
            self._ended = True
            return
        self.end("FAILED" if exc_type is not None else "FINISHED")

    # -- properties ---------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The MLflow run id."""
        return self._run_id

    # -- logging ------------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        """Log metrics at ``step``; None, NaN, infinite and non-numeric values are skipped silently."""
        timestamp = int(time.time() * 1000)
        entries = [
            Metric(key=key, value=float(value), timestamp=timestamp, step=int(step))
            for key, value in metrics.items()
            if is_finite_number(value)
        ]
        self._logged = True
        for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self._run_id, metrics=chunk, synchronous=True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log further params (flat or nested); keys the run already has are skipped."""
        existing = dict(self.client.get_run(self._run_id).data.params)
        self._log_params(flatten_params(params), existing)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run (values stringified and truncated to MLflow's tag limit)."""
        entries = [RunTag(key, tag_value(value)) for key, value in tags.items()]
        for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self._run_id, tags=chunk, synchronous=True)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Store ``obj`` as a JSON or YAML artifact (format chosen by ``artifact_file``'s suffix)."""
        self._logged = True
        self.client.log_dict(self._run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file``."""
        self._logged = True
        self.client.log_text(self._run_id, text, artifact_file)

    def log_artifact(self, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload one local file (or, for a folder, its contents) under ``artifact_path``."""
        path = Path(local_path)
        if not path.exists():
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or folder")
        self._logged = True
        if path.is_dir():
            self.client.log_artifacts(self._run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self._run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the run with ``status`` (FINISHED, FAILED or KILLED); later calls do nothing."""
        if self._ended:
            return
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"run end status must be FINISHED, FAILED or KILLED, got {status!r}")
        self.client.set_terminated(self._run_id, status=status)
        self._ended = True

    # -- internals ----------------------------------------------------------------------------

    def _require_run(self, run_id: str, what: str) -> Run:
        """Fetch run ``run_id`` or raise a ValueError naming the argument it came from."""
        try:
            return self.client.get_run(run_id)
        except MlflowException as err:
            raise ValueError(f"{what}={run_id!r}: no such run in {self.uri} ({err.message})") from err

    def _log_params(self, params: Mapping[str, Any], existing: Mapping[str, str]) -> None:
        """Log ``params`` in chunks, skipping keys in ``existing`` (MLflow params are immutable)."""
        entries: list[Param] = []
        for key, value in params.items():
            text = _param_value(value)
            if key in existing:
                if existing[key] != text:
                    log.warning(
                        "run %s already has param %r=%r; keeping it (new value %r not logged)",
                        self._run_id, key, existing[key], text,
                    )
                continue
            entries.append(Param(key, text))
        for chunk in _chunks(entries, PARAMS_PER_BATCH):
            self.client.log_batch(self._run_id, params=chunk, synchronous=True)


def run_link(uri: str, run_id: str) -> str | None:
    """A markdown link to run ``run_id`` in the UI (``[name](#/experiments/<id>/runs/<run id>)``, relative, so it
    works on any host and port), or None when the run is not in store ``uri``."""
    try:
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException:
        return None
    return f"[{run.info.run_name}](#/experiments/{run.info.experiment_id}/runs/{run_id})"


def log_figures(uri: str, run_id: str, figures: Mapping[str, Any], artifact_dir: str = "figures") -> list[str]:
    """Log matplotlib figures to run ``run_id`` as MLflow figures (the UI previews them under Artifacts):
    ``{name: figure}`` becomes ``<artifact_dir>/<name>.png`` (or ``<name>`` when it has a suffix). Returns the
    artifact paths."""
    client = MlflowClient(tracking_uri=uri)
    paths = []
    for name, fig in figures.items():
        file = name if Path(name).suffix else f"{name}.png"
        path = f"{artifact_dir}/{file}" if artifact_dir else file
        client.log_figure(run_id, fig, path)
        paths.append(path)
    return paths


def find_runs(uri: str, experiment: str, filter_string: str = "") -> list[Run]:
    """All runs of ``experiment`` in store ``uri`` matching ``filter_string`` (newest first).

    A missing experiment gives an empty list.
    """
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs: list[Run] = []
    page_token: str | None = None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            filter_string=filter_string,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=page_token,
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs

