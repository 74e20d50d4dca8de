"""supo.tracking_params: the pure helpers the MLflow store and the JSON store share, importable without MLflow."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supo import tracking, tracking_json
from supo.tracking_params import (
    DEFAULT_TRACKING_URI,
    flatten_params,
    is_finite_number,
    sqlite_db_path,
    tracking_uri_source,
)

REPO = Path(__file__).resolve().parents[1]


def test_imports_without_mlflow_installed():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "hidden_modules"), str(REPO)]),
               SUPO_HIDE_MODULES="mlflow")
    code = ("import importlib.util, supo.tracking_params, supo.tracking_json; "
            "assert importlib.util.find_spec('mlflow') is None; "
            "print(supo.tracking_params.tracking_uri_source(None, 'sqlite:///x.db')[1])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("tracking.uri", "MLFLOW_TRACKING_URI")


def test_both_stores_use_the_same_helpers():
    """One owner: the MLflow tracker and the JSON tracker flatten params and filter metrics with these functions."""
    assert tracking.flatten_params is flatten_params and tracking.tracking_uri_source is tracking_uri_source
    assert tracking_json.flatten_params is flatten_params and tracking_json.is_finite_number is is_finite_number
    assert not hasattr(tracking_json, "_flatten") and not hasattr(tracking, "_is_finite_number")


def test_flatten_params_dotted_keys():
    assert flatten_params({"train": {"lr": 1e-4, "clip": {"low": 0.2}}, "seed": 0}) == {
        "train.lr": 1e-4, "train.clip.low": 0.2, "seed": 0}
    assert flatten_params({}) == {}
    assert flatten_params({"a": [1, 2]}) == {"a": [1, 2]}  # lists are values, not nested keys


@pytest.mark.parametrize(("value", "ok"), [(1, True), (0.5, True), ("2.5", True), (True, False), (None, False),
                                           (math.nan, False), (math.inf, False), ("x", False), ([1], False)])
def test_is_finite_number(value, ok):
    assert is_finite_number(value) is ok


def test_tracking_uri_source_order(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri_source(None, "") == (DEFAULT_TRACKING_URI, "tracking.uri")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert tracking_uri_source(None, "sqlite:///cfg.db") == ("sqlite:///env.db", "MLFLOW_TRACKING_URI")
    assert tracking_uri_source("sqlite:///flag.db", "sqlite:///cfg.db") == ("sqlite:///flag.db", "--tracking-uri")


def test_sqlite_db_path():
    assert sqlite_db_path("sqlite:///rel/x.db") == Path("rel/x.db")
    assert sqlite_db_path("sqlite:////abs/x.db?mode=ro") == Path("/abs/x.db")
    assert sqlite_db_path("sqlite:///:memory:") is None and sqlite_db_path("http://host:5000") is None
