"""Registries that work across processes: ``train.plugins`` modules imported in every process that reads a registry.

A plugin is an importable module that registers variants when it is imported — a policy loss
(``supo.algo.loss.register_policy_loss``), an advantage estimator (``supo.algo.advantage.register_advantage``), a
loss aggregation (``supo.algo.objective.register_aggregation``), an overlong treatment, an environment
(``supo.envs.register_env``). ``train.plugins: [mypkg.losses]`` names them. The driver imports them when the config
loads (so ``train.policy_loss: my-loss`` validates); trainer ranks and rollout workers are Ray actors, separate
processes, and import them again when they start (or are reset for a new run) from the :class:`PluginRef` list the
driver hands them: each module's name and the folder it was found in, put on the actor's ``sys.path`` when the
module is not importable there already (a module of the working directory, or one the driver found on a
``PYTHONPATH`` the actors do not share).

A module the driver cannot import is a :class:`~supo.errors.ConfigError` naming ``train.plugins`` and the module;
the current working directory is searched too (as ``python -m`` would).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from supo.errors import ConfigError

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
LOADED: list[str] = []
"""The plugin modules imported by :func:`import_plugins` / :func:`load_plugins` in this process, in order."""


class PluginRef(NamedTuple):
    """A plugin module and the ``sys.path`` folder it was imported from (None: importable from anywhere)."""

    module: str
    root: str | None


def _root_of(name: str) -> str | None:
    """The folder holding ``name``'s top-level package or module (what must be on ``sys.path``), if it is a file."""
    top = sys.modules.get(name.split(".")[0])
    where = getattr(top, "__file__", None)
    if where is None:
        paths = list(getattr(top, "__path__", []) or [])
        return str(Path(paths[0]).parent) if paths else None
    path = Path(where)
    return str(path.parent.parent if path.name == "__init__.py" else path.parent)


def import_plugins(modules: Iterable[str], where: str = "train.plugins") -> list[PluginRef]:
    """Import each module here (the working directory searched as well); their refs for other processes. A name that
    is not a module path, or a module that fails to import, is a ConfigError naming ``where`` and the module."""
    refs = []
    for name in modules:
        if not isinstance(name, str) or not _MODULE.match(name):
            raise ConfigError(f"{where}: {name!r} is not a module name (e.g. mypkg.losses)")
        if not _try_import(name, where):
            cwd = os.getcwd()
            if cwd in sys.path:
                raise ConfigError(f"{where}: no module {name} (not installed, not on PYTHONPATH, not in {cwd})")
            sys.path.append(cwd)  # as `python -m` would find it
            if not _try_import(name, where):
                sys.path.remove(cwd)
                raise ConfigError(f"{where}: no module {name} (not installed, not on PYTHONPATH, not in {cwd})")
        refs.append(PluginRef(name, _root_of(name)))
    return refs


def load_plugins(refs: Sequence[PluginRef | tuple[str, str | None]]) -> list[str]:
    """Import the plugins ``refs`` name in this process (an actor), their folders put on ``sys.path`` when needed;
    the modules imported."""
    names = []
    for name, root in refs:
        if root is not None and root not in sys.path and not _findable(name):
            sys.path.append(root)
        _import(name)
        names.append(name)
    return names


def _try_import(name: str, where: str) -> bool:
    """Import ``name``; False when its top-level package is not found (any other failure is a ConfigError)."""
    try:
        _import(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            return False  # the plugin itself (or its package) is not there; a dependency it lacks is its error
        raise ConfigError(f"{where}: importing {name} failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - a plugin's own error, reported with its module
        raise ConfigError(f"{where}: importing {name} failed: {e.__class__.__name__}: {e}") from None
    return True


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def _import(name: str) -> None:
    importlib.import_module(name)
    if name not in LOADED:
        LOADED.append(name)
