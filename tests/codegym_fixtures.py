"""The CodeGym fixture rows (tests/fixtures/codegym/) and call helpers shared by tests/test_env_codegym.py and
tests/test_env_codegym_sandbox.py."""

from __future__ import annotations

import json
from pathlib import Path

from supo.envs.codegym_rows import load_rows
from supo.types import Task

FIX = Path(__file__).parent / "fixtures" / "codegym"
ROWS = FIX / "rows.jsonl"
SECONDS = 1.0  # the per-call wall-time limit used here
MEMORY_MB = 160


def codegym_tasks(seconds: float = SECONDS, mb: int = MEMORY_MB) -> list[Task]:
    """The six fixture tasks: RunningSumEnv ×4, SpinEnv, HoardEnv."""
    return load_rows(ROWS, sandbox_seconds=seconds, sandbox_memory_mb=mb)


def cg_call(name: str, **params) -> str:
    """A call in CodeGym's own syntax (the model may write either)."""
    return f"<|FunctionCallBegin|>[{json.dumps({'name': name, 'parameters': params})}]<|FunctionCallEnd|>"
