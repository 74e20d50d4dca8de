"""supo.errors: the input errors every layer raises, and require()."""

from __future__ import annotations

import pytest

from supo.errors import ConfigError, DataError, require


def test_require_names_the_field():
    require(True, "train.lr", "never raised")
    with pytest.raises(ConfigError, match=r"^train\.lr: must be > 0, got 0$"):
        require(False, "train.lr", "must be > 0, got 0")


def test_the_errors_are_the_ones_the_config_package_exports():
    import supo.config

    assert supo.config.ConfigError is ConfigError
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
