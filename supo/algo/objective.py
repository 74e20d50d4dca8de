"""The RL objective in one place (R10): the policy term, the optional KL and entropy terms, and how per-token losses
are aggregated — each a registry entry, so a new variant (a GSPO- or CISPO-style loss, another aggregation) is one
entry and no trainer edit.

:func:`micro_batch_loss` takes per-token tensors of any shape — ``[N]`` predictions of a packed batch or
``[B, T-1]`` positions of a padded one — with the same meaning everywhere:

* ``logprobs`` (under the current policy), ``old_logprobs`` (behaviour, R6), ``advantages`` (R8, on the loss mask),
  ``mask`` (1 on trained tokens, R9) and ``seq_ids`` (which sample of the mini-batch each token belongs to; -1 for
  padding);
* the policy term: ``POLICY_LOSSES[train.policy_loss]`` (``supo.algo.loss``) gives a per-token loss and clipped
  indicator; a loss that declares ``mask`` / ``seq_ids`` parameters gets them (a sequence-level ratio needs them —
  every sample's tokens are in one micro-batch, packed or not);
* aggregation: ``AGGREGATIONS[train.loss_agg]`` turns per-token values into the micro-batch's share of the
  mini-batch loss, normalised by counts over the *whole* mini-batch (:class:`MiniBatchCounts`), so splitting a
  mini-batch into micro-batches (and across data-parallel ranks) changes neither the loss nor its gradient:

  - ``token-mean`` (default, the paper): Σ loss·mask / the mini-batch's trained tokens;
  - ``sequence-mean``: the mean over the mini-batch's trained samples of each sample's token-mean;

* ``train.kl_coef`` × the k3 KL to the reference policy and − ``train.entropy_coef`` × the entropy, each aggregated
  the same way (both 0 in the paper).

The functions take values, never the config: the terms above travel as one :class:`Objective` the trainer builds from
``train.*`` once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from supo.algo.loss import POLICY_LOSSES, kl_k3, token_mean
from supo.registry import registrar
from supo.types import TrainingSample


@dataclass(frozen=True)
class MiniBatchCounts:
    """The normalisers of one mini-batch: its trained tokens, and each sample's (indexed by ``seq_ids``)."""

    num_tokens: float
    seq_tokens: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[TrainingSample]) -> MiniBatchCounts:
        per_seq = tuple(float(sum(s.loss_mask)) for s in samples)
        return cls(float(sum(per_seq)), per_seq)

    @property
    def num_seqs(self) -> int:
        """Samples with at least one trained token."""
        return sum(1 for n in self.seq_tokens if n > 0)


AggregateFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, MiniBatchCounts], torch.Tensor]
AGGREGATIONS: dict[str, AggregateFn] = {}
register_aggregation = registrar(AGGREGATIONS, "loss aggregation")


@register_aggregation("token-mean")
def aggregate_token_mean(per_token, mask, seq_ids, counts: MiniBatchCounts) -> torch.Tensor:
    """Σ(per_token · mask) / the mini-batch's trained tokens (R10)."""
    return token_mean(per_token, mask, counts.num_tokens)


@register_aggregation("sequence-mean")
def aggregate_sequence_mean(per_token, mask, seq_ids, counts: MiniBatchCounts) -> torch.Tensor:
    """Σ over tokens of per_token · mask / (its sample's trained tokens × the mini-batch's trained samples)."""
    seq_tokens = torch.tensor(counts.seq_tokens or (1.0,), dtype=per_token.dtype, device=per_token.device)
    own = seq_tokens[seq_ids.clamp_min(0)].clamp_min(1.0)
    weight = torch.where(mask > 0, mask / own, torch.zeros_like(mask))
    return (per_token * weight).sum() / max(counts.num_seqs, 1)


@lru_cache(maxsize=None)
def _extra_inputs(fn: Callable) -> tuple[str, ...]:
    """Which of ``mask`` and ``seq_ids`` a policy loss declares (a sequence-level loss needs them)."""
    params = inspect.signature(fn).parameters
    return tuple(name for name in ("mask", "seq_ids") if name in params)


@dataclass(frozen=True)
class Objective:
    """The terms of the objective, as values (R10; the trainer reads them from ``train.*`` once): the policy loss
    (a ``POLICY_LOSSES`` name) with its clip range ``clip_low`` / ``clip_high``, the aggregation (an ``AGGREGATIONS``
    name), the KL weight ``kl_coef`` (needs the reference's log-probs) and the entropy weight ``entropy_coef``. The
    defaults are the paper's: clip-higher 0.20/0.28, token-mean, no KL, no entropy."""

    policy_loss: str = "clip_higher"
    clip_low: float = 0.20
    clip_high: float = 0.28
    loss_agg: str = "token-mean"
    kl_coef: float = 0.0
    entropy_coef: float = 0.0

    @property
    def needs_entropy(self) -> bool:
        return self.entropy_coef > 0

    @property
    def needs_reference_logprobs(self) -> bool:
        """Whether the loss reads the reference policy's log-probs (the KL term)."""
        return self.kl_coef > 0

    @property
    def reads_zero_advantage(self) -> bool:
        """Whether tokens with advantage 0 weigh in the loss (the KL and entropy terms read every trained token)."""
        return self.kl_coef > 0 or self.entropy_coef > 0


def _lookup(registry: dict, name: str, what: str):
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(registry)}") from None


def micro_batch_loss(objective: Objective, logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                     advantages: torch.Tensor, mask: torch.Tensor, seq_ids: torch.Tensor, counts: MiniBatchCounts, *,
                     entropy: torch.Tensor | None = None, ref_logprobs: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the mini-batch objective, and its statistics (``clip_frac``, ``kl``,
    ``entropy``: the micro-batch's shares of the mini-batch's token-means). ``objective`` names the terms; its
    ``kl_coef > 0`` needs ``ref_logprobs``, its ``entropy_coef > 0`` needs ``entropy``."""
    if not (logprobs.shape == old_logprobs.shape == advantages.shape == mask.shape == seq_ids.shape):
        raise ValueError(f"shape mismatch: logprobs {tuple(logprobs.shape)}, old_logprobs "
                         f"{tuple(old_logprobs.shape)}, advantages {tuple(advantages.shape)}, "
                         f"mask {tuple(mask.shape)}, seq_ids {tuple(seq_ids.shape)}")
    policy = _lookup(POLICY_LOSSES, objective.policy_loss, "policy loss")
    aggregate = _lookup(AGGREGATIONS, objective.loss_agg, "loss aggregation")
    extra = {"mask": mask, "seq_ids": seq_ids}
    per_token, clipped = policy(logprobs, old_logprobs, advantages, clip_low=objective.clip_low,
                                clip_high=objective.clip_high, **{k: extra[k] for k in _extra_inputs(policy)})
    loss = aggregate(per_token, mask, seq_ids, counts)
    stats = {"clip_frac": float(token_mean(clipped, mask, counts.num_tokens).detach()), "kl": 0.0, "entropy": 0.0}
    if objective.kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("train.kl_coef > 0 needs the reference policy's log-probs")
        kl = aggregate(kl_k3(logprobs, ref_logprobs), mask, seq_ids, counts)
        loss = loss + objective.kl_coef * kl
        stats["kl"] = float(kl.detach())
    if objective.entropy_coef > 0:
        if entropy is None:
            raise ValueError("train.entropy_coef > 0 needs the policy's entropy")
        ent = aggregate(entropy, mask, seq_ids, counts)
        loss = loss - objective.entropy_coef * ent
        stats["entropy"] = float(ent.detach())
    return loss, stats
