"""Tests for supo.config's derived budgets (docs/design.md §2): L, the turn, summary and observation budgets, the
engine and trainer limits, and the errors that name the field to change."""

from __future__ import annotations


import pytest

from supo.config import Budgets, Config, ConfigError, derive_budgets, load_config, validate_budgets


# ---------------------------------------------------------------------------------------------------------------------
# derived budgets


BUDGET_KNOBS = {
    "budget.working_context": 224,
    "budget.trigger_frac": 0.95,
    "budget.max_turn_tokens": 24,
    "budget.max_summary_tokens": 24,
    "budget.max_obs_tokens": 24,
    "engine.max_model_len": 320,
    "model.max_position_embeddings": 1024,
    "train.max_seq_len": 0,
}


def _budget_cfg(**extra) -> Config:
    """A config with explicit length knobs (independent of the defaults): L = ceil(0.95 × 224) = 213."""
    return load_config(None, overrides={**BUDGET_KNOBS, **extra})


def _budgets(cfg: Config, **kw) -> Budgets:
    args = dict(working_context=cfg.budget.working_context, summary_chunk_len=30, continuation_chunk_len=10,
                max_prompt_len=60, obs_overhead=5)
    args.update(kw)
    return derive_budgets(cfg, **args)


def test_derive_budgets_arithmetic():
    cfg = _budget_cfg()
    b = _budgets(cfg)
    assert b.trigger == 213  # ceil(0.95 * 224)
    assert b.obs_chunk == 5 + 24
    assert b.engine_needed == 213 + max(24, 30 + 24) + 29
    assert b.trainer_needed == 213 + max(24, 30 + 24)
    assert (b.summary_prompt, b.continuation, b.max_prompt) == (30, 10, 60)
    validate_budgets(cfg, b, working_context=224)  # 296 ≤ 320: passes


def test_derive_budgets_turn_longer_than_summary():
    cfg = _budget_cfg(**{"budget.max_turn_tokens": 100})
    b = _budgets(cfg, summary_chunk_len=30)
    assert b.engine_needed == 213 + 100 + 29 and b.trainer_needed == 213 + 100


def test_working_context_smaller_than_prompt_names_working_context():
    cfg = _budget_cfg()
    b = _budgets(cfg, max_prompt_len=250)
    with pytest.raises(ConfigError) as ei:
        validate_budgets(cfg, b, working_context=224)
    assert "budget.working_context" in str(ei.value)


def test_working_context_without_room_after_reset_names_working_context():
    cfg = _budget_cfg()
    # 180 + 10 + 24 + 24 = 238 > L = 213, although the prompt itself fits under L
    b = _budgets(cfg, max_prompt_len=180)
    with pytest.raises(ConfigError) as ei:
        validate_budgets(cfg, b, working_context=224)
    assert "budget.working_context" in str(ei.value)


def test_room_after_reset_counts_the_observation_of_the_first_step():
    """After a reset, the first (action, observation) pair must fit below L, or that step triggers the next summary
    at once and the segment carries nothing: 120 + 10 + 24 + 24 = 178 < L = 213 would pass without the observation
    chunk (29 tokens), 207 with it passes too, and 140 + 10 + 24 + 24 + 29 = 227 ≥ 213 fails."""
    cfg = _budget_cfg()
    validate_budgets(cfg, _budgets(cfg, max_prompt_len=120), working_context=224)
    b = _budgets(cfg, max_prompt_len=140)
    assert 140 + 10 + 24 + 24 < b.trigger  # enough for the action alone
    with pytest.raises(ConfigError) as ei:
        validate_budgets(cfg, b, working_context=224)
    assert "budget.working_context" in str(ei.value) and "longest observation" in str(ei.value)


def test_eval_working_context_field_is_named_when_given():
    cfg = _budget_cfg()
    b = _budgets(cfg, working_context=64)
    with pytest.raises(ConfigError) as ei:
        validate_budgets(cfg, b, working_context=64, wc_field="eval.working_context")
    assert "eval.working_context" in str(ei.value)


def test_engine_limit_below_derived_budget_names_max_model_len():
    cfg = _budget_cfg()
    b = _budgets(cfg, summary_chunk_len=100)  # 213 + 124 + 29 = 366 > 320
    assert b.engine_needed == 366
    with pytest.raises(ConfigError) as ei:
        validate_budgets(cfg, b, working_context=224)
    assert "engine.max_model_len" in str(ei.value)
    assert "366" in str(ei.value)
    # raising the engine limit to exactly the derived budget fixes it
    cfg_ok = _budget_cfg(**{"engine.max_model_len": 366})
    validate_budgets(cfg_ok, b, working_context=224)


def test_trainer_limit_below_longest_segment_names_max_seq_len():
    cfg = _budget_cfg(**{"train.max_seq_len": 100})
    with pytest.raises(ConfigError) as ei:
        validate_budgets(cfg, _budgets(cfg), working_context=224)
    assert "train.max_seq_len" in str(ei.value)
    validate_budgets(_budget_cfg(**{"train.max_seq_len": 267}), _budgets(cfg), working_context=224)  # 213 + 54
