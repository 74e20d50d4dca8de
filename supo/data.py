"""Reading and writing the data files: task splits, demonstrations, rollouts (parquet / JSONL).

Every reader checks what it reads and names the file, row and column of anything wrong — a missing file, a missing
column, a malformed row — instead of failing deep inside training or silently dropping data.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pandas as pd

from supo.errors import DataError
from supo.types import Rollout, Segment, Task

__all__ = ["DEMO_COLUMNS", "TASK_COLUMNS", "check_parquet", "json_file_lock", "read_demos", "read_json_metrics",
           "read_tasks", "split_path", "update_json", "write_atomic", "write_demos", "write_rollouts_jsonl",
           "write_tasks"]

TASK_COLUMNS = ("id", "env", "env_config", "split", "prompt", "reference", "difficulty")
DEMO_COLUMNS = ("task_id", "segment_index", "kind", "prompt_ids", "response_ids", "response_mask")


def _read_parquet(path: Path, columns: Sequence[str], what: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{what} file {path} does not exist; run `supo-cli prepare` first")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises many types for a corrupt file
        raise DataError(f"{what} file {path} is not a readable parquet file: {e.__class__.__name__}: {e}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what} file {path} lacks column(s) {missing}; expected {list(columns)}")
    return df


def check_parquet(path: str | Path, columns: Sequence[str], what: str) -> int:
    """A parquet file whose footer reads and whose schema has ``columns`` — checked from its metadata, without reading
    rows (a preflight before the stage opens anything). Returns its row count."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} file {path} does not exist; run `supo-cli prepare` first")
    try:
        pf = pq.ParquetFile(path)
        meta = pf.metadata
    except Exception as e:  # pyarrow raises many types for a corrupt file
        raise DataError(f"{what} file {path} is not a readable parquet file: {e.__class__.__name__}: {e}") from None
    names = set(pf.schema_arrow.names)  # the column names (the parquet schema's leaves name list items "element")
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{what} file {path} lacks column(s) {missing}; expected {list(columns)}")
    if meta.num_rows == 0:
        raise DataError(f"{what} file {path} holds no rows")
    return meta.num_rows


def split_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.parquet"


def write_tasks(tasks: Sequence[Task], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([t.to_row() for t in tasks], columns=list(TASK_COLUMNS)).to_parquet(path, index=False)


def _env_config_check(env: str):
    """The ``validate_env_config`` of environment ``env`` (a ValueError for an unknown env names the choices)."""
    from supo.envs import get_env_spec

    return get_env_spec(env).validate_env_config


def _is_null(value) -> bool:
    """None, or the NaN pandas reads a null cell of an object column as."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _check_row_cells(row: dict) -> None:
    """Every cell a task is built from is present (a null cell names its column) and the JSON columns hold text."""
    for column in TASK_COLUMNS:
        if _is_null(row.get(column)):
            raise ValueError(f"{column}: missing (null)")
    for column in ("env_config", "prompt"):
        if not isinstance(row[column], (str, bytes)):
            raise ValueError(f"{column}: expected JSON text, got {type(row[column]).__name__} {row[column]!r}"[:200])


def read_tasks(path: str | Path) -> list[Task]:
    """The tasks of a split file. Every row is checked as it is read — its columns, its prompt, and its env_config by
    its environment's ``validate_env_config`` — and the first bad one raises :class:`DataError` naming the file, row,
    task id and field."""
    path = Path(path)
    df = _read_parquet(path, TASK_COLUMNS, "tasks")
    tasks: list[Task] = []
    ids: set[str] = set()
    for i, row in enumerate(df.to_dict("records")):
        try:
            _check_row_cells(row)
            task = Task.from_row(row)
            if not isinstance(task.prompt, list) or not all(
                isinstance(m, dict) and {"role", "content"} <= set(m) for m in task.prompt
            ):
                raise ValueError("prompt must be a list of {role, content} messages")
            if not isinstance(task.env_config, dict):
                got = "null" if task.env_config is None else type(task.env_config).__name__
                raise ValueError(f"env_config: expected a JSON object, got {got}")
            _env_config_check(task.env)(task.env_config)
        except (ValueError, TypeError, KeyError, json.JSONDecodeError) as e:
            raise DataError(f"{path}, row {i} (id {row.get('id')!r}): {e}") from None
        if task.id in ids:
            raise DataError(f"{path}, row {i}: duplicate task id {task.id!r}")
        ids.add(task.id)
        tasks.append(task)
    if not tasks:
        raise DataError(f"tasks file {path} holds no rows")
    return tasks


def write_demos(rollouts: Sequence[Rollout], path: str | Path) -> int:
    """Write every segment (and trigger-action sample) of the expert rollouts; returns the row count."""
    rows = []
    for r in rollouts:
        for s in r.segments:
            rows.append({"task_id": r.task_id, "segment_index": s.index, "kind": s.kind, "prompt_ids": s.prompt_ids,
                         "response_ids": s.response_ids, "response_mask": s.response_mask,
                         "reward": r.reward, "num_summaries": r.num_summaries})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return len(rows)


def read_demos(path: str | Path, vocab_size: int | None = None) -> list[Segment]:
    path = Path(path)
    df = _read_parquet(path, DEMO_COLUMNS, "demonstrations")
    segs = []
    for i, row in enumerate(df.to_dict("records")):
        try:
            p, r, m = (list(map(int, row[c])) for c in ("prompt_ids", "response_ids", "response_mask"))
            if vocab_size is not None and any(not 0 <= t < vocab_size for t in p + r):
                raise ValueError(f"token id outside the vocabulary (size {vocab_size})")
            segs.append(Segment(p, r, m, [0.0] * len(r), index=int(row["segment_index"]), kind=str(row["kind"])))
        except (ValueError, TypeError) as e:
            raise DataError(f"{path}, row {i} (task {row.get('task_id')!r}): {e}") from None
    if not segs:
        raise DataError(f"demonstrations file {path} holds no rows")
    return segs


def write_rollouts_jsonl(rollouts: Sequence[Rollout], path: str | Path, with_tokens: bool = False) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rollouts:
            f.write(json.dumps(r.to_record(with_tokens=with_tokens)) + "\n")


LOCK_TIMEOUT = 120.0
"""Seconds a merge waits for another process's merge into the same file before giving up (a merge takes
milliseconds; a longer wait means a stuck process holds the lock)."""


def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


@contextmanager
def json_file_lock(path: str | Path):
    """Hold the lock of the JSON file ``path`` (a ``filelock`` lock file ``.<name>.lock`` beside it): every
    read–merge–write of the file happens under it, so merges from several processes never interleave."""
    from filelock import FileLock, Timeout

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(_lock_path(p)), timeout=LOCK_TIMEOUT):
            yield p
    except Timeout:
        raise DataError(f"{p}: another process has held its lock {_lock_path(p)} for {LOCK_TIMEOUT:g} s; "
                        "is a stuck supo-cli still running?") from None


def _move_aside(p: Path) -> Path:
    """Rename ``p`` to ``<name>.corrupt-<timestamp>`` beside it (a counter added if that name is taken)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = p.with_name(f"{p.name}.corrupt-{stamp}")
    k = 1
    while aside.exists():
        aside = p.with_name(f"{p.name}.corrupt-{stamp}-{k}")
        k += 1
    os.replace(p, aside)
    return aside


def read_json_metrics(path: str | Path, what: str = "metrics file") -> dict:
    """The JSON object of the metrics file ``path`` ({} when it does not exist). Call it holding
    :func:`json_file_lock`. A file that is not a JSON object (truncated, garbled, another type) is never rewritten: it
    is moved aside to ``<name>.corrupt-<timestamp>`` and :class:`DataError` names both paths; a rerun then starts a
    new file, and the old one's entries can be merged back by hand."""
    p = Path(path)
    if not p.exists():
        return {}
    if p.is_dir():
        raise DataError(f"{what} {p} is a folder, not a JSON file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        problem = None if isinstance(data, dict) else f"expected a JSON object, got {type(data).__name__}"
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"not valid JSON ({e.msg} at line {e.lineno})" if isinstance(e, json.JSONDecodeError) else str(e)
    if problem is None:
        return data
    aside = _move_aside(p)
    raise DataError(f"{what} {p}: {problem}; moved aside to {aside} (nothing merged into it): rerun to start a new "
                    f"{p.name}, and merge the old entries back from {aside.name} by hand if needed")


def write_atomic(p: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``p``, flush it to disk and rename it over ``p``: a reader sees the
    old file or the new one, never half of one, and a kill mid-write leaves the old one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, p.stat().st_mode & 0o777 if p.exists() else 0o644)  # mkstemp makes it 0600
        os.replace(tmp, p)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def update_json(path: str | Path, entries: dict) -> dict:
    """Merge ``entries`` into the JSON object at ``path`` (created if missing) and write it back; the merged object.
    Objects merge recursively, so stages add one seed's arm (``{"seed0": {"supo": {...}}}``) at a time.

    Safe across processes: the read–merge–write holds the file's lock (:func:`json_file_lock`) and the new content
    replaces the old atomically (a temporary file renamed over it). A corrupt file is moved aside and named
    (:func:`read_json_metrics`), never overwritten."""
    with json_file_lock(path) as p:
        data = read_json_metrics(p)

        def merge(into: dict, new: dict) -> None:
            for key, value in new.items():
                if isinstance(value, dict) and isinstance(into.get(key), dict):
                    merge(into[key], value)
                else:
                    into[key] = value

        merge(data, entries)
        write_atomic(p, json.dumps(data, indent=2) + "\n")
    return data


def record_wall_seconds(path: str | Path, since: float) -> dict:
    """Merge ``wall_seconds`` (the wall time from ``since``, a ``time.time()``, to now) into a stage's metrics file
    (``bench/stage_times.py`` reads them); the merged object."""
    return update_json(path, {"wall_seconds": round(time.time() - since, 2)})
