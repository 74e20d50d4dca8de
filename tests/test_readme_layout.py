"""README's "Layout" section matches the tree: every path it names exists, and every module and package of ``supo/``
and every command module of ``cli/`` is named (a package by its folder, a module by its file or in a ``{a,b}.py``
group)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def layout_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def named_paths(block: str) -> set[str]:
    out = set()
    for token in re.findall(r"(?:supo|cli|bench|tests|scripts|profiles)/[\w/{},.]*", block):
        group = re.match(r"(.*)\{([^}]*)\}(.*)", token)
        if group:
            head, names, tail = group.groups()
            out.update(f"{head}{n}{tail}" for n in names.split(","))
        else:
            out.add(token.rstrip(".,"))
    return out


def test_every_path_the_layout_names_exists():
    names = named_paths(layout_block())
    assert "supo/results.py" in names and "supo/envs/" in names
    missing = sorted(n for n in names if not (REPO / n).exists())
    assert not missing, missing


def test_every_module_and_package_is_in_the_layout():
    names = named_paths(layout_block())
    wanted = {f"supo/{p.name}" + ("/" if p.is_dir() else "") for p in (REPO / "supo").iterdir()
              if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())}
    wanted |= {"cli/main.py"}
    assert not sorted(wanted - names), sorted(wanted - names)
