"""BFCL v4 multi-turn (``supo.envs.bfcl``): the ``bfcl-eval`` package's question and answer files and its executable
backends, loaded lazily and cached per process; which backend classes import, and which entries are served.
"""

from __future__ import annotations

import importlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from supo.errors import DataError
from supo.types import Task

PACKAGE_VERSION = "2026.3.23"
CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
MAXIMUM_STEP_LIMIT = 20  # bfcl_eval.constants.default_prompts.MAXIMUM_STEP_LIMIT
MAX_ACTION_CHARS = 65536  # BFCL's ground-truth calls reach ~7K characters (long_context)
MAX_CALLS_PER_MESSAGE = 64
END_OF_TURN = "I have completed this request."
BLOCKED = ("kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run")  # as bfcl's executor refuses

# ----------------------------------------------------------------------------------------------------------------------
# the package's data and backends


def _package():
    try:
        import bfcl_eval
    except ImportError:
        raise ImportError(
            f"env bfcl needs the bfcl-eval package: pip install --no-deps bfcl-eval=={PACKAGE_VERSION} "
            "(scripts/setup.sh installs it)"
        ) from None
    return bfcl_eval


def data_dir() -> Path:
    return Path(_package().__file__).parent / "data"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise DataError(f"bfcl-eval data file {path} does not exist (bfcl-eval {PACKAGE_VERSION} expected)")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
    return out


@lru_cache(maxsize=None)
def load_category(category: str) -> dict[str, dict[str, Any]]:
    """``{entry id: entry}`` with ``ground_truth`` attached, in file order."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL multi-turn category {category!r}; choose from {', '.join(CATEGORIES)}")
    d = data_dir()
    questions = _read_jsonl(d / f"BFCL_v4_{category}.json")
    answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(d / "possible_answer" / f"BFCL_v4_{category}.json")}
    out = {}
    for e in questions:
        if e["id"] not in answers:
            raise DataError(f"{d / 'possible_answer' / f'BFCL_v4_{category}.json'}: no ground truth for {e['id']}")
        gt = answers[e["id"]]
        if len(gt) != len(e["question"]):
            raise DataError(f"{category} entry {e['id']}: {len(e['question'])} turns but {len(gt)} ground-truth turns")
        out[e["id"]] = {**e, "ground_truth": gt}
    return out


@lru_cache(maxsize=None)
def _backend_modules() -> dict[str, str]:
    _package()
    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING

    return dict(CLASS_FILE_PATH_MAPPING)


@lru_cache(maxsize=None)
def stateless() -> frozenset[str]:
    from bfcl_eval.constants.executable_backend_config import STATELESS_CLASSES

    return frozenset(STATELESS_CLASSES)


@lru_cache(maxsize=None)
def backend_class(name: str) -> type:
    """The backend class, imported from the package; ImportError names the missing dependency."""
    module = _backend_modules().get(name)
    if module is None:
        raise ImportError(f"no BFCL backend named {name!r}")
    return getattr(importlib.import_module(module), name)


@lru_cache(maxsize=None)
def import_status(name: str) -> str | None:
    """None when backend class ``name`` imports here, else why not (e.g. ``No module named 'mpmath'``)."""
    try:
        backend_class(name)
        return None
    except Exception as e:  # ImportError, or whatever a backend's import does
        return f"{e.__class__.__name__}: {e}"


def multi_turn_classes(categories: tuple[str, ...] = CATEGORIES) -> list[str]:
    """The backend classes the multi-turn entries involve (the package's web-search and memory backends are not)."""
    names: list[str] = []
    for c in categories:
        for e in load_category(c).values():
            names.extend(n for n in e["involved_classes"] if n not in names)
    return names


def class_status(names: list[str] | None = None) -> dict[str, str | None]:
    """Backend class → None when it imports here, else why not; only the multi-turn classes unless ``names``."""
    return {n: import_status(n) for n in (names if names is not None else multi_turn_classes())}


@lru_cache(maxsize=None)
def func_docs(class_name: str) -> tuple[dict[str, Any], ...]:
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    return tuple(_read_jsonl(data_dir() / "multi_turn_func_doc" / MULTI_TURN_FUNC_DOC_FILE_MAPPING[class_name]))


def supported_entries(category: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(entries whose backends all import, [(skipped entry id, why)])."""
    ok, skipped = [], []
    for e in load_category(category).values():
        bad = [f"{c} ({import_status(c)})" for c in e["involved_classes"] if import_status(c)]
        if bad:
            skipped.append((e["id"], "backend does not import: " + "; ".join(bad)))
        else:
            ok.append(e)
    return ok, skipped


def support_report(categories: tuple[str, ...] = CATEGORIES) -> dict[str, Any]:
    """Per category: entries served and skipped (with reasons); per backend class: whether it imports."""
    out: dict[str, Any] = {"classes": class_status(multi_turn_classes(categories)), "categories": {}}
    for c in categories:
        ok, skipped = supported_entries(c)
        reasons: dict[str, int] = {}
        for _, why in skipped:
            reasons[why] = reasons.get(why, 0) + 1
        out["categories"][c] = {"entries": len(ok) + len(skipped), "served": len(ok), "skipped": len(skipped),
                                "skip_reasons": reasons}
    return out


def entry_of(task: Task) -> dict[str, Any]:
    c = task.env_config
    try:
        return load_category(c["category"])[c["id"]]
    except KeyError as e:
        raise ValueError(f"task {task.id}: no BFCL entry for env_config {c} ({e})") from None
