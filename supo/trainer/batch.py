"""Segments → padded tensors and mini-batches.

Token alignment: a sample is ``prompt_ids + response_ids``; the logits at position ``t`` predict token ``t + 1``, so
every per-token tensor here has length ``T − 1`` and index ``t`` refers to the token at ``t + 1``.

Mini-batches are formed over segments: a step's samples are shuffled (seeded) and cut into exactly ``mini_batches``
equal-size chunks, padding with zero-mask dummy rows. The number of optimizer steps is therefore
``mini_batches × ppo_epochs`` whatever the number of segments (docs/design.md §1, R10).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from supo.types import TrainingSample


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long
    targets: torch.Tensor  # [B, T-1] long: input_ids[:, 1:]
    loss_mask: torch.Tensor  # [B, T-1] float
    old_logprobs: torch.Tensor  # [B, T-1] float
    advantages: torch.Tensor  # [B, T-1] float
    seq_ids: torch.Tensor | None = None  # [B, T-1] long: the row's sample in its mini-batch (-1: padding)

    @property
    def num_tokens(self) -> float:
        return float(self.loss_mask.sum())


def collate(samples: Sequence[TrainingSample], pad_id: int, max_len: int | None = None,
            dtype: torch.dtype = torch.float32, seq_ids: Sequence[int] | None = None) -> Batch:
    """Right-pad samples into one batch; raise if a sample is longer than ``max_len``.

    ``dtype`` is the float type of the per-token tensors (the policy's dtype; float64 keeps exactness in tests).
    ``seq_ids``: each sample's index in its mini-batch (default: its index here), for sequence-level loss terms.
    """
    lengths = [s.length for s in samples]
    T = max(lengths)
    if max_len is not None and T > max_len:
        raise ValueError(f"a segment of {T} tokens exceeds the trainer's sequence limit {max_len}")
    B = len(samples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T - 1), dtype=dtype)
    old = torch.zeros((B, T - 1), dtype=dtype)
    adv = torch.zeros((B, T - 1), dtype=dtype)
    for b, s in enumerate(samples):
        seq = s.prompt_ids + s.response_ids
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[b, : len(seq)] = 1
        P, R = len(s.prompt_ids), len(s.response_ids)
        if R:
            sl = slice(P - 1, P - 1 + R)
            mask[b, sl] = torch.tensor(s.loss_mask, dtype=dtype)
            old[b, sl] = torch.tensor(s.old_logprobs, dtype=dtype)
            adv[b, sl] = torch.tensor(s.advantages, dtype=dtype)
    sid = torch.tensor(list(range(B)) if seq_ids is None else list(seq_ids), dtype=torch.long)
    return Batch(ids, attn, ids[:, 1:].clone(), mask, old, adv, sid[:, None].expand(B, T - 1).clone())


def padding_sample(pad_id: int) -> TrainingSample:
    """A dummy row: one prompt token, one response token, mask 0. It changes no loss and no gradient."""
    return TrainingSample([pad_id], [pad_id], [0], [0.0], [0.0], rollout=-1)


def split_minibatches(samples: Sequence[TrainingSample], num: int, seed: int, pad_id: int) -> list[list[TrainingSample]]:
    """Shuffle and cut into exactly ``num`` equal-size mini-batches (zero-mask padding rows fill the last ones)."""
    if num < 1:
        raise ValueError(f"mini_batches must be ≥ 1, got {num}")
    order = list(samples)
    random.Random(seed).shuffle(order)
    size = max(1, math.ceil(len(order) / num))
    order += [padding_sample(pad_id) for _ in range(size * num - len(order))]
    return [order[i * size : (i + 1) * size] for i in range(num)]


def micro_batches(samples: Sequence[TrainingSample], size: int) -> list[list[TrainingSample]]:
    """Cut a mini-batch into micro-batches of at most ``size`` rows, grouping similar lengths to limit padding."""
    ordered = sorted(samples, key=lambda s: s.length)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]
