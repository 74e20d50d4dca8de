"""Reading and writing the data files: task splits, demonstrations, rollouts (parquet / JSONL).

Every reader checks what it reads and names the file, row and column of anything wrong — a missing file, a missing
column, a malformed row — instead of failing deep inside training or silently dropping data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from supo.errors import DataError
from supo.jsonl import iter_jsonl
from supo.types import Rollout, Segment, Task

__all__ = ["DEMO_COLUMNS", "TASK_COLUMNS", "DataError", "check_parquet", "iter_jsonl", "read_demos", "read_tasks",
           "split_path", "update_json", "write_demos", "write_rollouts_jsonl", "write_tasks"]

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
            task = Task.from_row(row)
            if not isinstance(task.prompt, list) or not all(
                isinstance(m, dict) and {"role", "content"} <= set(m) for m in task.prompt
            ):
                raise ValueError("prompt must be a list of {role, content} messages")
            if not isinstance(task.env_config, dict):
                raise ValueError("env_config must be a JSON object")
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


def update_json(path: str | Path, entries: dict) -> dict:
    """Merge ``entries`` into the JSON object at ``path`` (created if missing) and write it back; the merged object.
    Objects merge recursively, so stages add one seed's arm (``{"seed0": {"supo": {...}}}``) at a time."""
    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {}
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a JSON object to merge into, got {type(data).__name__}")

    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(data, entries)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2) + "\n")
    return data
