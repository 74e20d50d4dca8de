"""Documented config fields: every field of a config dataclass carries its meaning in ``metadata["help"]``.

The run configuration (``supo.config``) and each environment's options (``supo.envs.*``) declare their fields with
:func:`F`; ``supo-cli config --docs`` prints the help of every field (``supo.config.describe``).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def F(default: Any, help: str) -> Any:  # noqa: A002 - "help" reads best at the call sites
    """A dataclass field with ``default`` (lists and dicts copied per instance) and its ``help`` text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})
