"""Rollout workers on a real local Ray cluster, each with a real vLLM engine: sharding, determinism, 1 vs 2 workers
under greedy decoding, and a worker killed mid-run being restarted with its share redone."""

from __future__ import annotations

import logging

import pytest
import ray

from supo.config import load_config
from supo.rollout.agent_loop import LoopSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    from supo.distributed import init_ray

    init_ray(num_cpus=4)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, {"engine.max_model_len": 256, "engine.max_num_seqs": 32})  # greedy: _pool's temperature


def _items(tasks, n=6):
    return [(t, f"{t.id}@0", i) for t in tasks[:3] for i in range(n // 3)]


SETTINGS = LoopSettings(trigger=120, max_summaries=2, max_steps=6, max_turn_tokens=12, max_summary_tokens=12,
                        max_obs_tokens=16, engine_max_len=256)


def _pool(n, model_dir, cfg, temperature=0.0):
    from supo.distributed.rollout_workers import RolloutPool

    return RolloutPool(n, str(model_dir), cfg, temperature=temperature, seed=0, num_cpus_per_worker=1)


def _tokens(rollouts):
    return [[(s.prompt_ids, s.response_ids) for s in r.segments] for r in rollouts]


def test_shards_are_contiguous_and_balanced():
    from supo.distributed.rollout_workers import RolloutPool

    for n in range(0, 12):
        for w in range(1, 5):
            sh = RolloutPool.shards(n, w)
            assert len(sh) == w and [i for r in sh for i in r] == list(range(n))
            assert max(map(len, sh)) - min(map(len, sh)) <= 1


def test_one_and_two_workers_give_the_same_greedy_rollouts(ray_cluster, tiny_model_dir, tiny_tasks, cfg):
    items = _items(tiny_tasks)
    one = _pool(1, tiny_model_dir, cfg)
    try:
        a = one.run(items, SETTINGS, seed=5)
    finally:
        one.shutdown()
    two = _pool(2, tiny_model_dir, cfg)
    try:
        b = two.run(items, SETTINGS, seed=5)
        assert [r.task_id for r in b] == [t.id for t, _, _ in items]  # the driver's order
        assert _tokens(a) == _tokens(b)
        assert [r.reward for r in a] == [r.reward for r in b]

        # a worker killed between steps: restarted with the current weights, its share redone, one log line
        ray.kill(two.workers[1], no_restart=True)
        logger = logging.getLogger("supo.rollout")
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logger.addHandler(handler)
        try:
            c = two.run(items, SETTINGS, seed=5)
        finally:
            logger.removeHandler(handler)
        assert _tokens(c) == _tokens(a)
        assert two.restarts == 1
        assert sum("died" in r.getMessage() for r in records) == 1
    finally:
        two.shutdown()


def test_sampling_is_reproducible_for_a_seed(ray_cluster, tiny_model_dir, tiny_tasks, cfg):
    pool = _pool(1, tiny_model_dir, cfg, temperature=1.0)
    try:
        items = _items(tiny_tasks)
        a = pool.run(items, SETTINGS, seed=11)
        b = pool.run(items, SETTINGS, seed=11)
        c = pool.run(items, SETTINGS, seed=12)
        assert _tokens(a) == _tokens(b)
        assert _tokens(a) != _tokens(c)
    finally:
        pool.shutdown()
