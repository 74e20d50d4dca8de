"""supo.envs.spec: every environment declares its options, checks and functions in one EnvSpec; the config mounts
the options where params.yaml keeps them and validates them when it loads — a file-backed env's missing file is
named then, before any split is built."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from supo.config import Config, ConfigError, describe, load_config
from supo.envs import ENVS, EnvSpec, get_env_spec, register_env
from supo.envs.array import ArrayEnvConfig
from supo.envs.files import FilesEnvConfig

REPO = Path(__file__).resolve().parents[1]
ROWS = REPO / "tests" / "fixtures" / "codegym" / "rows.jsonl"


def test_every_env_declares_documented_options_and_its_functions():
    assert set(ENVS) >= {"array", "search", "funcall", "codegym", "browsecomp", "bfcl"}
    for name, spec in ENVS.items():
        assert isinstance(spec, EnvSpec) and spec.name == name and get_env_spec(name) is spec
        assert dataclasses.is_dataclass(spec.options) and callable(spec.options.validate)
        assert all(f.metadata.get("help") for f in dataclasses.fields(spec.options)), name
        assert isinstance(spec.options_of(Config()), spec.options)  # mounted at its params.yaml section
        for fn in (spec.make_split, spec.make_env, spec.make_expert, spec.corpus, spec.validate_env_config):
            assert callable(fn)
    assert {ENVS[n].section for n in ("codegym", "browsecomp", "bfcl")} == {"files"}
    documented = {row[0] for row in describe()}
    assert {"env.name", "env.api", "search.top_k", "funcall.k_max", "files.codegym_path"} <= documented


def test_the_selected_envs_options_and_the_mapping_of_before():
    cfg = load_config(None, {"env.name": "search", "search.top_k": 4})
    assert cfg.env_spec is ENVS["search"] and cfg.env_options is cfg.search and cfg.env_options.top_k == 4
    array = load_config(None, {"env.api": "get-fold"})
    assert isinstance(array.env_options, ArrayEnvConfig) and array.env_options.api == "get-fold"
    spec = ENVS["array"]
    assert {"build_split", "make_env", "make_expert", "corpus", "splits"} <= set(spec)
    assert spec["make_env"] is spec.make_env and spec.get("nope") is None and "make_tasks" in spec
    with pytest.raises(KeyError):
        spec["nope"]
    tasks = spec["build_split"](load_config(None, {"env.num_val": 3}), "val")
    assert [t.split for t in tasks] == ["val"] * 3


def test_options_are_checked_when_the_config_loads_naming_the_field():
    for overrides, field in [({"env.api": "nope"}, "env.api"), ({"env.families": []}, "env.families"),
                             ({"search.top_k": 0}, "search.top_k"), ({"files.test_fraction": 1.0},
                                                                      "files.test_fraction"),
                             ({"files.sandbox_memory_mb": 8}, "files.sandbox_memory_mb")]:
        with pytest.raises(ConfigError, match=field):
            load_config(None, overrides)


def test_a_file_backed_env_names_what_it_requires_and_its_missing_file_when_the_config_loads(tmp_path):
    with pytest.raises(ConfigError, match="files.codegym_path: env.name codegym needs"):
        load_config(None, {"env.name": "codegym"})
    missing = tmp_path / "rows.jsonl"
    cfg = load_config(None, {"env.name": "codegym", "files.codegym_path": str(missing)})  # named, not read
    assert cfg.files.codegym_path == str(missing)
    with pytest.raises(ConfigError, match=f"files.codegym_path: {missing} does not exist"):
        load_config(None, {"env.name": "codegym", "files.codegym_path": str(missing)}, check_files=True)
    ok = load_config(None, {"env.name": "codegym", "files.codegym_path": str(ROWS)}, check_files=True)
    assert ok.env_options.codegym_path == str(ROWS)
    with pytest.raises(ConfigError, match="files.browsecomp_queries"):
        load_config(None, {"env.name": "browsecomp", "files.browsecomp_corpus": str(ROWS)})
    with pytest.raises(ConfigError, match="files.bfcl_categories"):
        load_config(None, {"env.name": "bfcl", "files.bfcl_categories": ["nope"]})
    # the array env reads no file: check_files changes nothing
    assert load_config(None, check_files=True).env.name == "array"


def test_the_paper_profiles_load_without_their_local_files():
    cfg = load_config(REPO / "profiles" / "paper-codegym.yaml")
    assert cfg.env.name == "codegym" and isinstance(cfg.env_options, FilesEnvConfig)
    with pytest.raises(ConfigError, match="files.codegym_path: .* does not exist"):
        load_config(REPO / "profiles" / "paper-codegym.yaml", check_files=True)


def test_registering_an_env():
    spec = dataclasses.replace(ENVS["array"], name="array-copy")
    try:
        assert register_env(spec) is spec and get_env_spec("array-copy") is spec
        with pytest.raises(ValueError, match="already registered"):
            register_env(dataclasses.replace(spec))
        assert load_config(None, {"env.name": "array-copy"}).env_spec is spec
    finally:
        ENVS.pop("array-copy", None)
    with pytest.raises(TypeError):
        register_env({"make_env": None})
    with pytest.raises(ValueError, match="unknown environment 'array-copy'; choose one of array"):
        get_env_spec("array-copy")
