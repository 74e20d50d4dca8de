"""Invariants of batching (R10): token alignment in `collate`, exact mini-batch counts, inert padding rows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algo_helpers import PAD_ID, grads_of, make_sample, tiny_qwen2
from supo.algo.loss import policy_loss
from supo.trainer.batch import collate, micro_batches, padding_sample, split_minibatches
from supo.trainer.policy_trainer import token_logprobs

SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(shapes=st.lists(st.tuples(st.integers(1, 7), st.integers(0, 9)), min_size=1, max_size=5),
       seed=st.integers(0, 1000))
def test_collate_aligns_response_token_k_at_prompt_len_minus_one_plus_k(shapes, seed):
    samples = [make_sample(p, r, seed=seed + i) for i, (p, r) in enumerate(shapes)]
    batch = collate(samples, PAD_ID)
    B = len(samples)
    T = max(p + r for p, r in shapes)
    assert batch.input_ids.shape == (B, T) and batch.attention_mask.shape == (B, T)
    for t in (batch.targets, batch.loss_mask, batch.old_logprobs, batch.advantages):
        assert t.shape == (B, T - 1)
    assert torch.equal(batch.targets, batch.input_ids[:, 1:])
    dt = batch.old_logprobs.dtype
    for b, s in enumerate(samples):
        P, R = len(s.prompt_ids), len(s.response_ids)
        assert batch.input_ids[b, : P + R].tolist() == s.prompt_ids + s.response_ids
        assert batch.input_ids[b, P + R:].tolist() == [PAD_ID] * (T - P - R)
        assert batch.attention_mask[b].tolist() == [1] * (P + R) + [0] * (T - P - R)
        for k in range(R):
            t = P - 1 + k
            assert batch.targets[b, t].item() == s.response_ids[k]
            assert batch.loss_mask[b, t].item() == s.loss_mask[k]
            assert batch.old_logprobs[b, t].item() == torch.tensor(s.old_logprobs[k], dtype=dt).item()
            assert batch.advantages[b, t].item() == torch.tensor(s.advantages[k], dtype=dt).item()
        outside = [t for t in range(T - 1) if not (P - 1 <= t < P - 1 + R)]
        for t in outside:  # prompt positions and padding: nothing to train
            assert batch.loss_mask[b, t].item() == 0
            assert batch.advantages[b, t].item() == 0
    assert batch.num_tokens == sum(sum(s.loss_mask) for s in samples)


def test_collate_raises_when_a_sample_exceeds_max_len():
    samples = [make_sample(3, 4, seed=0), make_sample(5, 6, seed=1)]  # lengths 7 and 11
    collate(samples, PAD_ID, max_len=11)  # exactly at the limit is fine
    with pytest.raises(ValueError, match="11"):
        collate(samples, PAD_ID, max_len=10)


def test_padding_sample_trains_nothing():
    s = padding_sample(PAD_ID)
    assert sum(s.loss_mask) == 0 and all(a == 0 for a in s.advantages)
    batch = collate([s], PAD_ID)
    assert batch.num_tokens == 0


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 100), num=st.integers(1, 8), seed=st.integers(0, 100))
def test_split_minibatches_returns_exactly_num_covering_every_sample_once(n, num, seed):
    samples = [make_sample(2, 3, seed=i) for i in range(n)]
    chunks = split_minibatches(samples, num, seed=seed, pad_id=PAD_ID)
    assert len(chunks) == num
    sizes = {len(c) for c in chunks}
    assert len(sizes) == 1 and sizes.pop() >= 1  # equal sizes
    rows = [s for c in chunks for s in c]
    real = [s for s in rows if any(s is x for x in samples)]
    pads = [s for s in rows if not any(s is x for x in samples)]
    assert sorted(id(s) for s in real) == sorted(id(s) for s in samples)  # each real sample exactly once
    assert len(pads) == len(rows) - n < num  # no more padding than needed to equalise
    for p in pads:
        assert sum(p.loss_mask) == 0 and all(a == 0 for a in p.advantages)
    # seeded: same seed, same split
    again = split_minibatches(samples, num, seed=seed, pad_id=PAD_ID)
    assert [[id(s) for s in c if any(s is x for x in samples)] for c in again] == \
        [[id(s) for s in c if any(s is x for x in samples)] for c in chunks]


def test_split_minibatches_rejects_zero():
    with pytest.raises(ValueError):
        split_minibatches([make_sample(2, 2)], 0, seed=0, pad_id=PAD_ID)


@SETTINGS
@given(n=st.integers(1, 40), size=st.integers(1, 16))
def test_micro_batches_cover_every_row_once_within_size(n, size):
    samples = [make_sample(1 + i % 5, 1 + (7 * i) % 6, seed=i) for i in range(n)]
    micros = micro_batches(samples, size)
    assert all(1 <= len(m) <= size for m in micros)
    assert len(micros) == -(-n // size)
    assert sorted(id(s) for m in micros for s in m) == sorted(id(s) for s in samples)


def _loss_and_grads(model, samples):
    model.zero_grad(set_to_none=True)
    batch = collate(samples, PAD_ID)
    lp, _ = token_logprobs(model, batch)
    loss, _ = policy_loss("clip_higher", lp, batch.old_logprobs, batch.advantages, batch.loss_mask)
    loss.backward()
    return loss.detach().double(), grads_of(model), lp.dtype


def test_padding_rows_change_neither_loss_nor_gradient():
    model = tiny_qwen2(seed=0)
    samples = [make_sample(4, 6, seed=1), make_sample(2, 9, seed=2), make_sample(6, 3, seed=3)]
    loss, grads, lp_dtype = _loss_and_grads(model, samples)
    padded = [padding_sample(PAD_ID), samples[0], padding_sample(PAD_ID), samples[1], samples[2],
              padding_sample(PAD_ID)]
    loss_p, grads_p, _ = _loss_and_grads(model, padded)
    assert loss.item() != 0.0
    # The subject here is padding, not precision: the tolerance follows the dtype the log-probs are computed in
    # (float64 model → 1e-12 once the log-probs stay float64; float32 rounding of sums in another order otherwise).
    tol = 1e-12 if lp_dtype == torch.float64 else 2e-6
    torch.testing.assert_close(loss_p, loss, rtol=tol, atol=tol)
    for name in grads:
        torch.testing.assert_close(grads_p[name], grads[name], rtol=tol, atol=tol, msg=name)
