"""The pure tracking helpers, MLflow-free: where the tracking URI comes from, params as dotted keys, which metric
values are loggable. :mod:`supo.tracking` (MLflow) and :mod:`supo.tracking_json` (the JSON runs written where MLflow
is not installed) both use them, so both stores get the same params and metrics from the same config."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""Tracking URI used when neither the CLI flag, the environment nor the config sets one."""

_SQLITE_PREFIX = "sqlite:///"


def sqlite_db_path(uri: str) -> Path | None:
    """Return the database file of a ``sqlite:///`` URI, or None for other URIs.

    ``sqlite:///rel/path.db`` is relative to the current directory and ``sqlite:////abs.db``
    is absolute (the usual SQLAlchemy convention). In-memory databases give None.
    """
    if not uri.startswith(_SQLITE_PREFIX):
        return None
    path = uri[len(_SQLITE_PREFIX) :].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path)


def tracking_uri_source(flag: str | None, config_uri: str = DEFAULT_TRACKING_URI) -> tuple[str, str]:
    """``(uri, where it came from)``: the CLI flag (``--tracking-uri``), else ``$MLFLOW_TRACKING_URI``, else the
    config value (``tracking.uri``). Empty strings count as unset; an empty config value gives
    ``sqlite:///mlflow.db``."""
    env_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if flag:
        return flag, "--tracking-uri"
    if env_uri:
        return env_uri, "MLFLOW_TRACKING_URI"
    return config_uri or DEFAULT_TRACKING_URI, "tracking.uri"


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys: ``{"train": {"lr": 1e-6}}`` -> ``{"train.lr": 1e-6}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        full_key = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, full_key))
        else:
            flat[full_key] = value
    return flat


def is_finite_number(value: Any) -> bool:
    """True for real numbers (bools excluded) that are neither NaN nor infinite: the metric values a store keeps."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


__all__ = ["DEFAULT_TRACKING_URI", "flatten_params", "is_finite_number", "sqlite_db_path", "tracking_uri_source"]
