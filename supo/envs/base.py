"""The environment protocol (CodeGym-compatible) and a strict tool-call parser.

An environment is ``reset() -> observation`` and ``step(action_text) -> (observation, done, reward, info)``. A malformed
or unknown call returns an ``Error: ...`` observation and the episode goes on — ``step`` never raises.

Tool calls are JSON ``{"name": ..., "parameters": {...}}`` inside ``<tool_call>...</tool_call>``, parsed with
``json.loads`` (never ``eval``), size- and depth-limited.

Tools form an API graph: a tool is callable once all of its prerequisites have run (FunReason-MT's legality check).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from supo.models import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

MAX_ACTION_CHARS = 4096
MAX_JSON_DEPTH = 4
CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.S)


@dataclass(frozen=True)
class ToolCall:
    name: str
    parameters: dict[str, Any]


class ToolCallError(ValueError):
    """A tool call that cannot be parsed; its message becomes the ``Error:`` observation."""


def too_deep(obj: Any, limit: int) -> bool:
    """True when containers nest deeper than ``limit`` (iterative: no recursion limit to hit)."""
    stack = [(obj, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            if level + 1 > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, level + 1) for c in children)
    return False


def parse_tool_call(text: str) -> ToolCall:
    """Extract exactly one tool call from an action text, or raise :class:`ToolCallError` saying what is wrong."""
    check_action_length(text)
    calls = CALL_RE.findall(text)
    if not calls:
        raise ToolCallError(f"no {TOOL_CALL_OPEN}...{TOOL_CALL_CLOSE} found in the response")
    if len(calls) > 1:
        raise ToolCallError(f"{len(calls)} tool calls in one turn; make exactly one")
    return call_from_json(calls[0].strip())


def check_action_length(text: str) -> None:
    """Raise :class:`ToolCallError` when an action is longer than :data:`MAX_ACTION_CHARS`."""
    if len(text) > MAX_ACTION_CHARS:
        raise ToolCallError(f"action is {len(text)} characters long; the limit is {MAX_ACTION_CHARS}")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: an object that names a key twice is refused (``json.loads`` would keep the last one,
    so ``{"name": "Add", "name": "Done"}`` would silently call Done)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def load_json(body: str, what: str = "tool call") -> Any:
    """``json.loads`` of a call's body (never ``eval``); a parse failure or a key given twice in one object is a
    :class:`ToolCallError`."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise ToolCallError(f"{what} gives the key {str(e.args[0])[:40]!r} twice in one object; give each key once"
                            ) from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ToolCallError(f"{what} is not valid JSON ({e.__class__.__name__}: {str(e)[:80]})") from None


def call_from_json(body: str, params_keys: tuple[str, ...] = ("parameters",)) -> ToolCall:
    """One call from the JSON text of an object with ``name`` and one of ``params_keys`` (the parameters object)."""
    return call_from_object(load_json(body), params_keys)


def call_from_object(obj: Any, params_keys: tuple[str, ...] = ("parameters",)) -> ToolCall:
    """One call from a decoded JSON object with ``name`` and at most one of ``params_keys``, checked strictly (an
    object, depth-limited, no other keys, a string name, an object of parameters)."""
    keys = " and ".join(["name", "/".join(params_keys)])
    if not isinstance(obj, dict):
        raise ToolCallError(f"tool call must be a JSON object with keys {keys}")
    if too_deep(obj, MAX_JSON_DEPTH):
        raise ToolCallError(f"tool call nests deeper than {MAX_JSON_DEPTH} levels")
    extra = set(obj) - {"name", *params_keys}
    if extra:
        raise ToolCallError(f"unexpected keys {sorted(extra)} in the tool call; use {keys}")
    given = [k for k in params_keys if k in obj]
    if len(given) > 1:
        raise ToolCallError(f"the tool call gives both {given[0]!r} and {given[1]!r}; give one")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ToolCallError("tool call lacks a string 'name'")
    params = obj.get(given[0], {}) if given else {}
    if not isinstance(params, dict):
        raise ToolCallError(f"'{given[0]}' must be a JSON object")
    return ToolCall(name=name, parameters=params)


def format_tool_call(name: str, **parameters: Any) -> str:
    """The canonical text of a tool call (what the expert writes)."""
    return f"{TOOL_CALL_OPEN}{json.dumps({'name': name, 'parameters': parameters})}{TOOL_CALL_CLOSE}"


@dataclass
class Tool:
    """One callable tool: its parameters (name → python type), prerequisites and implementation."""

    name: str
    doc: str
    params: dict[str, type] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    fn: Callable[..., str] | None = None
    final: bool = False  # calling it ends the episode

    def signature(self) -> str:
        args = ", ".join(f"{k}: {t.__name__}" for k, t in self.params.items())
        return f"{self.name}({args})"


class ToolEnv:
    """Base class: dispatches parsed tool calls to :class:`Tool` s, enforcing types and the API graph.

    Subclasses set ``self.tools`` in ``__init__`` and implement ``_answer_reward(answer) -> float``.
    """

    tools: dict[str, Tool]

    def __init__(self) -> None:
        self.called: set[str] = set()
        self.done = False
        self.reward = 0.0
        self.steps = 0

    def reset(self) -> str:
        self.called = set()
        self.done = False
        self.reward = 0.0
        self.steps = 0
        return "ready"

    def _check_params(self, tool: Tool, params: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in tool.params if k not in params]
        if missing:
            raise ToolCallError(f"{tool.name} is missing parameter(s) {missing}; signature {tool.signature()}")
        unknown = [k for k in params if k not in tool.params]
        if unknown:
            raise ToolCallError(f"{tool.name} got unknown parameter(s) {unknown}; signature {tool.signature()}")
        out = {}
        for k, typ in tool.params.items():
            v = params[k]
            if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise ToolCallError(f"{tool.name}: parameter {k} must be an integer, got {type(v).__name__}")
            if typ is str and not isinstance(v, str):
                raise ToolCallError(f"{tool.name}: parameter {k} must be a string, got {type(v).__name__}")
            if typ is str and len(v) > 256:
                raise ToolCallError(f"{tool.name}: parameter {k} is {len(v)} characters long; the limit is 256")
            out[k] = v
        return out

    def step(self, action_text: str) -> tuple[str, bool, float, dict[str, Any]]:
        """Apply one action. Never raises: every problem becomes an ``Error:`` observation."""
        self.steps += 1
        tool: Tool | None = None
        if self.done:
            return "Error: the episode is over", True, self.reward, {"error": "done"}
        try:
            call = parse_tool_call(action_text)
            tool = self.tools.get(call.name)
            if tool is None:
                raise ToolCallError(f"unknown tool {call.name[:40]!r}; available: {', '.join(self.tools)}")
            missing = [r for r in tool.requires if r not in self.called]
            if missing:
                raise ToolCallError(f"{tool.name} requires {', '.join(missing)} to be called first")
            args = self._check_params(tool, call.parameters)
            obs = tool.fn(**args) if tool.fn is not None else ""
        except ToolCallError as e:
            return f"Error: {e}", False, 0.0, {"error": str(e)}
        except Exception as e:  # an exception inside a tool is the tool's failure, not the episode's
            where = tool.name if tool is not None else "the tool call"
            return f"Error: {where} failed: {e.__class__.__name__}: {str(e)[:120]}", False, 0.0, {"error": repr(e)}
        self.called.add(tool.name)
        if tool.final:
            self.done = True
            return obs, True, self.reward, {"tool": tool.name}
        return obs, False, 0.0, {"tool": tool.name}

    def tool_specs(self) -> str:
        lines = []
        for t in self.tools.values():
            req = f" Requires {', '.join(t.requires)}." if t.requires else ""
            lines.append(f"- {t.signature()}: {t.doc}.{req}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# env_config checks (each env's ``validate_env_config`` runs them on every task row when a split is read)


def is_int(value: Any) -> bool:
    """An integer that is not a bool (JSON ``true`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_str_list(value: Any, min_len: int = 0) -> bool:
    """A list of at least ``min_len`` strings."""
    return isinstance(value, list) and len(value) >= min_len and all(isinstance(v, str) for v in value)


def check_env_field(cfg: dict[str, Any], name: str, ok: Callable[[Any], bool], expected: str,
                    required: bool = True) -> None:
    """Raise ``ValueError("env_config.<name>: ...")`` when the field is missing (and ``required``) or ``ok(value)`` is
    false; ``expected`` says what the field must be."""
    if name not in cfg:
        if required:
            raise ValueError(f"env_config.{name}: missing ({expected} expected)")
        return
    value = cfg[name]
    try:
        good = bool(ok(value))
    except (TypeError, ValueError):
        good = False
    if not good:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ValueError(f"env_config.{name}: expected {expected}, got {shown}")
