"""The input errors every layer raises: bad configuration and bad data, each one line naming the field or file.

The CLI turns both into ``error: <message>`` and exit code 2 (``cli.app.clean_errors``). They live here, below every
other module, so that the config, the environments and the data readers can raise them without importing each other
(``supo.config`` exports :class:`ConfigError` with the config).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is out of range, of the wrong type, unknown, or inconsistent with another."""


class DataError(ValueError):
    """A data file is missing or malformed."""


def require(cond: bool, where: str, msg: str) -> None:
    """Raise :class:`ConfigError` ``"<where>: <msg>"`` unless ``cond`` (``where``: the dotted field, e.g.
    ``search.top_k``)."""
    if not cond:
        raise ConfigError(f"{where}: {msg}")
