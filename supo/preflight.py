"""Preflight: every input a command reads, checked before any engine, Ray actor or MLflow run starts.

Each check is a pure function of its inputs (files, a URI, a number) that returns quietly or raises
:class:`PreflightError` with one line naming the file, field or flag and what is wrong with it. The CLI turns that into
``error: ...`` and exit code 2, before any start-up cost. The checks read headers and metadata, not whole files: a
safetensors file's JSON header and its size against the tensors' declared offsets, a ``torch.save`` archive's zip
directory and its pickled structure (tensors memory-mapped, not read), a JSON file's content.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

SEED_MAX = 2**31 - 1
"""Largest seed accepted: seeds feed NumPy, torch, vLLM and ``step_seed`` (mod 2³¹)."""

SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}
"""Bytes per element of every safetensors dtype (the format's own table)."""

SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library refuses larger headers
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
RESUME_STATE_FIELDS = {"step": int, "history": list}  # what supo.checkpoint.load_checkpoint and resume_info read
TRAINER_STATE_KEYS = ("trainer", "rng")
RNG_KEYS = ("python", "numpy", "torch")


class PreflightError(ValueError):
    """An input that would fail later; the message names the file, field or flag."""


def check_seed(value: Any, name: str = "seed") -> None:
    """A seed is an integer in [0, 2³¹ − 1]; ``name`` is the flag or field it came from (``--seed``, ``seed``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PreflightError(f"{name}: must be an integer, got {value!r}")
    if not 0 <= value <= SEED_MAX:
        raise PreflightError(f"{name}: must be in 0..{SEED_MAX}, got {value}")


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a missing file, invalid JSON or a non-object names ``what`` and the path."""
    p = Path(path)
    if not p.is_file():
        raise PreflightError(f"{what} {p} does not exist")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        detail = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise PreflightError(f"{what} {p} is not valid JSON ({detail}; truncated?)") from None
    if not isinstance(obj, dict):
        raise PreflightError(f"{what} {p}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_run_info(checkpoint: str | Path):
    """A checkpoint's :class:`~supo.results.RunInfo` (``supo_run.json``), None when it has none; a malformed one is
    named."""
    from supo.layout import RUN_FILE
    from supo.results import RunInfo

    p = Path(checkpoint) / RUN_FILE
    if not p.exists():
        return None
    data = read_json_object(p, "run info")
    try:
        return RunInfo.from_json(data, f"run info {p}")
    except ValueError as e:
        raise PreflightError(str(e)) from None


def check_safetensors(path: str | Path) -> int:
    """A safetensors file whose header is complete JSON, whose tensors have known dtypes and sizes matching their
    shapes, and whose size is exactly header + the tensors' declared data (a truncated file fails). Returns the number
    of tensors."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise PreflightError(f"weights {p}: {size} bytes, too short for a safetensors header (truncated?)")
        (n,) = struct.unpack("<Q", head)
        if n > SAFETENSORS_MAX_HEADER or 8 + n > size:
            raise PreflightError(f"weights {p}: the header claims {n} bytes but the file holds {size} (truncated "
                                 "or not a safetensors file)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PreflightError(f"weights {p}: the safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise PreflightError(f"weights {p}: the safetensors header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise PreflightError(f"weights {p}: __metadata__ must map strings to strings")
    end = 0
    for name, t in header.items():
        where = f"weights {p}, tensor {name!r}"
        if not isinstance(t, dict) or not {"dtype", "shape", "data_offsets"} <= set(t):
            raise PreflightError(f"{where}: needs dtype, shape and data_offsets")
        dtype, shape, offsets = t["dtype"], t["shape"], t["data_offsets"]
        if dtype not in SAFETENSORS_DTYPE_BYTES:
            raise PreflightError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise PreflightError(f"{where}: shape must be a list of sizes, got {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise PreflightError(f"{where}: data_offsets must be [begin, end], got {offsets!r}")
        expected = math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != expected:
            raise PreflightError(f"{where}: {offsets[1] - offsets[0]} bytes declared for shape {shape} {dtype} "
                                 f"({expected} needed)")
        end = max(end, offsets[1])
    if size != 8 + n + end:
        what = "truncated" if size < 8 + n + end else "has trailing bytes"
        raise PreflightError(f"weights {p}: {size} bytes, but its header declares {8 + n + end} ({what})")
    return len(header)


def check_weights(folder: str | Path) -> list[Path]:
    """The model weights of an HF folder: ``model.safetensors``, or every shard a ``model.safetensors.index.json``
    lists, each checked by :func:`check_safetensors`. Returns the files."""
    d = Path(folder)
    index = d / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json_object(index, "weights index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise PreflightError(f"weights index {index}: weight_map must be a non-empty object")
        files = [d / name for name in sorted(set(map(str, weight_map.values())))]
    else:
        files = sorted(d.glob("*.safetensors"))
        if not files:
            raise PreflightError(f"{d} holds no weights (no *.safetensors file)")
    for f in files:
        if not f.is_file():
            raise PreflightError(f"weights {f} (listed in {index.name}) does not exist")
        check_safetensors(f)
    return files


def check_tokenizer_files(folder: str | Path) -> None:
    """A tokenizer is present (``tokenizer.json``, ``tokenizer.model`` or ``vocab.json``) and its JSON files parse."""
    d = Path(folder)
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        raise PreflightError(f"{d} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json"):
        if (d / name).is_file():
            read_json_object(d / name, "tokenizer file")


def check_model_dir(path: str | Path, flag: str) -> None:
    """An HF model folder as the engine and the trainer load it: ``config.json`` (a JSON object with
    ``model_type``), the tokenizer files and readable weights. ``flag`` names where the path came from."""
    d = Path(path)
    if not d.exists():
        raise PreflightError(f"{flag} {d} does not exist")
    if not d.is_dir():
        raise PreflightError(f"{flag} {d} is not a folder")
    try:
        cfg = read_json_object(d / "config.json", "model config")
        if not isinstance(cfg.get("model_type"), str):
            raise PreflightError(f"model config {d / 'config.json'} lacks a string model_type")
        check_tokenizer_files(d)
        check_weights(d)
    except PreflightError as e:
        raise PreflightError(f"{flag} {d}: {e}") from None


def check_trainer_state(path: str | Path) -> None:
    """``trainer_state.pt``: a complete ``torch.save`` archive holding ``trainer`` and ``rng`` (python, numpy,
    torch); tensors are memory-mapped, not read."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise PreflightError(f"trainer state {p} does not exist")
    try:
        with zipfile.ZipFile(p) as z:
            z.infolist()
    except zipfile.BadZipFile:
        raise PreflightError(f"trainer state {p} is not a complete torch.save archive (truncated?)") from None
    try:
        blob = torch.load(p, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # a damaged archive raises many types from the unpickler
        raise PreflightError(f"trainer state {p} does not load: {e.__class__.__name__}: {e}") from None
    if not isinstance(blob, dict) or any(k not in blob for k in TRAINER_STATE_KEYS):
        raise PreflightError(f"trainer state {p}: expected a dict with keys {list(TRAINER_STATE_KEYS)}")
    rng = blob["rng"]
    if not isinstance(rng, dict) or any(k not in rng for k in RNG_KEYS):
        raise PreflightError(f"trainer state {p}: rng must hold {list(RNG_KEYS)}")


def check_state_json(path: str | Path) -> dict[str, Any]:
    """``state.json``: a JSON object with an integer ``step`` ≥ 0, a ``history`` list of objects and an
    ``mlflow_run_id`` that is a string or null. Returns it."""
    from supo.checkpoint import history_problem

    state = read_json_object(path, "checkpoint state")
    for key, typ in RESUME_STATE_FIELDS.items():
        if key not in state:
            raise PreflightError(f"checkpoint state {path}: missing field {key!r}")
        if not isinstance(state[key], typ) or isinstance(state[key], bool):
            raise PreflightError(f"checkpoint state {path}: {key} must be {typ.__name__}, got {state[key]!r}"[:300])
    if state["step"] < 0:
        raise PreflightError(f"checkpoint state {path}: step must be ≥ 0, got {state['step']}")
    if not all(isinstance(h, dict) for h in state["history"]):
        raise PreflightError(f"checkpoint state {path}: history must be a list of objects")
    problem = history_problem(state["step"], state["history"])
    if problem:
        raise PreflightError(f"checkpoint state {path}: {problem}")
    run_id = state.get("mlflow_run_id")
    if run_id is not None and not isinstance(run_id, str):
        raise PreflightError(f"checkpoint state {path}: mlflow_run_id must be a string or null, got {run_id!r}")
    return state


def check_resume(steps_dir: str | Path) -> Path:
    """What ``--resume`` continues from: ``<steps_dir>/latest`` names a step folder whose model, ``state.json`` and
    ``trainer_state.pt`` all load (the names are :mod:`supo.checkpoint`'s). Returns that folder."""
    from supo.checkpoint import LATEST, STATE, TRAINER_STATE

    steps = Path(steps_dir)
    pointer = steps / LATEST
    if not pointer.is_file():
        raise PreflightError(f"--resume: no checkpoint under {steps} (no {LATEST!r} pointer there)")
    name = pointer.read_text(errors="replace").strip()
    folder = steps / name
    if not name or "/" in name or not folder.is_dir():
        raise PreflightError(f"--resume: {pointer} names {name!r}, which is not a checkpoint folder in {steps}")
    try:
        check_state_json(folder / STATE)
        check_trainer_state(folder / TRAINER_STATE)
        check_model_dir(folder, "checkpoint")
    except PreflightError as e:
        raise PreflightError(f"--resume: {e}") from None
    return folder


def _known_schemes() -> list[str]:
    """The URI schemes MLflow's tracking-store registry serves ('' is a local path: the file store)."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return sorted(_tracking_store_registry._registry)
    except (ImportError, AttributeError):  # a moved private API: the schemes of MLflow 3.17
        return ["", "databricks", "databricks-uc", "file", "http", "https", "mssql", "mysql", "postgresql", "sqlite",
                "uc"]


def check_tracking_uri(uri: str, source: str = "tracking.uri", timeout: float = 5.0) -> None:
    """The tracking URI can serve runs: its scheme is one MLflow knows; a ``sqlite:///`` database's folder exists
    (and is writable) and an existing file is an SQLite database; an ``http(s)`` server answers within ``timeout``
    seconds; a local path (the file store, refused by MLflow 3.17) is an error unless MLFLOW_ALLOW_FILE_STORE is set.
    ``source`` names where the URI came from (``--tracking-uri``, ``MLFLOW_TRACKING_URI``, ``tracking.uri``)."""
    from mlflow.utils.uri import get_uri_scheme

    where = f"{source}={uri}"
    scheme = get_uri_scheme(uri)
    known = _known_schemes()
    if scheme not in known:
        shown = ", ".join(s for s in known if s)
        raise PreflightError(f"{where}: unknown scheme {scheme!r}; use one of {shown} (e.g. sqlite:///mlflow.db)")
    if scheme in ("", "file") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise PreflightError(f"{where}: a file store, which MLflow 3.17 refuses; use sqlite:///mlflow.db (or set "
                             "MLFLOW_ALLOW_FILE_STORE=true)")
    if scheme == "sqlite":
        _check_sqlite(uri, where)
    elif scheme in ("http", "https"):
        _check_server(uri, where, timeout)


def _check_sqlite(uri: str, where: str) -> None:
    from supo.tracking_params import sqlite_db_path

    db = sqlite_db_path(uri)
    if db is None:  # in-memory
        return
    if not db.parent.is_dir():
        raise PreflightError(f"{where}: the database's folder {db.parent} does not exist (create it, or pick "
                             "another path)")
    if db.is_dir():
        raise PreflightError(f"{where}: {db} is a folder, not a database file (name a file in it, e.g. "
                             f"sqlite:///{db / 'mlflow.db'})")
    if db.exists():
        with open(db, "rb") as f:
            magic = f.read(16)
        if magic and magic != b"SQLite format 3\x00":
            raise PreflightError(f"{where}: {db} is not an SQLite database")
        if not os.access(db, os.W_OK):
            raise PreflightError(f"{where}: {db} is not writable")
    elif not os.access(db.parent, os.W_OK):
        raise PreflightError(f"{where}: the folder {db.parent} is not writable")


MLFLOW_PROBE = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=supo-preflight-probe"
"""The API route the tracking-server check asks: an MLflow server answers it with JSON — 200 (the experiment) or 404
with ``error_code`` RESOURCE_DOES_NOT_EXIST — whatever its version; any other web server does not."""


def _check_server(uri: str, where: str, timeout: float) -> None:
    url = uri.rstrip("/") + MLFLOW_PROBE
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                status, body = resp.status, resp.read(65536)
        except urllib.error.HTTPError as e:
            status = e.code
            try:
                body = e.read(65536)
            except OSError:
                body = b""
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PreflightError(f"{where}: no tracking server answers within {timeout:g} s ({reason})") from None
    if status in (401, 403):
        return  # a server that wants credentials (MLFLOW_TRACKING_USERNAME / _TOKEN): MLflow names the problem
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        payload = None
    if isinstance(payload, dict):
        if status == 200 and "experiment" in payload:
            return
        if status == 404 and payload.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
            return
        if "error_code" in payload:  # MLflow answering with an error of its own (a broken store, …)
            raise PreflightError(f"{where}: the tracking server answers GET {MLFLOW_PROBE.split('?')[0]} with "
                                 f"{status} {payload.get('error_code')}: {str(payload.get('message', ''))[:160]}")
    shown = " ".join(body.decode("utf-8", "replace").split())[:60]
    raise PreflightError(f"{where}: not an MLflow tracking server (GET {MLFLOW_PROBE.split('?')[0]} answered {status}"
                         + (f" {shown!r}" if shown else "") + ", not MLflow's JSON); check the host, port and path")


def check_run_exists(uri: str, run_id: str, what: str) -> None:
    """Run ``run_id`` is in the store ``uri`` (``what`` says where the id came from, e.g. a checkpoint's state)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from supo.tracking_params import sqlite_db_path

    db = sqlite_db_path(uri)
    if db is not None and not db.exists():  # no store there yet: do not create one to look
        raise PreflightError(f"{what}: MLflow run {run_id} is not in {uri} (no database there)")
    try:
        MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException:
        raise PreflightError(f"{what}: MLflow run {run_id} is not in {uri}") from None


def check_num_tasks(requested: int, available: int, path: str | Path, flag: str = "--num-tasks") -> None:
    """``requested`` tasks fit in a split of ``available`` rows (``path``)."""
    if requested > available:
        raise PreflightError(f"{flag} {requested}: the split {path} holds only {available} tasks")


def check_writable_dir(path: str | Path, what: str) -> None:
    """A folder a command will write into can be created and written: the nearest part of ``path`` that exists is a
    folder (not a regular file), and a probe file created in it and removed again succeeds — actually tried, not read
    off the permission bits (root ignores them; a read-only mount or an immutable folder refuses even root). ``what``
    names the flag or setting the path came from. Nothing is created."""
    p = Path(path)
    base = p
    while not base.exists():
        if base.is_symlink():
            raise PreflightError(f"{what} {p}: {base} is a dangling symbolic link")
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        raise PreflightError(f"{what} {p} is not a folder" + ("" if base == p else f": {base} is a file"))
    try:
        fd, probe = tempfile.mkstemp(prefix=".supo-write-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = "" if base == p else " (where it would be created)"
        raise PreflightError(f"{what} {p}: cannot write in {base}{where}: {e.strerror or e}") from None


def check_metrics_file(path: str | Path, what: str = "metrics file") -> None:
    """A JSON metrics file a command will merge its results into (``supo.data.update_json``): its folder can be
    created and written, and an existing file is a JSON object — a corrupt one is moved aside to
    ``<name>.corrupt-<timestamp>`` and named (:func:`supo.data.read_json_metrics`), before any work starts."""
    from supo.data import json_file_lock, read_json_metrics
    from supo.errors import DataError

    p = Path(path)
    check_writable_dir(p.parent, f"{what} {p}: its folder")
    if not p.exists() and not p.is_symlink():
        return
    try:
        with json_file_lock(p):
            read_json_metrics(p, what)
    except DataError as e:
        raise PreflightError(str(e)) from None
