"""Tests for supo.config: loading, documentation of every field, type and range checks, overrides, derived budgets."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest
import yaml

from supo.config import (
    Config,
    ConfigError,
    describe,
    load_config,
    parse_override,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _entries(cls: type):
    """(key, Field or None, type) of every field of ``cls``; of Config, every top-level entry of params.yaml: its own
    fields, and after ``env`` the env-option sections built from the env registry (no Field: an env's spec declares
    them)."""
    if cls is not Config:
        hints = typing.get_type_hints(cls)
        yield from ((f.name, f, hints[f.name]) for f in dataclasses.fields(cls))
        return
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.metadata.get("file", True):
            yield f.name, f, hints[f.name]
        if f.name == "env":
            yield from ((section, None, options) for section, options in Config.option_classes().items())


def _leaf_fields(cls: type = Config, prefix: str = ""):
    """(dotted name, dataclasses.Field) for every leaf field of the config tree."""
    for name, f, typ in _entries(cls):
        if dataclasses.is_dataclass(typ):
            yield from _leaf_fields(typ, prefix + name + ".")
        else:
            yield prefix + name, f


def _all_fields(cls: type = Config, prefix: str = ""):
    """Every field, sections included (an env-option section's fields, not the section: its spec declares it)."""
    for name, f, typ in _entries(cls):
        if f is not None:
            yield prefix + name, f
        if dataclasses.is_dataclass(typ):
            yield from _all_fields(typ, prefix + name + ".")


def _write_yaml(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


# ---------------------------------------------------------------------------------------------------------------------
# loading and documentation


def test_defaults_load_and_validate():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg == Config()
    assert cfg.train.algo == "supo"
    assert cfg.budget.trigger_tokens == math.ceil(cfg.budget.trigger_frac * cfg.budget.working_context)


@pytest.mark.parametrize("path", [REPO_ROOT / "params.yaml", *sorted((REPO_ROOT / "profiles").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_repo_params_files_load_and_match_the_file(path):
    """params.yaml and every profile load unchanged (the array env's options still in `env`), each value theirs."""
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    flat = cfg.flat()

    def walk(prefix: str, node):
        for k, v in node.items():
            if isinstance(v, dict) and prefix + k not in ("envs", "arms"):  # per-env/arm overrides stay mappings
                walk(f"{prefix}{k}.", v)
            else:
                assert flat[f"{prefix}{k}"] == v, f"{path.name}: {prefix}{k}"

    walk("", raw)


def test_every_field_has_help_text():
    names = []
    for name, f in _all_fields():
        help_text = f.metadata.get("help")
        assert isinstance(help_text, str) and help_text.strip(), f"{name} has no metadata['help']"
        names.append(name)
    # the walk really covered the tree
    assert "train.lr" in names and "budget.working_context" in names and "engine.max_model_len" in names


def test_describe_returns_one_row_per_leaf_field():
    rows = describe()
    leaf_names = [name for name, _ in _leaf_fields()]
    assert [r[0] for r in rows] == leaf_names
    assert set(leaf_names) == set(Config().flat())
    for name, default, help_text in rows:
        assert isinstance(default, str) and default, name
        assert help_text.strip(), name


def test_missing_config_file_raises(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------------------------------------------------
# unknown keys and wrong types


def test_unknown_key_names_dotted_path_and_suggests_close_match(tmp_path):
    path = _write_yaml(tmp_path, {"train": {"lrr": 1e-5}})
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert "train.lrr" in msg
    assert "did you mean train.lr" in msg


def test_unknown_key_in_override_suggests_close_match():
    with pytest.raises(ConfigError) as ei:
        load_config(None, overrides=["budget.max_sumaries=2"])
    msg = str(ei.value)
    assert "budget.max_sumaries" in msg and "budget.max_summaries" in msg


def test_unknown_section_suggests_close_match():
    with pytest.raises(ConfigError) as ei:
        load_config(None, overrides={"trian.lr": 1e-5})
    assert "trian" in str(ei.value) and "train" in str(ei.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.steps", "ten"),  # string for int
        ("train.steps", True),  # bool for int
        ("train.steps", 2.5),  # non-integral float for int
        ("budget.working_context", "224"),  # numeric-looking string is still a string
        ("train.lr", "fast"),  # string for float
        ("train.lr", False),  # bool for float
        ("train.train_trigger_action", 1),  # int for bool
        ("train.train_trigger_action", "yes"),  # string for bool
        ("train.algo", 3),  # int for str
        ("eval.sweep", 3),  # scalar for list
        ("eval.sweep", [0, "x"]),  # wrong list item
    ],
)
def test_wrong_type_rejected_naming_field(key, value):
    with pytest.raises(ConfigError) as ei:
        load_config(None, overrides={key: value})
    assert key in str(ei.value)


def test_section_given_as_scalar_rejected():
    with pytest.raises(ConfigError, match="train"):
        load_config(None, overrides={"train": 5})


def test_integral_float_accepted_for_int():
    cfg = load_config(None, overrides={"train.steps": 12.0})
    assert cfg.train.steps == 12 and isinstance(cfg.train.steps, int)


# ---------------------------------------------------------------------------------------------------------------------
# ranges and conflicts


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"budget.max_summaries": -1}, "budget.max_summaries"),
        ({"train.algo": "ppo"}, "train.algo"),
        ({"train.advantage": "token"}, "train.advantage"),
        ({"budget.trigger_frac": 0.0}, "budget.trigger_frac"),
        ({"budget.trigger_frac": 1.01}, "budget.trigger_frac"),
        ({"rollout.group_size": 1}, "rollout.group_size"),
        ({"model.hidden_size": 128, "model.num_heads": 8}, "model.num_heads"),  # head size 16
        ({"model.hidden_size": 96, "model.num_heads": 2}, "model.num_heads"),  # head size 48
        ({"model.hidden_size": 128, "model.num_heads": 3}, "model.num_heads"),  # not divisible
        ({"model.max_position_embeddings": 256, "engine.max_model_len": 320}, "model.max_position_embeddings"),
        ({"env.train_min_len": 15, "env.train_max_len": 14}, "env.train_min_len"),
        ({"env.train_min_len": 0, "env.train_max_len": 14}, "env.train_min_len"),
        ({"env.test_min_len": 25, "env.test_max_len": 24}, "env.test_min_len"),
        ({"budget.working_context": 0}, "budget.working_context"),
        ({"budget.max_steps": 0}, "budget.max_steps"),
        ({"rollout.top_p": 0.0}, "rollout.top_p"),
        ({"rollout.top_p": 0.9}, "rollout.top_p"),
        ({"rollout.temperature": 0.0}, "rollout.temperature"),
        ({"expert.summary_error_rate": 1.5}, "expert.summary_error_rate"),
        ({"eval.split": "valid"}, "eval.split"),
        ({"eval.sweep": [0, -1]}, "eval.sweep"),
        ({"env.name": "no-such-env"}, "env.name"),
        ({"train.policy_loss": "nope"}, "train.policy_loss"),
    ],
)
def test_out_of_range_or_inconsistent_value_names_field(overrides, field_name):
    with pytest.raises(ConfigError) as ei:
        load_config(None, overrides=overrides)
    assert field_name in str(ei.value)


def test_trigger_frac_one_is_allowed():
    cfg = load_config(None, overrides={"budget.trigger_frac": 1.0, "budget.working_context": 200})
    assert cfg.budget.trigger_tokens == 200


def test_accepted_head_sizes_pass():
    cfg = load_config(None, overrides={"model.hidden_size": 128, "model.num_heads": 4, "model.num_kv_heads": 2})
    assert cfg.model.hidden_size // cfg.model.num_heads == 32
    cfg = load_config(None, overrides={"model.hidden_size": 64, "model.num_heads": 1, "model.num_kv_heads": 1})
    assert cfg.model.hidden_size // cfg.model.num_heads == 64


# ---------------------------------------------------------------------------------------------------------------------
# overrides


def test_parse_override_float_in_exponent_notation():
    key, value = parse_override("train.lr=1e-5")
    assert key == "train.lr"
    assert isinstance(value, float) and value == pytest.approx(1e-5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train.steps=7", ("train.steps", 7)),
        ("train.lr=0.5", ("train.lr", 0.5)),
        ("train.lr=2E-3", ("train.lr", 2e-3)),
        ("eval.sweep=[0, 2, 4]", ("eval.sweep", [0, 2, 4])),
        ("env.families=[max]", ("env.families", ["max"])),
        ("train.train_trigger_action=false", ("train.train_trigger_action", False)),
        ("train.train_trigger_action=true", ("train.train_trigger_action", True)),
        ("train.algo=grpo", ("train.algo", "grpo")),
        ("tracking.experiment=exp-1", ("tracking.experiment", "exp-1")),
        (" train.steps = 3", ("train.steps", 3)),
    ],
)
def test_parse_override_values(text, expected):
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


def test_parse_override_without_equals_raises():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.lr")


def test_overrides_applied_on_top_of_file(tmp_path):
    path = _write_yaml(tmp_path, {"train": {"lr": 0.01, "steps": 5}})
    cfg = load_config(path, overrides=["train.lr=1e-5", "eval.sweep=[1, 2]", "train.train_trigger_action=false"])
    assert cfg.train.lr == pytest.approx(1e-5)
    assert cfg.train.steps == 5
    assert cfg.eval.sweep == [1, 2]
    assert cfg.train.train_trigger_action is False


def test_train_max_summaries_zero_for_grpo():
    cfg = load_config(None, overrides={"train.algo": "grpo", "budget.max_summaries": 5})
    assert cfg.train_max_summaries == 0
    cfg = load_config(None, overrides={"train.algo": "supo", "budget.max_summaries": 5})
    assert cfg.train_max_summaries == 5


def test_env_flag_applies_per_env_overrides_and_namespaces_paths(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("envs:\n  array:\n    budget.working_context: 256\n    engine.max_model_len: 400\n")
    cfg = load_config(p, env="array")
    assert cfg.env.name == "array" and cfg.budget.working_context == 256 and cfg.engine.max_model_len == 400
    assert cfg.paths.data == "data/array" and cfg.paths.checkpoints == "checkpoints/array"
    assert cfg.paths.reports == "reports"  # the report spans environments
    # explicit overrides still win over the per-env ones
    assert load_config(p, {"budget.working_context": 300}, env="array").budget.working_context == 300
    with pytest.raises(ConfigError, match="budget.working_contxt"):
        p.write_text("envs:\n  array:\n    budget.working_contxt: 256\n")
        load_config(p, env="array")


def test_arm_flag_applies_the_arms_overrides_after_the_envs(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("envs:\n  array:\n    train.lr: 0.5\npipeline:\n  arms: [abl, plain]\n"
                 "arms:\n  abl:\n    train.advantage: segment\n    train.lr: 0.25\n  plain: {}\n")
    cfg = load_config(p, env="array", arm="abl")
    assert cfg.train.advantage == "segment" and cfg.train.lr == 0.25  # the arm's value wins over the env's
    assert load_config(p, {"train.lr": 0.125}, env="array", arm="abl").train.lr == 0.125  # explicit wins over both
    assert load_config(p, env="array", arm="plain").train.advantage == "rollout"
    with pytest.raises(ConfigError, match="--arm abll.*did you mean abl"):
        load_config(p, arm="abll")


def test_effective_context_arm_scales_w_and_the_engine_limit_by_s_plus_one():
    cfg = load_config(None, {"train.algo": "grpo", "budget.use_effective_context": True, "budget.working_context": 200,
                             "budget.max_summaries": 3, "engine.max_model_len": 300})
    assert cfg.budget.working_context == 800 and cfg.engine.max_model_len == 300 + 600
    assert cfg.train_max_summaries == 0
    with pytest.raises(ConfigError, match="budget.use_effective_context.*train.algo=grpo"):
        load_config(None, {"budget.use_effective_context": True})  # SUPO with W_eff is not an arm


def test_eval_sweep_defaults_to_0_1_s_2s_4s():
    cfg = load_config(None)
    assert cfg.eval.sweep_values(3) == [0, 1, 3, 6, 12]
    assert cfg.eval.sweep_values(1) == [0, 1, 2, 4]  # repeats collapse
    assert load_config(None, {"eval.sweep": [5, 0, 5]}).eval.sweep_values(3) == [0, 5]


def test_repo_params_define_every_pipeline_arm_and_the_papers_arms():
    cfg = load_config(REPO_ROOT / "params.yaml")
    assert set(cfg.pipeline.arms) <= set(cfg.arms) and len(cfg.pipeline.seeds) >= 2
    for env in cfg.pipeline.envs:
        s = load_config(REPO_ROOT / "params.yaml", env=env).budget.max_summaries
        w = load_config(REPO_ROOT / "params.yaml", env=env, arm="grpo-w")
        weff = load_config(REPO_ROOT / "params.yaml", env=env, arm="grpo-weff")
        supo = load_config(REPO_ROOT / "params.yaml", env=env, arm="supo")
        assert w.train_max_summaries == 0 and weff.train_max_summaries == 0 and supo.train_max_summaries == s
        assert weff.budget.working_context == w.budget.working_context * (s + 1) == supo.budget.working_context * (s + 1)
        assert load_config(REPO_ROOT / "params.yaml", env=env, arm="supo-no-mask").train.overlong == "none"
        assert load_config(REPO_ROOT / "params.yaml", env=env, arm="supo-eq4").train.advantage == "segment"


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"pipeline.arms": ["supo", "nope"], "arms": {"supo": {}}}, "pipeline.arms"),
        ({"pipeline.seeds": [0, 0]}, "pipeline.seeds"),
        ({"pipeline.seeds": []}, "pipeline.seeds"),
    ],
)
def test_pipeline_arms_and_seeds_are_checked(overrides, field_name):
    with pytest.raises(ConfigError, match=field_name.replace(".", r"\.")):
        load_config(None, overrides)
