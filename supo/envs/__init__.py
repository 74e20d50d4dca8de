"""Environments (docs/design.md §5): the registry :data:`ENVS` of :class:`~supo.envs.spec.EnvSpec` by name.

Each env module declares its spec — its options (a documented dataclass with ``validate()``), what it requires when
selected, the files it reads, its split builder, env factory, scripted expert, tokenizer corpus and task-row check —
and this package registers the built-in ones. A plugin module (``train.plugins``) registers more with
:func:`register_env`; the run configuration's env-option sections are built from the registry
(:func:`option_sections`).
"""

from __future__ import annotations

from supo.envs import array, bfcl, browsecomp, codegym, funcall, search
from supo.envs.spec import ENVS, EnvSpec, get_env_spec, option_sections, register_env

for _module in (array, search, codegym, browsecomp, bfcl, funcall):
    register_env(_module.SPEC)

__all__ = ["ENVS", "EnvSpec", "get_env_spec", "option_sections", "register_env"]
