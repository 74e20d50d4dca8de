"""supo.step: one RL step as a unit, in one process — the real vLLM engine (tiny random model), the real array env and
the real policy trainer (the contracts the bench and the GPU check use; the Ray path runs the same function in
``tests/test_cli.py``'s pipeline runs)."""

from __future__ import annotations

import pytest
import torch

from supo.config import load_config
from supo.envs.array import make_env
from supo.runtime import build_runtime
from supo.step import (LocalLearner, LocalRollouts, StepContext, StepHook, run_step, sample_step_tasks, step_items,
                       step_seed)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def parts(tiny_model_dir, tiny_tasks):
    from supo.engines.vllm_engine import VLLMPolicy
    from supo.models import load_policy
    from supo.trainer.policy_trainer import PolicyTrainer

    cfg = load_config(None, {"rollout.tasks_per_step": 2, "rollout.group_size": 2, "train.steps": 3,
                             "budget.max_steps": 4, "engine.max_model_len": 1024, "rollout.temperature": 1.0})
    tasks = tiny_tasks[:20]
    rt = build_runtime(cfg, tiny_model_dir, tasks, max_summaries=cfg.train_max_summaries,
                       working_context=cfg.budget.working_context)
    engine = VLLMPolicy(tiny_model_dir, cfg.engine, seed=0, temperature=1.0)
    trainer = PolicyTrainer(load_policy(tiny_model_dir), cfg.train, rt.tokenizer.pad_token_id,
                            rt.budgets.trainer_needed, cfg.seed, temperature=1.0)
    return cfg, tasks, rt, engine, trainer


class Recorder(StepHook):
    def __init__(self):
        self.calls = []

    def on_rollouts(self, step, rollouts):
        self.calls.append(("rollouts", step, rollouts))

    def on_update(self, step, samples, stats):
        self.calls.append(("update", step, samples, stats))


def _ctx(parts, cfg=None):
    base, tasks, rt, engine, trainer = parts
    return StepContext(cfg or base, tasks, rt.settings, LocalRollouts(engine, rt, make_env),
                       LocalLearner(trainer, engine))


def test_a_step_samples_its_tasks_trains_and_pushes_the_weights(parts):
    cfg, tasks, _, engine, trainer = parts
    before = {k: v.clone() for k, v in trainer.state_dict().items()}
    hook = Recorder()
    res = run_step(_ctx(parts), 1, hooks=[hook])
    # the step's rollouts: its seeded task draw, G per task, grouped by task and step (R8)
    drawn = sample_step_tasks(tasks, 1, cfg.rollout.tasks_per_step, cfg.seed)
    assert [r.group_id for r in res.rollouts] == [f"{t.id}@1" for t in drawn for _ in range(cfg.rollout.group_size)]
    assert [(t.id, g, i) for t, g, i in step_items(tasks, 1, cfg)] == [
        (t.id, f"{t.id}@1", i) for t in drawn for i in range(cfg.rollout.group_size)]
    # one sample per segment (and trigger action) of every rollout, carrying its rollout's advantage
    assert len(res.samples) == sum(len(r.segments) for r in res.rollouts)
    assert res.stats.num_samples == len(res.samples)
    # the hooks saw the step's very objects, in order
    assert [c[0] for c in hook.calls] == ["rollouts", "update"]
    assert hook.calls[0][2] is res.rollouts and hook.calls[1][2] is res.samples and hook.calls[1][3] is res.stats
    # the history row's vocabulary
    for key in ("success_rate", "masked_rollout_frac", "degenerate_group_frac", "loss", "grad_norm", "kl_to_init",
                "rollout_seconds", "train_seconds", "weight_sync_seconds", "step_seconds", "policy_lag"):
        assert key in res.metrics, key
    assert res.metrics["policy_lag"] == 0 and res.ahead is None
    assert set(res.seconds) == {"rollout", "advantages", "update", "sync"}
    changed = any(not torch.equal(before[k], v) for k, v in trainer.state_dict().items())
    assert changed == (res.stats.optimizer_steps > 0 and res.metrics["degenerate_group_frac"] < 1)


def test_with_overlap_the_next_steps_rollouts_are_submitted_before_the_update(parts):
    import dataclasses

    cfg = parts[0]
    ov = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, overlap=True))
    ctx = _ctx(parts, ov)
    first = run_step(ctx, 1)
    assert first.ahead is not None  # step 2's rollouts, pending
    items, _, seed = first.ahead[0]
    assert seed == step_seed(cfg.seed, 2) and [i[1] for i in items] == [i[1] for i in step_items(parts[1], 2, cfg)]
    last = run_step(ctx, 2, ahead=first.ahead)
    assert last.metrics["policy_lag"] == 1
    assert last.ahead is None  # the run's last step submits nothing
    assert {r.group_id.split("@")[1] for r in last.rollouts} == {"2"}
