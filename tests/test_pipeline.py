"""supo.pipeline: the runs a command plans — arms × seeds for training, every arm's checkpoint for evaluation, the warm
start at each arm's own working context — and the flag conflicts it rejects. Configs come from a real params file
through ``load_config``; paths from ``supo.layout``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from supo.config import load_config
from supo.layout import checkpoint_dir, eval_dir
from supo.pipeline import plan_arms, plan_eval, plan_seeds, plan_train, plan_warm_start

ARMS = {
    "grpo-w": {"role": "baseline-w", "train.algo": "grpo"},
    "grpo-weff": {"role": "baseline-weff", "train.algo": "grpo", "budget.use_effective_context": True},
    "supo": {"role": "method", "train.algo": "supo"},
    "supo-eq4": {"role": "ablation", "train.algo": "supo", "train.advantage": "segment"},
}
W, S = 128, 2


@pytest.fixture
def params(tmp_path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({
        "seed": 5,
        "budget": {"working_context": W, "max_summaries": S},
        "engine": {"max_model_len": 192},
        "model": {"max_position_embeddings": 1024},
        "eval": {"max_summaries": S, "sweep": []},
        "pipeline": {"envs": ["array"], "arms": list(ARMS), "seeds": [0, 3]},
        "arms": ARMS,
    }))
    return p


def loader(params: Path, env: str | None = "array"):
    return lambda arm, seed: load_config(params, {} if seed is None else {"seed": seed}, env=env, arm=arm)


def test_arms_and_seeds_from_flags_and_conflicts_rejected():
    assert plan_arms(None, False, ["a", "b"]) == [None]
    assert plan_arms(["b"], False, ["a", "b"]) == ["b"]
    assert plan_arms(None, True, ["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="--all-arms and --arm conflict"):
        plan_arms(["a"], True, ["a", "b"])
    with pytest.raises(ValueError, match="repeats an arm"):
        plan_arms(["a", "a"], False, ["a"])
    assert plan_seeds(None, False, [0, 1]) == [None]
    assert plan_seeds(7, False, [0, 1]) == [7]
    assert plan_seeds(None, True, [0, 1]) == [0, 1]
    with pytest.raises(ValueError, match="--all-seeds and --seed conflict"):
        plan_seeds(1, True, [0, 1])


def test_train_plans_every_arm_of_every_seed_seeds_outermost(params):
    base = load_config(params, env="array")
    arms, seeds = plan_arms(None, True, base.pipeline.arms), plan_seeds(None, True, base.pipeline.seeds)
    specs = plan_train(loader(params), arms, seeds)
    assert [(s.seed, s.arm) for s in specs] == [(k, a) for k in (0, 3) for a in ARMS]
    for spec in specs:
        assert spec.cfg.seed == spec.seed
        assert spec.out == checkpoint_dir("checkpoints/array", spec.seed, spec.arm)
        assert spec.cfg.train.algo == ARMS[spec.arm]["train.algo"]
    weff = next(s for s in specs if s.arm == "grpo-weff")
    assert weff.cfg.budget.working_context == W * (S + 1)  # the arm's own overrides were applied
    assert next(s for s in specs if s.arm == "supo-eq4").cfg.train.advantage == "segment"


def test_train_without_an_arm_is_named_by_its_algo_and_out_takes_one_run(params, tmp_path):
    (spec,) = plan_train(loader(params), [None], [None], out=tmp_path / "ckpt")
    assert (spec.arm, spec.seed, spec.out) == ("supo", 5, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="--out takes one run"):
        plan_train(loader(params), ["supo", "grpo-w"], [None], out=tmp_path / "ckpt")
    with pytest.raises(ValueError, match="--out takes one run"):
        plan_train(loader(params), ["supo"], [0, 3], out=tmp_path / "ckpt")


def test_eval_plans_each_arms_checkpoint_with_the_sweep_or_one_s_eval(params):
    swept = plan_eval(loader(params), list(ARMS), [0, 3], sweep=True)
    assert [(s.seed, s.label) for s in swept] == [(k, a) for k in (0, 3) for a in ARMS]
    for spec in swept:
        assert spec.checkpoint == checkpoint_dir("checkpoints/array", spec.seed, spec.label)
        assert spec.out == eval_dir("evals/array", spec.seed, spec.label)
        assert spec.sweep == (0, 1, S, 2 * S, 4 * S)
    single = plan_eval(loader(params), ["supo"], [3], sweep=False)
    assert single[0].sweep is None
    assert single[0].out == eval_dir("evals/array", 3, "supo", S)


def test_the_warm_start_runs_at_each_arms_own_working_context(params):
    specs = plan_warm_start(loader(params), list(ARMS), [0, 3])
    # per seed: the sweep at W (covers grpo-w, supo, supo-eq4), and GRPO-Weff's W × (S + 1) at its own S = 0
    assert [(s.seed, s.label) for s in specs] == [(0, "sft"), (0, "sft-grpo-weff"), (3, "sft"), (3, "sft-grpo-weff")]
    for spec in specs:
        assert spec.checkpoint == Path("models/sft/array")
    at_w, at_weff = specs[0], specs[1]
    assert at_w.cfg.budget.working_context == W and at_w.sweep == (0, 1, S, 2 * S, 4 * S)
    assert at_w.out == eval_dir("evals/array", 0, "sft")
    assert at_weff.cfg.budget.working_context == W * (S + 1) and at_weff.sweep is None
    assert at_weff.cfg.eval.max_summaries == 0 and at_weff.cfg.eval.working_context == 0
    assert at_weff.out == eval_dir("evals/array", 0, "sft-grpo-weff", 0)


def test_the_warm_start_of_a_given_checkpoint_and_no_other_w(params, tmp_path):
    specs = plan_warm_start(loader(params), ["supo", "grpo-w"], [None], checkpoint=tmp_path / "m")
    assert [(s.label, s.seed, s.checkpoint) for s in specs] == [("sft", 5, tmp_path / "m")]
