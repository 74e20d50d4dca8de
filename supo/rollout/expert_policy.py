"""A scripted expert as a :class:`~supo.contracts.Policy`: demonstrations come out of the same loop as
training rollouts, so they share its templates, triggers, drops, resets and trigger-action samples (R5b)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from supo.envs.tool_parsers import DEFAULT_TOOL_PARSER, get_tool_parser
from supo.contracts import GenRequest, GenResult


class ExpertPolicy:
    """Wraps one expert per rollout key. Its outputs are tokenized expert text ending in the end-of-turn token; its
    tool calls (written in supo's format) are rewritten in ``tool_parser``'s format, the model's, so a warm start on
    the demonstrations teaches that format."""

    def __init__(self, tokenizer, experts: dict[int, Any], eos_id: int, tool_parser: str = DEFAULT_TOOL_PARSER) -> None:
        self.tokenizer, self.experts, self.eos_id = tokenizer, experts, eos_id
        self.parser = get_tool_parser(tool_parser)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        out = []
        for req in requests:
            expert = self.experts[req.key]
            text = expert.summarize() if req.kind == "summary" else self.parser.from_canonical(expert.act())
            ids = self.tokenizer.encode(text, add_special_tokens=False)[: max(req.max_tokens - 1, 0)] + [self.eos_id]
            out.append(GenResult(token_ids=ids, logprobs=[0.0] * len(ids)))
        return out

    def on_step(self, key: int, action: str, observation: str) -> None:
        self.experts[key].observe(action, observation)

    def on_drop(self, key: int) -> None:
        self.experts[key].drop()
