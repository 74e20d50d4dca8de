"""dvc.yaml: every stage lists every params.yaml field its command reads, so that changing one re-runs the stage.

What a stage reads is measured, not declared: each stage's own command (dvc.yaml's ``cmd``, for the array env) runs
in this process on a miniature copy of params.yaml while every read of a config field is recorded (the section
dataclasses' attribute reads); each field read must be listed in the stage's ``params`` (itself or its section).
Not counted: reads made only to validate (``supo.config.checks.validate``) or to log the whole config (``flat``,
``to_dict``); ``tracking`` (where runs are logged), ``paths`` (dvc.yaml names a stage's files in its deps and outs)
and ``profile`` (a tag); ``seed`` where the command sets it (``--all-seeds``). Sections a command hands whole to a
Ray actor are read there too; the driver reads the same fields (the templates, the engine's settings) or the
section is listed whole (``train``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import typing
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NOT_DEPENDENCIES = ("tracking", "paths", "profile")
MINIATURE = {
    "env.num_train": 24, "env.num_test": 4, "env.num_val": 4, "env.train_min_len": 4, "env.train_max_len": 6,
    "env.test_min_len": 6, "env.test_max_len": 8, "expert.num_demos": 12,
    "budget.max_steps": 8, "rollout.group_size": 2, "rollout.tasks_per_step": 1, "sft.steps": 2,
    "sft.batch_size": 4, "train.steps": 1, "eval.num_tasks": 1, "eval.sweep": [0, 1],
    "pipeline.arms": ["supo", "grpo-weff"], "pipeline.seeds": [0],
}


def section_prefixes() -> dict[type, str]:
    """Every config dataclass and where it sits in params.yaml (``Config`` at the top)."""
    from supo.config import Config

    out: dict[type, str] = {Config: ""}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                out[hints[f.name]] = prefix + f.name
                walk(hints[f.name], prefix + f.name + ".")

    walk(Config, "")
    # the env-option sections are built from the EnvSpec registry, not typed fields of Config
    out.update({cls: section for section, cls in Config.option_classes().items()})
    return out


@contextlib.contextmanager
def recording_reads(monkeypatch):
    """Record ``section.field`` for every read of a config field while inside; reads during validation or while
    the whole config is serialised are not counted."""
    import supo.config.load as load_module
    from supo.config import Config, EnvSections

    reads: set[str] = set()
    paused = [0]

    def pausing(fn):
        def wrapper(*args, **kwargs):
            paused[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                paused[0] -= 1
        return wrapper

    for cls, prefix in section_prefixes().items():
        hints = typing.get_type_hints(cls)
        leaves = {f.name for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])}

        def getattribute(self, name, _leaves=leaves, _prefix=prefix, _orig=object.__getattribute__):
            if name in _leaves and not paused[0]:
                reads.add(f"{_prefix}.{name}" if _prefix else name)
            return _orig(self, name)

        monkeypatch.setattr(cls, "__getattribute__", getattribute, raising=False)
    monkeypatch.setattr(load_module, "validate", pausing(load_module.validate))
    monkeypatch.setattr(Config, "flat", pausing(Config.flat))
    monkeypatch.setattr(Config, "to_dict", pausing(Config.to_dict))
    # the env-option sections serialised whole (pickled for a Ray actor, compared): not a read of each field
    monkeypatch.setattr(EnvSections, "plain", pausing(EnvSections.plain))
    yield reads


def uncovered(reads: set[str], params: list[str], exempt: set[str]) -> list[str]:
    def listed(leaf: str) -> bool:
        return any(leaf == p or leaf.startswith(p + ".") for p in params)

    return sorted(r for r in reads if not listed(r) and r.split(".")[0] not in exempt and r not in exempt)


def test_uncovered_reads():
    reads = {"train.lr", "pipeline.arms", "pipeline.seeds", "seed", "paths.data", "engine.max_model_len"}
    assert uncovered(reads, ["train", "pipeline.arms"], {"paths", "seed"}) == ["engine.max_model_len",
                                                                           "pipeline.seeds"]


def test_the_recorder_sees_leaf_reads_not_validation(monkeypatch):
    from supo.config import load_config

    with recording_reads(monkeypatch) as reads:
        cfg = load_config(None)
        assert reads == {"budget.use_effective_context"}  # what loading decides by; its validation does not count
        reads.clear()
        _ = cfg.budget.working_context, cfg.seed, cfg.env.name
        cfg.flat()
    assert reads == {"budget.working_context", "seed", "env.name"}


def dvc_stages(env: str) -> dict[str, tuple[list[str], list[str]]]:
    """stage -> (the command's arguments for ``env``, its params)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        args = shlex.split(body["cmd"].replace("${item}", env))
        assert args[0] == "supo-cli", body["cmd"]
        out[name] = (args[1:], [str(p) for p in body.get("params", [])])
    return out


@pytest.mark.slow
def test_every_stage_lists_every_params_field_its_command_reads(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    from supo.envs import get_env_spec

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for env in params["pipeline"]["envs"]:  # the foreach stages run every env of the pipeline: its options too
        assert get_env_spec(env).section in dvc_stages(env)["prepare"][1], env
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPO_PROGRESS", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    overrides = [a for k, v in MINIATURE.items() for a in ("-S", f"{k}={yaml.safe_dump(v).strip()}")]
    missing = {}
    for name, (args, listed) in dvc_stages("array").items():
        extra = overrides if name != "report" else []
        with recording_reads(monkeypatch) as reads:
            result = CliRunner().invoke(app, [*args, *extra], catch_exceptions=False)
        assert result.exit_code == 0, f"{name}: {result.output}"
        assert reads, name
        exempt = set(NOT_DEPENDENCIES) | ({"seed"} if "--all-seeds" in args or "--seed" in args else set())
        gaps = uncovered(reads, listed, exempt)
        if gaps:
            missing[name] = gaps
    assert not missing, "dvc.yaml stages read params they do not list: " + "; ".join(
        f"{stage}: {', '.join(gaps)}" for stage, gaps in missing.items())


def test_every_param_a_stage_lists_is_in_params_yaml():
    """DVC refuses to run a stage whose listed param (a section or a dotted field) is missing from params.yaml."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    absent = []
    for name, (_args, listed) in dvc_stages("array").items():
        for key in listed:
            node = params
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    absent.append(f"{name}: {key}")
                    break
                node = node[part]
    assert not absent, "listed in dvc.yaml, missing from params.yaml: " + ", ".join(absent)
