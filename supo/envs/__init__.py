"""Environments (docs/design.md §5). ``ENVS`` maps an env name to its spec, a dict of functions:

* ``build_split(cfg, split) -> list[Task]`` — the seeded train or test split for a run config;
* ``make_env(task)`` — a fresh environment (``reset() -> obs``, ``step(action) -> (obs, done, reward, info)``);
* ``make_expert(task, error_rate, seed)`` — the scripted expert (``act``, ``observe``, ``drop``, ``summarize``);
* ``corpus(tasks) -> list[str]`` — the text pieces the tiny tokenizer is trained on.
"""

from __future__ import annotations

from typing import Any

from supo.envs import array, bfcl, browsecomp, codegym, funcall, search

ENVS: dict[str, dict[str, Any]] = {"array": array.SPEC, "search": search.SPEC, "codegym": codegym.SPEC,
                                   "browsecomp": browsecomp.SPEC, "bfcl": bfcl.SPEC, "funcall": funcall.SPEC}


def get_env_spec(name: str) -> dict[str, Any]:
    try:
        return ENVS[name]
    except KeyError:
        raise ValueError(f"unknown environment {name!r}; choose one of {', '.join(ENVS)}") from None
