"""Shared builders for the algorithm-invariant tests (advantage, loss, batching, policy trainer).

Everything here is deterministic given its seed: synthetic ``Segment``s / ``Rollout``s with chosen lengths, masks and
rewards, a hand-written GRPO advantage (the reference the estimators are checked against), and a tiny randomly
initialised Qwen2 built locally (no hub).
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Sequence

from supo.types import Rollout, Segment, TrainingSample

VOCAB = 64
PAD_ID = 0
EPS = 1e-6


def f32(x: float) -> float:
    """Round a Python float to the nearest float32 value (what an engine returns as a behaviour log-prob)."""
    import numpy as np

    return float(np.float32(x))


def make_segment(
    prompt_len: int,
    resp_len: int,
    *,
    mask: Sequence[int] | None = None,
    seed: int = 0,
    index: int = 0,
    is_last: bool = False,
    kind: str = "segment",
) -> Segment:
    """A segment with random token ids in ``1..VOCAB-1`` (0 is the pad id), the given (or a random) mask, and
    random float32-representable behaviour log-probs (0.0 where the mask is 0, as the contract says)."""
    rng = random.Random(seed)
    if mask is None:
        mask = [rng.randint(0, 1) for _ in range(resp_len)]
    mask = list(mask)
    assert len(mask) == resp_len
    prompt = [rng.randint(1, VOCAB - 1) for _ in range(prompt_len)]
    resp = [rng.randint(1, VOCAB - 1) for _ in range(resp_len)]
    logprobs = [f32(-rng.uniform(0.05, 6.0)) if m else 0.0 for m in mask]
    return Segment(prompt, resp, mask, logprobs, index=index, is_last=is_last, kind=kind)


def make_rollout(
    group_id: str,
    index: int,
    reward: float,
    seg_lengths: Sequence[int] = (4,),
    *,
    masks: Sequence[Sequence[int]] | None = None,
    trigger_actions: int = 0,
    overlong: bool = False,
    task_id: str | None = None,
    prompt_len: int = 3,
    seed: int | None = None,
) -> Rollout:
    """A rollout of ``len(seg_lengths)`` context segments (response lengths ``seg_lengths``) followed by
    ``trigger_actions`` trigger-action samples (R5b). ``task_id`` defaults to the group id."""
    base = seed if seed is not None else zlib.crc32(f"{group_id}/{index}".encode()) & 0xFFFF
    segs: list[Segment] = []
    n = len(seg_lengths)
    for k, length in enumerate(seg_lengths):
        m = None if masks is None else masks[k]
        segs.append(
            make_segment(prompt_len + k, length, mask=m, seed=base * 131 + k, index=k, is_last=(k == n - 1))
        )
    for t in range(trigger_actions):
        segs.append(
            make_segment(prompt_len + 5, 2 + t, mask=[1] * (2 + t), seed=base * 131 + 97 + t, index=t,
                         kind="trigger_action")
        )
    return Rollout(
        task_id=task_id if task_id is not None else group_id,
        group_id=group_id,
        index=index,
        reward=float(reward),
        overlong=overlong,
        overlong_reason="max_summaries" if overlong else None,
        finished=not overlong,
        num_summaries=max(0, n - 1),
        segments=segs,
    )


def split_into_segments(prompt: list[int], response: list[int], mask: list[int], logprobs: list[float],
                        k: int) -> list[Segment]:
    """Cut one response into ``k`` consecutive context segments (each later segment's prompt = the prompt plus what
    came before it), so the same tokens can be presented as 1, 2, ... segments."""
    n = len(response)
    cuts = [round(i * n / k) for i in range(k + 1)]
    segs = []
    for i in range(k):
        a, b = cuts[i], cuts[i + 1]
        segs.append(Segment(prompt + response[:a], response[a:b], mask[a:b], logprobs[a:b], index=i,
                            is_last=(i == k - 1)))
    return segs


def grpo_advantages(rewards: Sequence[float], eps: float = EPS) -> list[float]:
    """Hand-written GRPO advantage over one group: (r − mean) / (population std + eps), plain Python."""
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    return [(r - mean) / (std + eps) for r in rewards]


def weighted_advantages(rewards: Sequence[float], weights: Sequence[float], eps: float = EPS) -> list[float]:
    """Hand-written Eq. 4: each reward repeated ``weights[j]`` times in the statistics."""
    expanded = [r for r, w in zip(rewards, weights) for _ in range(int(w))]
    n = len(expanded)
    mean = sum(expanded) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in expanded) / n)
    return [(r - mean) / (std + eps) for r in rewards]


def make_sample(prompt_len: int, resp_len: int, seed: int = 0, adv: float | None = None) -> TrainingSample:
    """A ``TrainingSample`` with random ids, random mask (at least one 1), float32-representable old log-probs and a
    per-token advantage ``adv × mask`` (random ``adv`` when None)."""
    rng = random.Random(seed)
    mask = [rng.randint(0, 1) for _ in range(resp_len)]
    if resp_len and not any(mask):
        mask[rng.randrange(resp_len)] = 1
    a = rng.uniform(-2.0, 2.0) if adv is None else adv
    return TrainingSample(
        prompt_ids=[rng.randint(1, VOCAB - 1) for _ in range(prompt_len)],
        response_ids=[rng.randint(1, VOCAB - 1) for _ in range(resp_len)],
        loss_mask=mask,
        old_logprobs=[f32(-rng.uniform(2.0, 6.0)) if m else 0.0 for m in mask],
        advantages=[a * m for m in mask],
        rollout=seed,
    )


def tiny_qwen2(seed: int = 0, layers: int = 1, dtype=None):
    """A tiny random Qwen2ForCausalLM (vocab 64, hidden 64, one head of size 64), built locally, in ``dtype``
    (float64 by default so comparisons can be exact)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    return model.to(torch.float64 if dtype is None else dtype)


def grads_of(model) -> dict:
    """A detached copy of every parameter's gradient (zeros where a parameter got none)."""
    import torch

    return {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in
            model.named_parameters()}
