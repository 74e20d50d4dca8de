"""What an environment declares (docs/design.md §5), and the registry of environments.

Each env module builds one :class:`EnvSpec` and :func:`register_env` adds it to :data:`ENVS` (``supo.envs`` registers
the built-in ones; a plugin module listed in ``train.plugins`` can register its own). A spec names:

* its **options** — a dataclass documented field by field (``supo.fields.F``, every field with a default; fields typed
  bool, int, float, str, list or dict) with an optional ``validate()`` that raises :class:`~supo.errors.ConfigError`
  naming ``<section>.<field>``, or None (an env without options); ``section`` is where ``params.yaml`` holds them,
  the env's name unless it says otherwise (the built-ins keep the sections of before: ``env`` for array, beside
  ``env.name``; ``files`` for the file-backed envs, which share it). The run configuration's env-option sections are
  built from this registry (:func:`option_sections`): a plugin env's options load, validate and are documented like a
  built-in's;
* ``requires(options)`` — what the env needs when it is the one selected (``env.name``): a rows file named, a known
  category — checked when the config loads; ``files(options)`` — the local files it reads, as ``(field, path)``,
  checked to exist when a command loads the config (``load_config(check_files=True)``), before any split is built;
* ``make_split(options, split, seed)`` — the seeded task split; ``make_env(task)`` — a fresh environment
  (``reset() -> obs``, ``step(action) -> (obs, done, reward, info)``); ``make_expert(task, error_rate, seed)`` — the
  scripted expert (``act``, ``observe``, ``drop``, ``summarize``; file-backed envs raise NotImplementedError);
  ``corpus(tasks)`` — the texts the tiny tokenizer is trained on; ``validate_env_config(row)`` — the check of one task
  row's ``env_config`` (run on every row a split file yields); ``summary_oracle(task, summary_text)`` — where the env
  defines the state a summary must carry, whether it does (True/False; None or no oracle: not judged), for the
  ``summary_state_accuracy`` metric and the failure decomposition.

An env never imports the run configuration: it is handed its own options. For code written against the dict specs
of before, a spec still reads as a mapping (``spec["make_env"]``, ``spec["build_split"](cfg, split)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supo.errors import ConfigError
from supo.types import Task


@dataclass(frozen=True)
class EnvSpec:
    """One environment: its options and the functions the stages call."""

    name: str
    make_split: Callable[[Any, str, int], list[Task]]
    make_env: Callable[[Task], Any]
    make_expert: Callable[[Task, float, int], Any]
    corpus: Callable[[list[Task]], list[str]]
    validate_env_config: Callable[[dict], None]
    options: type | None = None
    """The dataclass of this env's options (None: it has none)."""
    section: str | None = None
    """The params.yaml section holding the options; None: the env's name (and None where there are no options)."""
    requires: Callable[[Any], None] | None = None
    files: Callable[[Any], Sequence[tuple[str, str]]] | None = None
    splits: tuple[str, ...] = ("train", "test")
    eval_only: bool = False
    make_tasks: Callable[..., list[Task]] | None = None
    summary_oracle: Callable[[Task, str], bool | None] | None = None

    def __post_init__(self) -> None:
        if self.options is not None and self.section is None:
            object.__setattr__(self, "section", self.name)

    def options_of(self, cfg: Any) -> Any:
        """This env's options in the run config ``cfg`` (None for an env without options)."""
        return None if self.options is None else cfg.options_at(self.section)

    def check(self, options: Any, *, selected: bool = True, check_files: bool = False) -> None:
        """``options.validate()`` (where the options have one); when ``selected``, ``requires``; with
        ``check_files``, that every file it reads exists. Raises ConfigError naming the field (and the file)."""
        validate_options(options)
        if selected and self.requires is not None:
            self.requires(options)
        if selected and check_files and self.files is not None:
            for where, path in self.files(options):
                if not Path(path).exists():
                    raise ConfigError(f"{where}: {path} does not exist (env.name {self.name} reads it)")

    def build_split(self, cfg: Any, split: str) -> list[Task]:
        """The ``split`` of the run config ``cfg``: this env's options (checked as when selected) and ``cfg.seed``."""
        options = self.options_of(cfg)
        self.check(options)
        return self.make_split(options, split, cfg.seed)

    # the mapping interface of the dict specs of before (``bench/`` and older callers read ``spec["make_env"]``)
    _KEYS = ("splits", "build_split", "make_env", "make_expert", "corpus", "validate_env_config", "eval_only",
             "make_tasks")

    def keys(self) -> list[str]:
        return [k for k in self._KEYS if k != "make_tasks" or self.make_tasks is not None]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self.keys() else default


def validate_options(options: Any) -> None:
    """``options.validate()``, where the options (an env's, or None) have one."""
    if callable(getattr(options, "validate", None)):
        options.validate()


ENVS: dict[str, EnvSpec] = {}
"""The registered environments by name."""


def register_env(spec: EnvSpec, *, replace: bool = False) -> EnvSpec:
    """Add ``spec`` to :data:`ENVS`; a name already registered is refused unless ``replace``, and so are options that
    are not a dataclass of defaulted, documented fields, or that differ from those of another env in the same
    section."""
    if not isinstance(spec, EnvSpec):
        raise TypeError(f"register_env takes an EnvSpec, got {type(spec).__name__}")
    if spec.name in ENVS and not replace and ENVS[spec.name] is not spec:
        raise ValueError(f"environment {spec.name!r} is already registered")
    if spec.options is not None:
        _check_options(spec)
    ENVS[spec.name] = spec
    return spec


def _check_options(spec: EnvSpec) -> None:
    """ValueError unless ``spec.options`` is a dataclass whose every field has a default and help text, and no other
    env (but one ``spec`` replaces) keeps other options in its section."""
    cls, where = spec.options, f"environment {spec.name!r}: options"
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{where} must be a dataclass, got {cls!r}")
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where} field {f.name!r} has no default (every option needs one)")
        if not str(f.metadata.get("help", "")).strip():
            raise ValueError(f"{where} field {f.name!r} is undocumented (declare it with supo.fields.F)")
    other = next((o for o in ENVS.values() if o.section == spec.section and o.name != spec.name), None)
    if other is not None and other.options is not cls:
        raise ValueError(f"{where} {cls.__name__} conflict with {other.options.__name__} of environment "
                         f"{other.name!r} in section {spec.section!r}")


def option_sections() -> dict[str, type]:
    """Every params.yaml section holding env options, and its options dataclass (registration order)."""
    return {spec.section: spec.options for spec in ENVS.values() if spec.options is not None}


def get_env_spec(name: str) -> EnvSpec:
    """The registered environment ``name``; ValueError naming the choices otherwise."""
    try:
        return ENVS[name]
    except KeyError:
        raise ValueError(f"unknown environment {name!r}; choose one of {', '.join(ENVS)}") from None
