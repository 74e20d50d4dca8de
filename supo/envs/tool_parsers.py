"""Tool-call formats: how a model writes a call, behind a registry (``model.tool_parser``).

Environments speak one format, supo's own ``<tool_call>{"name": ..., "parameters": {...}}</tool_call>``
(:func:`supo.envs.base.parse_tool_call`). A model trained elsewhere has its own habits; a :class:`ToolParser` reads a
call in the model's format and hands the environment the same call in supo's format, writes the scripted expert's
calls in the model's format (so the warm start teaches it), and rewrites the format example of the task prompts.

Registered formats (``TOOL_PARSERS``):

* ``tags`` (default) — ``<tool_call>{"name": NAME, "parameters": {...}}</tool_call>``, supo's own; the action text goes
  to the environment unchanged (some environments read more than one syntax: CodeGym's, BFCL's parallel calls);
* ``hermes`` — ``<tool_call>{"name": NAME, "arguments": {...}}</tool_call>`` (Hermes / Qwen2.5 style);
* ``json`` — a bare JSON object ``{"name": NAME, "parameters": {...}}`` (Llama-3.x JSON tool calling);
* ``tags-list`` — ``<tool_call>[{"name": NAME, "arguments": {...}}]</tool_call>``, a list of one call in tags (the
  function-calling format of SmolLM2's instruct data).

Every format is parsed as strictly as the default one (``json.loads``, never ``eval``; size- and depth-limited; one
call per turn; ``arguments`` and ``parameters`` are both accepted where the format names either). An action that
holds no call in the format at all (no ``<tool_call>`` tag; for ``json`` no ``{``) and gets an ``Error:`` observation
is a *format miss*: the loop counts it (``tool_call_format_miss_rate``) and the rollout goes on, as after any malformed
call — never a crash. (With ``tags`` the environment reads the text itself: a syntax it accepts besides supo's, such
as CodeGym's, is no miss.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supo.envs.base import (CALL_RE, ToolCall, ToolCallError, call_from_json, call_from_object, check_action_length,
                            load_json, parse_tool_call)
from supo.models import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

DEFAULT_TOOL_PARSER = "tags"
# the format example every procedural env's system prompt carries (array, funcall, search, bfcl, browsecomp)
CANONICAL_EXAMPLE = '<tool_call>{"name": NAME, "parameters": {...}}</tool_call>'
_ARGS = ("arguments", "parameters")


def canonical_text(call: ToolCall) -> str:
    """The call in supo's format, what every environment parses (a parameter may itself be called ``name``; a
    ``</`` inside a string is written ``<\\/``, the same JSON string, so it cannot close the tag)."""
    return f"{TOOL_CALL_OPEN}{_dumps({'name': call.name, 'parameters': call.parameters})}{TOOL_CALL_CLOSE}"


@dataclass(frozen=True)
class Action:
    """A sampled action read through a parser: ``env_text`` goes to the environment (None when the call does not
    parse: ``error`` says why and becomes the ``Error:`` observation); ``format_miss`` when it holds no call in the
    format at all."""

    env_text: str | None
    error: str | None
    format_miss: bool


@dataclass(frozen=True)
class ToolParser:
    """One tool-call format: ``parse`` (text → one call, or :class:`ToolCallError`), ``render`` (call → text),
    ``attempted`` (does the text try the format at all), and ``example`` (the format as a prompt shows it)."""

    name: str
    example: str
    parse: Callable[[str], ToolCall]
    render: Callable[[ToolCall], str]
    attempted: Callable[[str], bool]

    def read(self, text: str) -> Action:
        """The environment's view of a sampled action (see :class:`Action`)."""
        miss = not self.attempted(text)
        if self.name == DEFAULT_TOOL_PARSER:  # supo's own format: the env parses the text itself
            return Action(text, None, miss)
        try:
            call = self.parse(text)
        except ToolCallError as e:
            return Action(None, str(e), miss)
        return Action(canonical_text(call), None, miss)

    def from_canonical(self, text: str) -> str:
        """A call written in supo's format (the scripted experts' output) rewritten in this format; text that holds
        no valid call is returned as is."""
        if self.name == DEFAULT_TOOL_PARSER:
            return text
        try:
            return self.render(parse_tool_call(text))
        except ToolCallError:
            return text

    def rewrite_prompt(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The task's chat messages with supo's format example (:data:`CANONICAL_EXAMPLE`) replaced by this
        format's; the same list when nothing changes."""
        if self.example == CANONICAL_EXAMPLE or not any(CANONICAL_EXAMPLE in m.get("content", "") for m in messages):
            return messages
        return [{**m, "content": m["content"].replace(CANONICAL_EXAMPLE, self.example)} for m in messages]


def _tag_bodies(text: str) -> list[str]:
    check_action_length(text)
    bodies = CALL_RE.findall(text)
    if not bodies:
        raise ToolCallError(f"no {TOOL_CALL_OPEN}...{TOOL_CALL_CLOSE} found in the response")
    if len(bodies) > 1:
        raise ToolCallError(f"{len(bodies)} tool calls in one turn; make exactly one")
    return bodies


def _parse_hermes(text: str) -> ToolCall:
    return call_from_json(_tag_bodies(text)[0].strip(), _ARGS)


def _parse_tags_list(text: str) -> ToolCall:
    obj = load_json(_tag_bodies(text)[0].strip())
    if not isinstance(obj, list):
        raise ToolCallError('the tool call must be a JSON list holding one call: [{"name": ..., "arguments": {...}}]')
    if len(obj) != 1:
        raise ToolCallError(f"the call list holds {len(obj)} calls; make exactly one per turn")
    return call_from_object(obj[0], _ARGS)


def _parse_json(text: str) -> ToolCall:
    check_action_length(text)
    start = text.find("{")
    if start < 0:
        raise ToolCallError('no JSON object {"name": ..., "parameters": {...}} found in the response')
    decoder = json.JSONDecoder()
    try:
        obj, end = decoder.raw_decode(text, start)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ToolCallError(f"tool call is not valid JSON ({e.__class__.__name__}: {str(e)[:80]})") from None
    rest = text.find("{", end)
    if rest >= 0:
        try:
            decoder.raw_decode(text, rest)
        except (json.JSONDecodeError, RecursionError):
            pass
        else:
            raise ToolCallError("2 tool calls in one turn; make exactly one")
    return call_from_object(obj, _ARGS[::-1])


def _dumps(obj: Any) -> str:
    """JSON for inside tags: ``</`` written ``<\\/`` (the same string), so a value cannot close the tag."""
    return json.dumps(obj).replace("</", "<\\/")


TOOL_PARSERS: dict[str, ToolParser] = {
    "tags": ToolParser(
        "tags", CANONICAL_EXAMPLE, parse_tool_call, canonical_text, lambda t: TOOL_CALL_OPEN in t),
    "hermes": ToolParser(
        "hermes", '<tool_call>{"name": NAME, "arguments": {...}}</tool_call>', _parse_hermes,
        lambda c: f"{TOOL_CALL_OPEN}{_dumps({'name': c.name, 'arguments': c.parameters})}{TOOL_CALL_CLOSE}",
        lambda t: TOOL_CALL_OPEN in t),
    "json": ToolParser(
        "json", '{"name": NAME, "parameters": {...}}', _parse_json,
        lambda c: json.dumps({"name": c.name, "parameters": c.parameters}), lambda t: "{" in t),
    "tags-list": ToolParser(
        "tags-list", '<tool_call>[{"name": NAME, "arguments": {...}}]</tool_call>', _parse_tags_list,
        lambda c: f"{TOOL_CALL_OPEN}{_dumps([{'name': c.name, 'arguments': c.parameters}])}{TOOL_CALL_CLOSE}",
        lambda t: TOOL_CALL_OPEN in t),
}


def get_tool_parser(name: str) -> ToolParser:
    try:
        return TOOL_PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown tool parser {name!r}; choose one of {', '.join(TOOL_PARSERS)}") from None
