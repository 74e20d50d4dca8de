"""A tiny named registry, the way algorithm variants (advantage estimators, policy losses) plug in."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def registrar(table: dict[str, Callable], kind: str) -> Callable[[str], Callable[[F], F]]:
    """A ``@register(name)`` decorator that adds functions to ``table`` and refuses duplicate names."""

    def register(name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in table:
                raise ValueError(f"{kind} {name!r} is already registered")
            table[name] = fn
            return fn

        return deco

    return register
