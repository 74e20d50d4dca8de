"""supo.errors: the input errors every layer raises, re-exported where they used to live, and require()."""

from __future__ import annotations

import pytest

from supo.errors import ConfigError, DataError, require


def test_require_names_the_field():
    require(True, "train.lr", "never raised")
    with pytest.raises(ConfigError, match=r"^train\.lr: must be > 0, got 0$"):
        require(False, "train.lr", "must be > 0, got 0")


def test_the_errors_are_the_ones_the_config_and_data_modules_export():
    import supo.config
    import supo.data

    assert supo.config.ConfigError is ConfigError and supo.data.DataError is DataError
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
