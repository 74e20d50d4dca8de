"""The funcall env's sample shared by tests/test_env_funcall.py and tests/test_env_funcall_expert.py (each wraps
:func:`funcall_tasks` in a module-scoped fixture)."""

from __future__ import annotations

from supo.synth.families import FAMILIES
from supo.synth.tasks import make_tasks
from supo.types import Task

ALL = sorted(FAMILIES)


def funcall_tasks() -> list[Task]:
    """300 tasks: 150 train-like (4..10 calls) and 150 test-like (8..14 calls), all four families."""
    return make_tasks("train", 150, 4, 10, ALL, seed=11) + make_tasks("test", 150, 8, 14, ALL, seed=11)


def task_of(tasks: list[Task], family: str, min_calls: int = 0) -> Task:
    """The first of ``tasks`` of ``family`` that needs at least ``min_calls`` calls."""
    return next(t for t in tasks if t.env_config["family"] == family and t.difficulty >= min_calls)
