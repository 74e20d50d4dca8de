"""The env-option sections of the run configuration, built from the env registry (``supo.envs.option_sections``).

Every registered environment with options (``EnvSpec.options``) has them in the params.yaml section its spec names
(``EnvSpec.section``): ``search``, ``funcall``, ``files`` (shared by the file-backed envs), a plugin env's own. The
array env keeps its options in ``env``, beside ``env.name`` (as the params files of before do); ``env.name`` — which
environment a run uses — is the run configuration's own field (:class:`~supo.config.schema.EnvConfig`), no env's
option. :class:`EnvSections` holds one config's options by section; :func:`option_classes` refuses an env whose
section (or, in ``env``, a field) is one of the run configuration's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from supo.envs import ENVS, option_sections
from supo.errors import ConfigError

ENV_SECTION = "env"
"""The run configuration's section naming the environment (``env.name``), where the array env keeps its options."""


def option_classes(own_sections: Collection[str], env_fields: Collection[str]) -> dict[str, type]:
    """The env-option sections and their dataclasses (the registry's, in registration order). A ConfigError names an
    env whose section is one of ``own_sections`` (the run configuration's), or whose options in ``env`` take one of
    ``env_fields`` (``name``)."""
    for spec in ENVS.values():
        section = spec.section
        if spec.options is None:
            continue
        if section in own_sections:
            raise ConfigError(f"{section}: a section of the run configuration; environment {spec.name!r} must keep "
                              "its options in another (EnvSpec.section)")
        taken = sorted(set(env_fields) & {f.name for f in dataclasses.fields(spec.options)})
        if section == ENV_SECTION and taken:
            raise ConfigError(f"{ENV_SECTION}.{taken[0]}: a field of the run configuration; environment {spec.name!r} "
                              f"keeps an option of that name in `{ENV_SECTION}`")
    return option_sections()


@dataclasses.dataclass(init=False, repr=False, eq=False)
class EnvSections(Mapping[str, Any]):
    """One run config's env options by params.yaml section (an options dataclass per section).

    A dataclass without fields: a walker of the config tree (``dataclasses.fields``, as tests/test_dvc_params.py's
    read recorder is) takes it for a section to enter, never for a value it reads. Pickled as plain values and
    rebuilt, on first use, with the registry's dataclass for the section: a process that receives a config (a Ray
    actor) needs a plugin env's options class only once it has loaded its plugins (``supo.plugins.load_plugins``),
    not to unpickle the config.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._items: dict[str, Any] = dict(options)  # a plain dict: not rebuilt yet

    @classmethod
    def defaults(cls, classes: Mapping[str, type]) -> EnvSections:
        """Every section at its defaults."""
        return cls({section: options() for section, options in classes.items()})

    def __getitem__(self, section: str) -> Any:
        value = self._items[section]
        if isinstance(value, dict):
            classes = option_sections()
            if section not in classes:
                raise ConfigError(f"{section}: no registered environment keeps its options here (is its plugin, "
                                  "train.plugins, loaded in this process?)")
            value = self._items[section] = classes[section](**value)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, section: object) -> bool:
        return section in self._items

    def plain(self) -> dict[str, dict[str, Any]]:
        """Every section's values as plain data (nothing rebuilt)."""
        return {s: dict(v) if isinstance(v, dict) else dataclasses.asdict(v) for s, v in self._items.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnvSections) and self.plain() == other.plain()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclasses it holds

    def __getstate__(self) -> dict[str, Any]:
        return self.plain()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._items = dict(state)

    def __repr__(self) -> str:
        return f"EnvSections({self._items!r})"
