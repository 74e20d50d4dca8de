"""supo.fields.F: a documented dataclass field whose list or dict default is a fresh copy per instance."""

from __future__ import annotations

import dataclasses

from supo.fields import F


@dataclasses.dataclass
class Options:
    names: list[str] = F(["a"], "the names")
    size: int = F(3, "the size")


def test_defaults_are_copied_and_documented():
    a, b = Options(), Options()
    a.names.append("b")
    assert b.names == ["a"] and a.size == 3
    assert {f.name: f.metadata["help"] for f in dataclasses.fields(Options)} == {"names": "the names",
                                                                                 "size": "the size"}
