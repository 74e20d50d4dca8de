"""The import graph of ``supo/`` and ``cli/`` has no cycle, and the layering it encodes holds: every import counts,
at module level or inside a function (a deferred import is still a dependency). An edge goes to the module an import
names (``from supo.envs.base import X`` -> ``supo.envs.base``; ``from supo.envs import array`` -> ``supo.envs.array``),
not to the packages above it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("supo", "cli")


def modules() -> dict[str, Path]:
    out = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                resolved = resolve(target)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def reaches(graph: dict[str, set[str]], start: str, prefix: str) -> list[str]:
    """The modules under ``prefix`` that ``start`` imports, directly or not."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return sorted(m for m in seen if m == prefix or m.startswith(prefix + "."))


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the packages
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def under(graph: dict[str, set[str]], prefix: str) -> list[str]:
    """The modules of ``graph`` that are ``prefix`` or below it."""
    return sorted(m for m in graph if m == prefix or m.startswith(prefix + "."))


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each broken rule of the layering, as "module -> what it must not reach"."""
    never = [("supo.envs", "supo.config"),  # envs take their options, not the run config
             ("supo.engines", "supo.rollout"),  # engines implement supo.contracts, never import the loop's package
             ("supo.synth", "supo.config"), ("supo.synth", "supo.rollout"),  # synthesis sits below envs
             ("supo.rollout.segments", "supo.rollout.agent_loop")]
    for low in ("supo.errors", "supo.fields", "supo.types", "supo.results", "supo.layout", "supo.contracts"):
        never += [(low, "supo.config"), (low, "cli")]
    never += [(m, "cli") for m in under(graph, "supo")]
    return [f"{m} -> {', '.join(hit)}" for low, high in never for m in under(graph, low)
            if (hit := reaches(graph, m, high))]


def test_layers():
    assert layer_violations(import_graph()) == []


def test_the_layer_rules_catch_a_violation():
    for src, dst in [("supo.engines.vllm_engine", "supo.rollout.agent_loop"), ("supo.synth.tasks", "supo.config"),
                     ("supo.synth.phases", "supo.rollout.templates"), ("supo.envs.array", "supo.config.load"),
                     ("supo.types", "cli.app")]:
        graph = import_graph()
        graph[src].add(dst)
        assert [v for v in layer_violations(graph) if v.startswith(src + " ->")], (src, dst)
