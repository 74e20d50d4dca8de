"""The generation contract (docs/design.md §4): :class:`GenRequest`, :class:`GenResult` and the :class:`Policy`
protocol.

Implemented by the vLLM engine (``supo.engines``, training and evaluation) and the scripted expert
(``supo.rollout.expert_policy``, demonstrations); consumed by the agent loop (``supo.rollout.agent_loop``) and the
benches. It sits below both, so engines never import the loop's package.

Token ids and behaviour log-probs come back exactly as sampled (R6): the loop never re-tokenizes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass
class GenRequest:
    """One generation: the context ids, what is being generated, and its budget."""

    key: int
    context: list[int]
    kind: str  # "action" or "summary"
    max_tokens: int
    seed: int


@dataclass
class GenResult:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str = "stop"


class Policy(Protocol):
    """What the loop samples from: a vLLM engine in training/eval, a scripted expert for demonstrations."""

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]: ...

    def on_step(self, key: int, action: str, observation: str) -> None: ...

    def on_drop(self, key: int) -> None: ...
