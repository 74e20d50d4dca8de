"""CodeGym's rows (``supo.envs.codegym``): reading a JSONL or parquet file of rows, checking each (its prompt, its
``ability`` naming the environment class, its Python source, its limits) and naming the file, row and field of a bad
one; the seeded split by environment (``code_id``), so no environment's code is in both splits.
"""

from __future__ import annotations

import ast
import json
import random
import re
from pathlib import Path
from typing import Any

from supo.errors import DataError
from supo.jsonl import iter_jsonl
from supo.types import Task

ENV_NAME = "codegym"
ABILITY_PREFIX = "codegym_v1@"
DEFAULT_MAX_CALLS = 256
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# ----------------------------------------------------------------------------------------------------------------------
# reading rows


def _plain(value: Any) -> Any:
    """numpy arrays / pyarrow scalars from parquet → plain lists and dicts."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_records(path: Path, what: str) -> list[dict[str, Any]]:
    """Rows of a JSONL or parquet file (by extension) as plain dicts; DataError for an unreadable file or line."""
    if not str(path):
        raise DataError(f"{what}: no file configured")
    if not path.exists():
        raise DataError(f"{what} file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        import pandas as pd

        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises many types for a corrupt file
            raise DataError(f"{what} file {path} is not a readable parquet file: {e.__class__.__name__}: {e}") from None
        return [_plain(r) for r in df.to_dict("records")]
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        raise DataError(f"{what} file {path}: expected a .jsonl or .parquet file")
    return [obj for _, obj in iter_jsonl(path)]


def _check_messages(prompt: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(prompt, list) or not prompt:
        raise DataError(f"{where}, field prompt: expected a non-empty list of {{role, content}} messages")
    out = []
    for j, m in enumerate(prompt):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}, field prompt[{j}]: expected a message with string role and content")
        if m["role"] not in ("system", "user", "assistant"):
            raise DataError(f"{where}, field prompt[{j}].role: unexpected role {m['role']!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def parse_ability(ability: Any, code_id: Any, where: str) -> tuple[str, str, str]:
    """``codegym_v1@<code_id>__<EnvName@{json}>`` → (code_id, env_name, env_str)."""
    if not isinstance(ability, str) or not ability.startswith(ABILITY_PREFIX):
        raise DataError(f"{where}, field ability: expected 'codegym_v1@<code_id>__<EnvName@{{json}}>', "
                        f"got {str(ability)[:80]!r}")
    rest = ability[len(ABILITY_PREFIX):]
    if isinstance(code_id, str) and code_id and rest.startswith(code_id + "__"):
        cid, env_str = code_id, rest[len(code_id) + 2:]
    elif "__" in rest:
        cid, env_str = rest.split("__", 1)
        if code_id not in (None, "") and str(code_id) != cid:
            raise DataError(f"{where}, field code_id: {code_id!r} does not match the ability's {cid!r}")
    else:
        raise DataError(f"{where}, field ability: no '__' between the code id and the unit test")
    if not cid:
        raise DataError(f"{where}, field ability: empty code id")
    env_name, sep, params = env_str.partition("@")
    if not sep or not _IDENT_RE.fullmatch(env_name):
        raise DataError(f"{where}, field ability: the unit test must read 'EnvName@{{json}}', got {env_str[:80]!r}")
    try:
        json.loads(params)
    except json.JSONDecodeError:
        try:
            ast.literal_eval(params)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise DataError(f"{where}, field ability: the unit-test parameters after '@' are neither JSON nor a "
                            f"Python literal: {params[:80]!r}") from None
    return cid, env_name, env_str


def _check_source(code: Any, env_name: str, where: str) -> str:
    """The env source must parse and define ``class EnvName`` at top level (parsed only, never executed here)."""
    if not isinstance(code, str) or not code.strip():
        raise DataError(f"{where}, field extra_info.gym_env: expected the environment's Python source")
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise DataError(f"{where}, field extra_info.gym_env: not valid Python ({e.__class__.__name__}: "
                        f"{str(e)[:120]})") from None
    if not any(isinstance(n, ast.ClassDef) and n.name == env_name for n in tree.body):
        raise DataError(f"{where}, field extra_info.gym_env: defines no top-level class {env_name!r} "
                        f"(named by the ability)")
    return code


def _int_field(value: Any, default: int | None, where: str, name: str) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float)
                                                                          and not value.is_integer()):
        raise DataError(f"{where}, field {name}: expected an integer, got {value!r}")
    return int(value)


def load_rows(path: str | Path, *, sandbox_seconds: float = 10.0, sandbox_memory_mb: int = 512,
              network_namespace: bool = True) -> list[Task]:
    """All rows of a CodeGym file as tasks (split ``""`` until :func:`split_tasks`); DataError for malformed rows."""
    path = Path(path)
    rows = read_records(path, "CodeGym rows")
    tasks: list[Task] = []
    checked: dict[tuple[str, int], str] = {}  # many rows share one environment's source: parse it once
    for i, row in enumerate(rows):
        where = f"{path}, row {i}"
        cid, env_name, env_str = parse_ability(row.get("ability"), row.get("code_id"), where)
        prompt = _check_messages(row.get("prompt"), where)
        extra = row.get("extra_info")
        if not isinstance(extra, dict):
            raise DataError(f"{where}, field extra_info: expected an object holding gym_env (the environment source)")
        code = extra.get("gym_env")
        key = (env_name, hash(code)) if isinstance(code, str) else None
        if key is None or checked.get(key) != code:
            code = _check_source(code, env_name, where)
            checked[key] = code
        rounds = _int_field(extra.get("solve_fc_round"), 0, where, "extra_info.solve_fc_round")
        max_calls = _int_field(row.get("plugin_call_max_round"), DEFAULT_MAX_CALLS, where, "plugin_call_max_round")
        if max_calls < 1:
            raise DataError(f"{where}, field plugin_call_max_round: must be ≥ 1, got {max_calls}")
        answer = row.get("answer")
        tasks.append(Task(
            id=f"{cid}#{i}",
            env=ENV_NAME,
            env_config={"code_id": cid, "env_name": env_name, "env_str": env_str, "code": code,
                        "max_calls": max_calls, "sandbox_seconds": float(sandbox_seconds),
                        "sandbox_memory_mb": int(sandbox_memory_mb), "network_namespace": bool(network_namespace)},
            split="",
            prompt=prompt,
            reference=answer if isinstance(answer, str) else "",
            difficulty=rounds or 0,
        ))
    if not tasks:
        raise DataError(f"CodeGym rows file {path} holds no rows")
    return tasks


def split_tasks(tasks: list[Task], test_fraction: float, seed: int) -> dict[str, list[Task]]:
    """Seeded split by environment (``code_id``): about ``test_fraction`` of the environments go to ``test``."""
    ids = sorted({t.env_config["code_id"] for t in tasks})
    random.Random(f"codegym-split-{seed}").shuffle(ids)
    n_test = round(test_fraction * len(ids))
    if test_fraction > 0 and len(ids) >= 2:
        n_test = min(max(n_test, 1), len(ids) - 1)
    test_ids = set(ids[:n_test])
    out: dict[str, list[Task]] = {"train": [], "test": []}
    for t in tasks:
        split = "test" if t.env_config["code_id"] in test_ids else "train"
        out[split].append(Task(t.id, t.env, t.env_config, split, t.prompt, t.reference, t.difficulty))
    return out
