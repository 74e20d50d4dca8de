"""Loading the run configuration: ``params.yaml`` (or the code defaults), the ``envs.<env>`` and ``arms.<arm>``
overrides, ``-S`` overrides, typed into :class:`~supo.config.schema.Config` and validated
(:func:`supo.config.checks.validate`); where each value comes from (:func:`provenance`); every field's documentation
(:func:`describe`).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

from supo.config.checks import validate
from supo.config.schema import ARM_ROLE_KEY, Config, EnvConfig
from supo.config.sections import ENV_SECTION, EnvSections
from supo.envs import get_env_spec
from supo.errors import ConfigError, require
from supo.plugins import import_plugins


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): (dict(v) if isinstance(v, dict) else v) for k, v in value.items()}
    if origin is list:
        (inner,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {typ!r}")


def _build(cls: type, data: dict[str, Any], where: str, **extra: Any) -> Any:
    """``cls`` from the mapping ``data`` (each value typed, an unknown key named), with ``extra`` fields as given."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.metadata.get("file", True)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {where + '.' if where else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"{path}: unknown field{hint}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value, path)
        else:
            kwargs[key] = _coerce(value, typ, path)
    return cls(**kwargs, **extra)


def _build_config(data: dict[str, Any]) -> Config:
    """``data`` typed into :class:`Config`: its own sections, and every registered env's options from the section its
    spec names — in ``env``, ``name`` is the run's, the other keys the options of the env that keeps them there."""
    classes = Config.option_classes()
    own_names = [f.name for f in dataclasses.fields(Config) if f.metadata.get("file", True)]
    env_names = [f.name for f in dataclasses.fields(EnvConfig)]
    own: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in data.items():
        if key == ENV_SECTION and key in classes and isinstance(value, dict):
            own[key] = {k: v for k, v in value.items() if k in env_names}
            options[key] = {k: v for k, v in value.items() if k not in env_names}
        elif key in classes:
            options[key] = value
        elif key in own_names:
            own[key] = value
        else:
            close = difflib.get_close_matches(str(key), own_names + list(classes), n=1)
            hint = f" (did you mean {close[0]}?)" if close else (
                " (an env's options section needs the env registered: a plugin's module in train.plugins)")
            raise ConfigError(f"{key}: unknown field{hint}")
    sections = EnvSections({s: _build(cls, options.get(s, {}), s) for s, cls in classes.items()})
    return _build(Config, own, "", env_sections=sections)


def _plugins_named(data: dict[str, Any]) -> list[Any]:
    """``train.plugins`` of the raw params (before they are typed: a plugin may register an env's options section)."""
    train = data.get("train")
    plugins = train.get("plugins") if isinstance(train, dict) else None
    return plugins if isinstance(plugins, list) else []


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-5"`` → ``("train.lr", 1e-05)`` (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=1e-5")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and raw.strip():
        # YAML reads "1e-5" as a string; accept plain numeric spellings.
        try:
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            pass
    return key.strip(), value


ENV_PATHS = ("data", "model", "sft", "checkpoints", "evals", "metrics")


def read_params(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a params file; a missing, unparsable, empty or scalar file is a ConfigError (an empty
    file would otherwise run silently on the code's defaults)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"config file {p} is empty; it needs the sections of params.yaml (`supo-cli config --docs` "
                          "lists them)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping of sections at the top level, got "
                          f"{type(data).__name__} {data!r}"[:200])
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
                env: str | None = None, arm: str | None = None, *, check_files: bool = False) -> Config:
    """Read ``params.yaml`` (or defaults when ``path`` is None), apply dotted overrides, validate.

    ``env``: run on that environment: ``env.name = env``, the ``envs.<env>`` overrides of the file apply (before the
    explicit ``overrides``), and the stage paths (``paths.data``, ``paths.model``, …) get ``/<env>`` appended, so two
    environments' pipelines never share files.

    ``arm``: apply the file's ``arms.<arm>`` overrides (after the env's, before the explicit ones); an arm the file does
    not define is an error.

    ``check_files``: also check that every local file the selected environment reads exists (the file-backed envs;
    the CLI's commands ask for it, so a missing file is named before anything starts).
    """
    data = read_params(path) if path is not None else {}
    if env is not None:
        per_env = (data.get("envs") or {}).get(env, {})
        if not isinstance(per_env, dict):
            raise ConfigError(f"envs.{env}: expected a mapping of dotted overrides, got {per_env!r}")
        for key, value in per_env.items():
            _set_dotted(data, key, value)
        _set_dotted(data, "env.name", env)
    if arm is not None:
        arms = data.get("arms") or {}
        if arm not in arms:
            close = difflib.get_close_matches(arm, list(arms), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"--arm {arm}: not an arm of the params file's `arms` ({', '.join(arms) or 'none'}){hint}")
        per_arm = arms[arm]
        if not isinstance(per_arm, dict):
            raise ConfigError(f"arms.{arm}: expected a mapping of dotted overrides, got {per_arm!r}")
        for key, value in per_arm.items():
            if key != ARM_ROLE_KEY:  # the arm's part in the claims, read by the report; not a config field
                _set_dotted(data, key, value)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        _set_dotted(data, key, value)
    import_plugins(_plugins_named(data))  # first: a plugin env's options section is one of the config's
    cfg = _build_config(data)
    if env is not None:
        for name in ENV_PATHS:
            setattr(cfg.paths, name, f"{getattr(cfg.paths, name)}/{env}")
    if cfg.budget.use_effective_context:
        require(cfg.train.algo == "grpo", "budget.use_effective_context",
                 f"is the GRPO-Weff arm: it needs train.algo=grpo, got {cfg.train.algo!r}")
        cfg = effective_context(cfg)
    validate(cfg, check_files=check_files)
    return cfg


def effective_context(cfg: Config) -> Config:
    """A copy of ``cfg`` at the effective context W × (S + 1) of its S = ``budget.max_summaries``: W and the engine's
    limit grow by W × S (what the GRPO-Weff arm and the warm start's long-context demonstrations run at)."""
    extra = cfg.budget.working_context * cfg.budget.max_summaries
    return dataclasses.replace(
        cfg, budget=dataclasses.replace(cfg.budget, working_context=cfg.budget.working_context + extra),
        engine=dataclasses.replace(cfg.engine, max_model_len=cfg.engine.max_model_len + extra))


def describe(cls: type = Config, prefix: str = "", *, env: str | None = None) -> list[tuple[str, str, str]]:
    """(dotted name, default, help) for every field — the documentation `supo-cli config --docs` prints; of
    :class:`Config`, every registered env's options too, or with ``env`` that env's only (beside the run's own)."""
    if cls is not Config:
        hints, inst = typing.get_type_hints(cls), cls()
        rows = []
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                rows.extend(describe(hints[f.name], prefix + f.name + "."))
            else:
                rows.append(_row(prefix + f.name, getattr(inst, f.name), f))
        return rows
    section = None if env is None else get_env_spec(env).section
    own = {f.name: f for f in dataclasses.fields(Config)}
    rows = []
    for key, value, is_options in Config().parts():
        if is_options and section not in (None, key):
            continue  # another env's options
        rows.extend(describe(type(value), key + ".") if dataclasses.is_dataclass(value) else
                    [_row(key, value, own[key])])
    return rows


def _row(name: str, default: Any, f: dataclasses.Field) -> tuple[str, str, str]:
    shown = repr(default) if not isinstance(default, str) or len(default) < 40 else repr(default[:37] + "...")
    return name, shown, f.metadata.get("help", "")


def provenance(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
               env: str | None = None, arm: str | None = None) -> dict[str, str]:
    """Where each field of ``load_config(path, overrides, env, arm)`` takes its value from: ``default`` (the code),
    the params file's name, ``envs.<env>``, ``arms.<arm>`` or ``-S`` — the last layer that sets it, in
    :func:`load_config`'s order. Derived values say so: ``+ /<env>`` on the stage paths under ``--env``, ``+ W×S`` on
    the GRPO-Weff context (``budget.use_effective_context``)."""
    cfg = load_config(path, overrides, env=env, arm=arm)  # first: train.plugins may register an env's options
    source = {n: "default" for n, _, _ in describe()}

    def mark(dotted: str, value: Any, label: str) -> None:
        if dotted in source:
            source[dotted] = label
        elif isinstance(value, dict):  # a whole section
            for key, sub in value.items():
                mark(f"{dotted}.{key}" if dotted else str(key), sub, label)

    data = read_params(path) if path is not None else {}
    mark("", data, Path(path).name if path is not None else "default")
    if env is not None:
        for key, value in ((data.get("envs") or {}).get(env) or {}).items():
            mark(key, value, f"envs.{env}")
        source["env.name"] = "--env"
    if arm is not None:
        for key, value in ((data.get("arms") or {}).get(arm) or {}).items():
            mark(key, value, f"arms.{arm}")
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        mark(key, value, "-S")
    if env is not None:
        for name in ENV_PATHS:
            source[f"paths.{name}"] += f" + /{env}"
    if cfg.budget.use_effective_context:
        for name in ("budget.working_context", "engine.max_model_len"):
            source[name] += " + W×S (use_effective_context)"
    return source
