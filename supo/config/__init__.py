"""The run configuration: typed, documented field by field, validated when it loads.

``params.yaml`` is read into :class:`Config` (:func:`load_config`). Every field carries its meaning in
``metadata["help"]`` (``supo-cli config --docs`` prints them). Each length knob means exactly one thing
(docs/design.md §2):

* ``budget.max_turn_tokens`` — the most tokens one action generation may produce;
* ``budget.max_summary_tokens`` — the most tokens one summary generation may produce;
* ``budget.working_context`` (W) — the working-context size; the summary trigger fires at ``L = trigger_frac × W``;
* ``budget.max_summaries`` (S) — summaries allowed per training rollout (``eval --max-summaries`` sets it for eval);
* ``budget.max_steps`` (H) — actions allowed per rollout (summaries do not count);
* ``budget.max_obs_tokens`` — observations are truncated to this many tokens;
* ``engine.max_model_len`` — the engine's hard sequence limit; ``train.max_seq_len`` — the trainer's.

The package: :mod:`~supo.config.schema` (the sections), :mod:`~supo.config.sections` (the env-option sections,
built from the env registry: each env declares its options in its ``EnvSpec``, ``supo.envs``),
:mod:`~supo.config.load` (reading, overrides, provenance, the field documentation), :mod:`~supo.config.checks`
(static checks in :func:`validate`; the checks that need the tokenizer — the summary instruction's length, the
longest initial prompt — in :func:`validate_budgets`). Both raise :class:`ConfigError` (``supo.errors``) naming the
field.
"""

from __future__ import annotations

from supo.config.checks import (
    ALGOS,
    VLLM_CPU_HEAD_SIZES,
    Budgets,
    derive_budgets,
    validate,
    validate_budgets,
    validate_envs,
)
from supo.config.load import (
    ENV_PATHS,
    describe,
    effective_context,
    load_config,
    parse_override,
    provenance,
    read_params,
)
from supo.config.schema import (
    ARM_ROLE_KEY,
    ARM_ROLES,
    PAPER_CONTINUATION,
    PAPER_SUMMARY_INSTRUCTION,
    BudgetConfig,
    Config,
    EngineConfig,
    EnvConfig,
    EvalConfig,
    ExpertConfig,
    ModelConfig,
    PathsConfig,
    PipelineConfig,
    PromptsConfig,
    RolloutConfig,
    SFTConfig,
    TrackingConfig,
    TrainConfig,
    TrainerConfig,
)
from supo.config.sections import ENV_SECTION, EnvSections, option_classes
from supo.errors import ConfigError
from supo.fields import F

__all__ = [
    "ALGOS", "ARM_ROLES", "ARM_ROLE_KEY", "ENV_PATHS", "ENV_SECTION", "PAPER_CONTINUATION", "PAPER_SUMMARY_INSTRUCTION",
    "VLLM_CPU_HEAD_SIZES", "BudgetConfig", "Budgets", "Config", "ConfigError", "EngineConfig", "EnvConfig",
    "EnvSections", "EvalConfig", "ExpertConfig", "F", "ModelConfig", "PathsConfig", "PipelineConfig", "PromptsConfig",
    "RolloutConfig", "SFTConfig", "TrackingConfig", "TrainConfig", "TrainerConfig", "derive_budgets", "describe",
    "effective_context", "load_config", "option_classes", "parse_override", "provenance", "read_params", "validate",
    "validate_budgets", "validate_envs",
]
