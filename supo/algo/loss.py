"""Policy losses (R10) — pure tensor functions behind a small registry.

A policy loss maps per-token ``(logprobs, old_logprobs, advantages)`` to a per-token loss and a per-token "clipped"
indicator. :func:`token_mean` aggregates over all valid tokens of a mini-batch: the denominator is the mini-batch's
token count, passed in, so splitting a mini-batch into micro-batches for memory does not change the loss. Padding
rows and masked tokens (mask 0) contribute nothing.

* ``clip_higher`` (default): PPO's clipped ratio with asymmetric bounds ``[1 − ε_low, 1 + ε_high]`` (DAPO clip-higher);
  the paper's ε_low = 0.20, ε_high = 0.28.
* ``clip``: symmetric PPO clip with ε = ε_low.

No KL term and no entropy bonus by default; :func:`kl_k3` and :func:`entropy_from_logits` are there for weights > 0.
The trainer's whole objective — this policy term, the KL and entropy terms and the aggregation mode — is assembled in
:mod:`supo.algo.objective`; a loss that declares ``mask`` and ``seq_ids`` parameters is handed them there (for a
sequence-level ratio).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from supo.registry import registrar

LossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
POLICY_LOSSES: dict[str, LossFn] = {}


register_policy_loss = registrar(POLICY_LOSSES, "policy loss")


@register_policy_loss("clip_higher")
def clip_higher(logprobs, old_logprobs, advantages, clip_low: float = 0.2, clip_high: float = 0.28):
    """Per-token ``−min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A)`` with ``ρ = exp(logπ − logπ_old)``."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = (clipped < unclipped).to(logprobs.dtype)
    return loss, was_clipped


@register_policy_loss("clip")
def clip(logprobs, old_logprobs, advantages, clip_low: float = 0.2, clip_high: float = 0.2):
    """Symmetric PPO clip (ε = clip_low)."""
    return clip_higher(logprobs, old_logprobs, advantages, clip_low=clip_low, clip_high=clip_low)


def token_mean(per_token: torch.Tensor, mask: torch.Tensor, num_tokens: float | torch.Tensor) -> torch.Tensor:
    """Σ(per_token · mask) / num_tokens, where num_tokens counts the valid tokens of the whole mini-batch."""
    denom = torch.as_tensor(num_tokens, dtype=per_token.dtype).clamp_min(1.0)
    return (per_token * mask).sum() / denom


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref): exp(r) − r − 1 with r = logπ_ref − logπ (always ≥ 0)."""
    r = ref_logprobs - logprobs
    return torch.exp(r) - r - 1.0


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax over the vocabulary."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def policy_loss(
    name: str,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    num_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The token-mean loss of one (micro-)batch and its clip fraction; ``num_tokens`` defaults to ``mask.sum()``."""
    if name not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {name!r}; choose one of {', '.join(POLICY_LOSSES)}")
    if not (logprobs.shape == old_logprobs.shape == advantages.shape == mask.shape):
        raise ValueError(
            f"shape mismatch: logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)}, "
            f"advantages {tuple(advantages.shape)}, mask {tuple(mask.shape)}"
        )
    n = mask.sum() if num_tokens is None else num_tokens
    per_token, was_clipped = POLICY_LOSSES[name](logprobs, old_logprobs, advantages, clip_low=clip_low,
                                                 clip_high=clip_high)
    loss = token_mean(per_token, mask, n)
    clip_frac = float(token_mean(was_clipped, mask, n).detach())
    return loss, {"clip_frac": clip_frac}
