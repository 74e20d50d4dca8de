"""The search env's sample shared by tests/test_env_search.py and tests/test_env_search_expert.py (each wraps these in
module-scoped fixtures): the seeded world and 300 tasks (150 train-like with 1–2 hops, 150 test-like with 2–3)."""

from __future__ import annotations

from supo.envs import search as S
from supo.envs.search_world import World, get_world
from supo.types import Task

SEED = 0


def search_world() -> World:
    """The world of seed SEED, 400 entities, 3 namesakes each (built once per process)."""
    return get_world(SEED, 400, 3)


def search_tasks() -> list[Task]:
    train = S.make_tasks("train", 150, 1, 2, seed=SEED)
    test = S.make_tasks("test", 150, 2, 3, seed=SEED)
    return train + test
