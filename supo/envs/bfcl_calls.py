"""BFCL v4 multi-turn (``supo.envs.bfcl``): the adapter's calls — parsing a model message into checked calls, the
call strings BFCL's checker reads, observations of backend results, and the ground truth replayed as calls.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
from typing import Any

from supo.envs.base import CALL_RE, MAX_JSON_DEPTH, ToolCall, ToolCallError, load_json, too_deep
from supo.envs.bfcl_data import (
    END_OF_TURN,
    MAX_ACTION_CHARS,
    MAX_CALLS_PER_MESSAGE,
    MAXIMUM_STEP_LIMIT,
    backend_class,
    entry_of,
)
from supo.models import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from supo.types import Task

# ----------------------------------------------------------------------------------------------------------------------
# calls


def _check_call(obj: Any) -> ToolCall:
    if not isinstance(obj, dict):
        raise ToolCallError("tool call must be a JSON object with keys name and parameters")
    if too_deep(obj, MAX_JSON_DEPTH + 2):
        raise ToolCallError(f"tool call nests deeper than {MAX_JSON_DEPTH + 2} levels")
    extra = set(obj) - {"name", "parameters"}
    if extra:
        raise ToolCallError(f"unexpected keys {sorted(extra)} in the tool call; use name and parameters")
    name, params = obj.get("name"), obj.get("parameters", {})
    if not isinstance(name, str) or not name:
        raise ToolCallError("tool call lacks a string 'name'")
    if not isinstance(params, dict):
        raise ToolCallError("'parameters' must be a JSON object")
    return ToolCall(name=name, parameters=params)


def parse_calls(text: str) -> list[ToolCall]:
    """Every ``<tool_call>{...}</tool_call>`` of a message (BFCL allows parallel calls; at most
    :data:`MAX_CALLS_PER_MESSAGE`), parsed as strictly as :func:`~supo.envs.base.parse_tool_call` but with a longer
    length limit (BFCL's calls carry whole file contents). One malformed call rejects the whole message."""
    if len(text) > MAX_ACTION_CHARS:
        raise ToolCallError(f"action is {len(text)} characters long; the limit is {MAX_ACTION_CHARS}")
    bodies = CALL_RE.findall(text)
    if not bodies:
        raise ToolCallError("no <tool_call>...</tool_call> found in the response")
    if len(bodies) > MAX_CALLS_PER_MESSAGE:
        raise ToolCallError(f"{len(bodies)} tool calls in one message; the limit is {MAX_CALLS_PER_MESSAGE}")
    calls = []
    for k, body in enumerate(bodies):
        obj = load_json(body.strip(), f"tool call {k + 1}")  # a key given twice is refused, never last-wins
        calls.append(_check_call(obj))
    return calls


def finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return True


def call_text(name: str, params: dict[str, Any]) -> str:
    """supo's tool-call text for a call (a parameter may itself be called ``name``)."""
    return f"{TOOL_CALL_OPEN}{json.dumps({'name': name, 'parameters': params})}{TOOL_CALL_CLOSE}"


def call_string(name: str, params: dict[str, Any]) -> str:
    """The BFCL decoded form ``name(k=v, ...)`` of a validated call (values are JSON literals, rendered by repr)."""
    return f"{name}(" + ",".join(f"{k}={v!r}" for k, v in params.items()) + ")"


def render_result(result: Any) -> str:
    """A backend result as BFCL's executor renders it."""
    if type(result) is str:
        return result
    if type(result) is dict:
        try:
            return json.dumps(result)
        except (TypeError, ValueError):
            return str(result)
    return str(result)


IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _method_table(involved: list[str]) -> dict[str, tuple[str, Any]]:
    """method name → (class name, function) over the involved classes; a later class wins, as in BFCL."""
    table: dict[str, tuple[str, Any]] = {}
    for c in involved:
        cls = backend_class(c)
        for name, fn in inspect.getmembers(cls, predicate=inspect.isfunction):
            if not name.startswith("_"):
                table[name] = (c, fn)
    return table


def ground_truth_call(call: str, table: dict[str, tuple[str, Any]]) -> tuple[str, dict[str, Any]]:
    """``"mv(source='a', destination='b')"`` → ``("mv", {...})``; positional arguments named by the signature."""
    node = ast.parse(call, mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {call[:80]!r}")
    name = node.func.id
    params: dict[str, Any] = {}
    if node.args:
        sig_names = [p for p in inspect.signature(table[name][1]).parameters if p != "self"]
        for p, a in zip(sig_names, node.args):
            params[p] = ast.literal_eval(a)
    for kw in node.keywords:
        params[kw.arg] = ast.literal_eval(kw.value)
    return name, params


def ground_truth_actions(task: Task) -> list[list[str]]:
    """Per turn: the ground-truth calls as supo tool-call messages, then an end-of-turn message (no call).

    One call per message, except in a turn with more calls than BFCL's step limit (two entries have 34), where calls
    are grouped into parallel-call messages, as a BFCL model would have to.
    """
    entry = entry_of(task)
    table = _method_table(entry["involved_classes"])
    turns = []
    for gt_turn in entry["ground_truth"]:
        texts = [call_text(*ground_truth_call(s, table)) for s in gt_turn]
        per = max(1, -(-len(texts) // MAXIMUM_STEP_LIMIT))
        turns.append(["".join(texts[i:i + per]) for i in range(0, len(texts), per)] + [END_OF_TURN])
    return turns
