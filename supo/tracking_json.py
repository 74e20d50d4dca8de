"""Run tracking without MLflow (the CLI's fallback when it is not installed): :class:`JsonTracker`, with the interface
of :class:`supo.tracking.Tracker`, writes each run under ``<root>/<experiment>/<run id>/``, readable at any time:
``run.json`` (id, name, experiment, status, start/end times in ms since the epoch, description, tags, params; replaced
whole, never half written), ``metrics.jsonl`` (one appended line per value: ``key``, ``value``, ``step``, ``timestamp``)
and ``artifacts/`` (what ``log_dict``, ``log_text``, ``log_artifact`` store)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from supo.tracking_params import flatten_params, is_finite_number

__all__ = ["DEFAULT_ROOT", "JsonTracker", "announce_fallback", "fallback_note", "mlflow_available", "run_folder"]

DEFAULT_ROOT = Path("tracking_runs")  # where runs go by default, relative to the current folder

_ANNOUNCED: list[str] = []  # the note, once this process has printed it


def mlflow_available() -> bool:
    """True when the ``mlflow`` package can be imported."""
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # a finder refusing it, or a half-imported module without a spec
        return False


def fallback_note(root: str | Path | None = DEFAULT_ROOT) -> str:
    """The one line saying that MLflow is missing and where runs go instead (``root`` None: nothing is logged, as
    for ``supo-cli report``)."""
    where = ("nothing is logged to a tracking run, only files are written" if root is None
             else f"runs are logged as JSON files under {root}")
    return f"tracking: mlflow is not installed — {where} (pip install mlflow for the UI)"


def announce_fallback(echo: Callable[[str], Any], root: str | Path | None = DEFAULT_ROOT) -> None:
    """Print :func:`fallback_note` with ``echo``, once per process."""
    if not _ANNOUNCED:
        _ANNOUNCED.append(fallback_note(root))
        echo(_ANNOUNCED[0])


def run_folder(experiment: str, run_id: str, root: str | Path = DEFAULT_ROOT) -> Path:
    """The folder of run ``run_id`` of ``experiment`` (which may not exist)."""
    return Path(root) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("._") or "default") / run_id


def _write_atomic(path: Path, text: str) -> None:
    """:func:`supo.data.write_atomic` (temporary file, fsync, rename), with the folder made first."""
    from supo.data import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


class JsonTracker:
    """One run stored as files, a context manager with the contract of :class:`supo.tracking.Tracker`: ``resume_run_id``
    reopens that run's folder (status RUNNING again, params it has kept); ``with`` ends it FINISHED, or FAILED when an
    exception escapes — a resumed run failing before anything was logged gets back its previous status."""

    def __init__(self, experiment: str, run_name: str, *, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None,
                 description: str | None = None, root: str | Path = DEFAULT_ROOT) -> None:
        """Open the run under ``root`` (``params`` flat or nested; tag and param values are stored as strings)."""
        self._ended = self._logged = False
        self._before: tuple[str, int | None] | None = None  # a resumed run's status and end time
        if resume_run_id:
            self.folder = run_folder(experiment, resume_run_id, root)
            if not (self.folder / "run.json").is_file():
                raise FileNotFoundError(f"resume_run_id={resume_run_id!r}: no run folder {self.folder}")
            self._run = json.loads((self.folder / "run.json").read_text(encoding="utf-8"))
            self._before = (self._run["status"], self._run.get("end_time"))
            self._run.update(status="RUNNING", end_time=None)
        else:
            run_id = uuid.uuid4().hex
            self.folder = run_folder(experiment, run_id, root)
            self.folder.mkdir(parents=True)
            self._run = {"run_id": run_id, "run_name": run_name, "experiment": experiment, "status": "RUNNING",
                         "start_time": int(time.time() * 1000), "end_time": None, "description": None,
                         "tags": {}, "params": {}}
        if description:
            self._run["description"] = description
        self._run["tags"].update({key: str(value) for key, value in (tags or {}).items()})
        self._add_params(params or {})
        self._save()
        self.run_name: str = self._run["run_name"]

    def __enter__(self) -> JsonTracker:
        """Return the tracker itself; the run is already open."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """End the run FAILED when an exception escapes the block, FINISHED otherwise; a resumed run that failed
        before anything was logged gets its previous status back."""
        if exc_type is not None and self._before is not None and not self._logged:
            self._run["status"], self._run["end_time"] = self._before
            self._save()
            self._ended = True
        else:
            self.end("FAILED" if exc_type is not None else "FINISHED")

    @property
    def run_id(self) -> str:
        """The run id (32 hex digits)."""
        return self._run["run_id"]

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        """Append metrics at ``step``; None, NaN, infinite and non-numeric values are skipped silently."""
        timestamp = int(time.time() * 1000)
        lines = "".join(json.dumps({"key": key, "value": float(value), "step": int(step), "timestamp": timestamp})
                        + "\n" for key, value in metrics.items() if is_finite_number(value))
        self._logged = True
        if lines:  # one write of whole lines: a reader sees each line complete or not at all
            with open(self.folder / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(lines)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add params (flat or nested); keys the run already has are kept."""
        self._add_params(params)
        self._save()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run (values stringified)."""
        self._run["tags"].update({key: str(value) for key, value in tags.items()})
        self._save()

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Store ``obj`` as a JSON artifact, or YAML when ``artifact_file`` ends in ``.yaml``/``.yml``."""
        import yaml

        yml = Path(artifact_file).suffix in (".yaml", ".yml")
        self.log_text(yaml.safe_dump(obj, indent=2, default_flow_style=False) if yml else json.dumps(obj, indent=2),
                      artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file``."""
        self._logged = True
        _write_atomic(self.folder / "artifacts" / artifact_file, text)

    def log_artifact(self, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy one local file (or, for a folder, its contents) under ``artifact_path``."""
        path = Path(local_path)
        if not path.exists():
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or folder")
        self._logged = True
        target = self.folder / "artifacts" / (artifact_path or "")
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the run with ``status`` (FINISHED, FAILED or KILLED); later calls do nothing."""
        if self._ended:
            return
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"run end status must be FINISHED, FAILED or KILLED, got {status!r}")
        self._run.update(status=status, end_time=int(time.time() * 1000))
        self._ended = True
        self._save()

    def _add_params(self, params: Mapping[str, Any]) -> None:
        """Add ``params`` as strings, keeping (with a warning when it differs) any value the run already has."""
        existing = self._run["params"]
        for key, value in flatten_params(params).items():
            if key not in existing:
                existing[key] = str(value)
            elif existing[key] != str(value):
                logging.getLogger(__name__).warning("run %s already has param %r=%r; keeping it (new value %r not "
                                                    "logged)", self.run_id, key, existing[key], str(value))

    def _save(self) -> None:
        """Rewrite ``run.json`` (atomically)."""
        _write_atomic(self.folder / "run.json", json.dumps(self._run, indent=2) + "\n")
