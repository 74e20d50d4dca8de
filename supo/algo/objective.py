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


def needs_entropy(train_cfg) -> bool:
    return train_cfg.entropy_coef > 0


def needs_reference_logprobs(train_cfg) -> bool:
    """Whether the loss reads the reference policy's log-probs (the KL term)."""
    return train_cfg.kl_coef > 0


def micro_batch_loss(train_cfg, logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                     mask: torch.Tensor, seq_ids: torch.Tensor, counts: MiniBatchCounts, *,
                     entropy: torch.Tensor | None = None, ref_logprobs: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the mini-batch objective, and its statistics (``clip_frac``, ``kl``,
    ``entropy``: the micro-batch's shares of the mini-batch's token-means). ``train_cfg`` names the terms:
    ``policy_loss``, ``clip_low``, ``clip_high``, ``loss_agg``, ``kl_coef`` (needs ``ref_logprobs``),
    ``entropy_coef`` (needs ``entropy``)."""
    if not (logprobs.shape == old_logprobs.shape == advantages.shape == mask.shape == seq_ids.shape):
        raise ValueError(f"shape mismatch: logprobs {tuple(logprobs.shape)}, old_logprobs "
                         f"{tuple(old_logprobs.shape)}, advantages {tuple(advantages.shape)}, mask {tuple(mask.shape)}, "
                         f"seq_ids {tuple(seq_ids.shape)}")
    try:
        policy = POLICY_LOSSES[train_cfg.policy_loss]
    except KeyError:
        raise ValueError(f"unknown policy loss {train_cfg.policy_loss!r}; choose one of "
                         f"{', '.join(POLICY_LOSSES)}") from None
    try:
        aggregate = AGGREGATIONS[train_cfg.loss_agg]
    except KeyError:
        raise ValueError(f"unknown loss aggregation {train_cfg.loss_agg!r}; choose one of "
                         f"{', '.join(AGGREGATIONS)}") from None
    extra = {"mask": mask, "seq_ids": seq_ids}
    per_token, clipped = policy(logprobs, old_logprobs, advantages, clip_low=train_cfg.clip_low,
                                clip_high=train_cfg.clip_high, **{k: extra[k] for k in _extra_inputs(policy)})
    loss = aggregate(per_token, mask, seq_ids, counts)
    stats = {"clip_frac": float(token_mean(clipped, mask, counts.num_tokens).detach()), "kl": 0.0, "entropy": 0.0}
    if train_cfg.kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("train.kl_coef > 0 needs the reference policy's log-probs")
        kl = aggregate(kl_k3(logprobs, ref_logprobs), mask, seq_ids, counts)
        loss = loss + train_cfg.kl_coef * kl
        stats["kl"] = float(kl.detach())
    if train_cfg.entropy_coef > 0:
        if entropy is None:
            raise ValueError("train.entropy_coef > 0 needs the policy's entropy")
        ent = aggregate(entropy, mask, seq_ids, counts)
        loss = loss - train_cfg.entropy_coef * ent
        stats["entropy"] = float(ent.detach())
    return loss, stats
