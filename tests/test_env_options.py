"""Env options resolved through ``EnvSpec``: the config's env-option sections are built from the env registry, so a
plugin env's options load, validate, reject unknown fields and are documented (``config --docs --env``) like a
built-in's; ``env.name`` is the run's, no env's option (the params files of before: tests/test_config.py)."""

from __future__ import annotations

import dataclasses
import pickle
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from supo.config import Config, ConfigError, EnvConfig, describe, load_config
from supo.envs import ENVS, option_sections, register_env
from supo.envs.array import ArrayEnvConfig
from supo.errors import require
from supo.fields import F
from supo.plugins import LOADED


@dataclasses.dataclass
class ToyOptions:
    """A plugin env's options."""

    rooms: int = F(4, "rooms in the toy world")
    mode: str = F("easy", "easy or hard")
    tags: list[str] = F(["a"], "labels shown to the agent")

    def validate(self) -> None:
        require(self.rooms >= 1, "toy.rooms", f"must be ≥ 1, got {self.rooms}")
        require(self.mode in ("easy", "hard"), "toy.mode", f"must be easy or hard, got {self.mode!r}")


@pytest.fixture
def toy():
    """An env ``toy`` registered with its own options (section ``toy``), unregistered afterwards."""
    spec = register_env(dataclasses.replace(ENVS["array"], name="toy", options=ToyOptions, section=None))
    yield spec
    ENVS.pop("toy", None)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_a_plugin_envs_section_loads_from_the_file_and_overrides(toy, tmp_path):
    assert toy.section == "toy" and option_sections()["toy"] is ToyOptions
    cfg = load_config(_write(tmp_path, "env: {name: toy}\ntoy: {rooms: 7, tags: [x, y]}\n"), ["toy.mode=hard"])
    assert cfg.env == EnvConfig(name="toy") and cfg.env_spec is toy
    assert cfg.toy == cfg.env_options == ToyOptions(rooms=7, mode="hard", tags=["x", "y"])
    assert cfg.flat()["toy.rooms"] == 7 and cfg.to_dict()["toy"] == {"rooms": 7, "mode": "hard", "tags": ["x", "y"]}
    assert load_config(None).toy == ToyOptions()  # defaults, like a built-in's section
    again = _write(tmp_path, yaml.safe_dump(cfg.to_dict()))
    assert load_config(again) == cfg  # what `supo-cli config` prints loads back


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"toy.rooms": "many"}, "toy.rooms: expected an integer"),
    ({"toy.tags": "x"}, "toy.tags: expected a list"),
    ({"toy.rooms": 0}, "toy.rooms: must be ≥ 1"),
    ({"toy.mode": "odd"}, "toy.mode: must be easy or hard"),
    ({"toy.room": 3}, r"toy.room: unknown field \(did you mean toy.rooms\?\)"),
    ({"toy": 3}, "toy: expected a mapping"),
])
def test_a_plugin_envs_bad_value_or_unknown_field_is_named(toy, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


def test_a_plugin_envs_options_are_checked_when_another_env_is_selected(toy):
    with pytest.raises(ConfigError, match="toy.rooms"):  # every section validates, as the built-ins' do
        load_config(None, {"env.name": "array", "toy.rooms": -1})


def test_config_docs_with_env_lists_that_envs_fields(toy, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app

    rows = {name for name, _, _ in describe(env="toy")}
    assert {"env.name", "toy.rooms", "toy.mode", "toy.tags", "train.lr"} <= rows
    assert not any(n.startswith(("search.", "files.")) or n == "env.api" for n in rows)  # not the other envs'
    assert {"toy.rooms", "search.top_k", "env.api"} <= {name for name, _, _ in describe()}
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "toy: {rooms: 9}\n")
    result = CliRunner(env={"SUPO_PROGRESS": "0"}).invoke(app, ["config", "--docs", "--env", "toy"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "[params.yaml; default 4]" in lines["toy.rooms"] and "rooms in the toy world" in lines["toy.rooms"]
    assert "[default]" in lines["toy.mode"] and "easy or hard" in lines["toy.mode"]
    assert "[--env; default 'array']" in lines["env.name"] and "search.top_k" not in lines


PLUGIN = '''
import dataclasses

from supo.envs import ENVS, register_env
from supo.fields import F


@dataclasses.dataclass
class GardenOptions:
    """The garden env's options."""

    plots: int = F(3, "plots in the garden")


register_env(dataclasses.replace(ENVS["array"], name="{name}", options=GardenOptions, section="{name}"))
'''


def test_a_plugin_module_in_train_plugins_brings_its_envs_section(tmp_path, monkeypatch):
    """The plugin is imported before the config is typed: its section in the file is one of the config's."""
    module, env = f"supo_env_plugin_{uuid.uuid4().hex[:8]}", f"garden_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(PLUGIN.replace("{name}", env))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = _write(tmp_path, f"train: {{plugins: [{module}]}}\n{env}: {{plots: 5}}\n")
    try:
        cfg = load_config(path, env=env)
        assert cfg.env.name == env and cfg.env_options.plots == 5 and cfg.options_at(env).plots == 5
        with pytest.raises(ConfigError, match=f"{env}.plot: unknown field"):
            load_config(path, {f"{env}.plot": 1})
    finally:
        ENVS.pop(env, None)
        sys.modules.pop(module, None)
        if module in LOADED:
            LOADED.remove(module)
    with pytest.raises(ConfigError, match=f"{env}: unknown field .*train.plugins"):  # no plugin: named, with why
        load_config(None, {f"{env}.plots": 5})


def test_env_name_is_no_envs_option_and_the_array_env_keeps_its_options_in_env():
    assert [f.name for f in dataclasses.fields(EnvConfig)] == ["name"]
    cfg = load_config(None, {"env.api": "get-fold"})
    assert not hasattr(cfg.env, "api") and isinstance(cfg.options_at("env"), ArrayEnvConfig)
    assert cfg.env_options.api == "get-fold" and cfg.to_dict()["env"]["api"] == "get-fold"
    assert cfg.to_dict()["env"]["name"] == "array"
    with pytest.raises(ConfigError, match=r"env.apx: unknown field \(did you mean env.api\?\)"):
        load_config(None, {"env.apx": 1})


def test_registering_options_refuses_conflicts(toy):
    with pytest.raises(ValueError, match="conflict with ToyOptions"):
        register_env(dataclasses.replace(ENVS["array"], name="toy2", options=ArrayEnvConfig, section="toy"))

    @dataclasses.dataclass
    class Undocumented:
        size: int = 3

    @dataclasses.dataclass
    class Required:
        size: int = dataclasses.field(metadata={"help": "no default"})

    for cls, needle in [(Undocumented, "'size' is undocumented"), (Required, "'size' has no default"),
                        (dict, "must be a dataclass")]:
        with pytest.raises(ValueError, match=needle):
            register_env(dataclasses.replace(ENVS["array"], name="toy3", options=cls, section=None))
    assert "toy2" not in ENVS and "toy3" not in ENVS


@pytest.mark.parametrize(("section", "options", "needle"), [
    ("train", ToyOptions, "train: a section of the run configuration; environment 'clash'"),
    ("env", EnvConfig, "env.name: a field of the run configuration; environment 'clash'"),
])
def test_an_env_taking_a_section_or_field_of_the_run_configuration_is_refused(section, options, needle):
    spec = dataclasses.replace(ENVS["array"], name="clash", options=options, section=section)
    ENVS["clash"] = spec  # past register_env's own checks: the config refuses it when it is built
    try:
        with pytest.raises(ConfigError, match=needle):
            load_config(None)
    finally:
        ENVS.pop("clash")


def test_an_env_without_options_has_no_section():
    spec = register_env(dataclasses.replace(ENVS["array"], name="bare", options=None, section=None))
    try:
        cfg = load_config(None, {"env.name": "bare"})
        assert spec.section is None and cfg.env_options is None and "bare" not in option_sections()
    finally:
        ENVS.pop("bare")


def test_a_config_unpickles_before_a_plugin_envs_options_are_registered(toy):
    """A Ray actor unpickles the config before it loads the plugins: the options are rebuilt on first use."""
    cfg = load_config(None, {"toy.rooms": 6})
    data = pickle.dumps(cfg)
    ENVS.pop("toy")
    back = pickle.loads(data)
    assert back.search == cfg.search
    with pytest.raises(ConfigError, match="toy: no registered environment keeps its options here"):
        _ = back.toy
    register_env(toy)
    assert back.toy == ToyOptions(rooms=6) and back == cfg and Config.option_classes()["toy"] is ToyOptions
