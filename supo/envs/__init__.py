"""Environments (docs/design.md §5). ``ENVS`` maps an env name to its spec: ``make_tasks``, ``make_env``, ``make_expert``,
``corpus`` (the text pieces its tokenizer is trained on)."""

from __future__ import annotations

from typing import Any

from supo.envs import array

ENVS: dict[str, dict[str, Any]] = {"array": array.SPEC}


def get_env_spec(name: str) -> dict[str, Any]:
    try:
        return ENVS[name]
    except KeyError:
        raise ValueError(f"unknown environment {name!r}; choose one of {', '.join(ENVS)}") from None
