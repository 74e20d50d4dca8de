"""Hide installed packages from this Python process, as if they were not installed.

Put this folder on ``PYTHONPATH`` and list top-level package names in ``SUPO_HIDE_MODULES`` (comma-separated, e.g.
``mlflow,ray``): importing one of them, or any of its submodules, raises ``ModuleNotFoundError("No module named
'<name>' (hidden by SUPO_HIDE_MODULES)")``, and ``importlib.util.find_spec`` answers None for them, as it does for a
package that is absent. Without the variable (or with it empty) nothing changes.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

_ENV_VAR = "SUPO_HIDE_MODULES"


def _hidden_names() -> frozenset[str]:
    """The top-level names listed in ``SUPO_HIDE_MODULES``."""
    return frozenset(n.strip() for n in os.environ.get(_ENV_VAR, "").split(",") if n.strip())


class HidingFinder:
    """A ``sys.meta_path`` finder that refuses the hidden packages and their submodules."""

    def __init__(self, names: frozenset[str]) -> None:
        """Hide the top-level packages ``names``."""
        self.names = names

    def hides(self, fullname: str) -> bool:
        """True when ``fullname`` is a hidden package or one of its submodules."""
        return fullname.split(".", 1)[0] in self.names

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        """Raise ModuleNotFoundError for a hidden module; None (ask the next finder) for any other."""
        if self.hides(fullname):
            raise ModuleNotFoundError(f"No module named '{fullname}' (hidden by {_ENV_VAR})", name=fullname)
        return None


def _install(names: frozenset[str]) -> None:
    """Put the finder first on ``sys.meta_path`` and make ``importlib.util.find_spec`` answer None for hidden names."""
    finder = HidingFinder(names)
    sys.meta_path.insert(0, finder)
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        """``importlib.util.find_spec``, answering None for a hidden module (what it does for an absent one)."""
        fullname = importlib.util.resolve_name(name, package) if name.startswith(".") else name
        if finder.hides(fullname):
            return None
        return real_find_spec(name, package)

    importlib.util.find_spec = find_spec


if _hidden_names():
    _install(_hidden_names())
