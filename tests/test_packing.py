"""Exactness of shared-prefix packing (supo.trainer.packing): packed rows give the unpacked computation's log-probs,
loss and gradient (float64), for segments with their trigger-action samples, group rollouts sharing a prompt and first
turns, masked and zero-advantage tokens, KL and entropy terms; and the whole update is the same with packing on or off.
"""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from algo_helpers import PAD_ID, VOCAB, f32, grads_of, tiny_qwen2
from supo.algo.loss import policy_loss
from supo.config import TrainConfig
from supo.trainer.batch import collate
from supo.trainer.packing import collate_rows, pack_rows, packed_tokens, padding_row
from supo.trainer.policy_trainer import PolicyTrainer, packed_logprobs, token_logprobs
from supo.types import TrainingSample


@pytest.fixture(autouse=True)
def float64_rmsnorm(monkeypatch):
    """HF's Qwen2RMSNorm casts to float32 even in a float64 model, so a gradient summed over a shared token is rounded
    to float32 before the sum in one computation and after it in the other (differences ~1e-7 relative). For exact
    comparisons the norm computes in its input's dtype here."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(Qwen2RMSNorm, "forward", forward)


def _sample(prompt, response, mask, adv, rng, rollout=0):
    old = [f32(-rng.uniform(0.5, 4.0)) if m else 0.0 for m in mask]
    return TrainingSample(list(prompt), list(response), list(mask), old, [adv * m for m in mask], rollout=rollout)


def shared_prefix_samples(seed: int, groups: int = 2, group_size: int = 3, zero_adv_group: bool = True):
    """What a SUPO step yields, in miniature: per group a shared prompt; rollouts whose first turns coincide and then
    diverge; each segment with trigger-action samples cut from its own tokens (prompt = the segment's first tokens,
    response = a short action); one group with advantage 0 everywhere (degenerate) and some mask-0 rollouts."""
    rng = random.Random(seed)
    out = []
    for g in range(groups):
        prompt = [rng.randint(1, VOCAB - 1) for _ in range(rng.randint(4, 7))]
        common = [rng.randint(1, VOCAB - 1) for _ in range(rng.randint(2, 6))]
        for j in range(group_size):
            adv = 0.0 if (zero_adv_group and g == 0) else rng.uniform(-2, 2)
            resp = common + [rng.randint(1, VOCAB - 1) for _ in range(rng.randint(3, 9))]
            mask = [rng.randint(0, 1) for _ in resp]
            mask[-1] = 1
            if j == group_size - 1 and g == 1:
                mask = [0] * len(resp)  # an overlong-masked rollout
            out.append(_sample(prompt, resp, mask, adv, rng, rollout=g * group_size + j))
            for _ in range(2):  # trigger actions: a prefix of this segment, then their own short action
                cut = rng.randint(1, len(resp) - 1)
                action = [rng.randint(1, VOCAB - 1) for _ in range(rng.randint(1, 3))]
                out.append(_sample(prompt + resp[:cut], action, [1] * len(action), adv, rng,
                                   rollout=g * group_size + j))
    rng.shuffle(out)
    return out


def _plain_loss(model, samples, n_tokens, cfg):
    batch = collate(samples, PAD_ID, dtype=torch.float64)
    lp, ent = token_logprobs(model, batch, with_entropy=True)
    loss, st = policy_loss("clip_higher", lp, batch.old_logprobs, batch.advantages, batch.loss_mask,
                           clip_low=cfg.clip_low, clip_high=cfg.clip_high, num_tokens=n_tokens)
    e = (ent * batch.loss_mask).sum() / n_tokens
    return loss, e, st["clip_frac"]


def _packed_loss(model, samples, n_tokens, cfg, max_row_tokens, keep_zero):
    rows = pack_rows(samples, max_row_tokens, keep_zero_advantage=keep_zero)
    batch = collate_rows(rows, PAD_ID, dtype=torch.float64)
    lp, ent = packed_logprobs(model, batch, with_entropy=True)
    loss, st = policy_loss("clip_higher", lp, batch.old_logprobs, batch.advantages, batch.loss_mask,
                           clip_low=cfg.clip_low, clip_high=cfg.clip_high, num_tokens=n_tokens)
    e = (ent * batch.loss_mask).sum() / n_tokens
    return loss, e, st["clip_frac"], rows


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_row_tokens", [1, 40, 4096])
def test_packed_loss_and_gradient_equal_the_plain_computation(seed, max_row_tokens):
    cfg = TrainConfig()
    samples = shared_prefix_samples(seed)
    n_tokens = float(sum(sum(s.loss_mask) for s in samples))
    model = tiny_qwen2(seed, layers=2)
    loss_a, _, clip_a = _plain_loss(model, samples, n_tokens, cfg)
    loss_a.backward()
    grads_a = grads_of(model)
    model.zero_grad(set_to_none=True)
    loss_b, _, clip_b, rows = _packed_loss(model, samples, n_tokens, cfg, max_row_tokens, keep_zero=False)
    loss_b.backward()
    grads_b = grads_of(model)
    assert abs(float(loss_a.detach()) - float(loss_b.detach())) < 1e-12
    assert abs(clip_a - clip_b) < 1e-12
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-12, rtol=1e-10), name
    # and it is less work: shared prefixes are computed once, gradient-free samples not at all
    assert packed_tokens(rows) < sum(s.length for s in samples)
    if max_row_tokens == 1:  # the cap is soft only for a sample longer than it: one sample per row then
        assert all(len(r.preds) == sum(1 for m, a in zip(s.loss_mask, s.advantages) if m and a)
                   for r, s in zip(rows, _gradient_samples_sorted(samples)))


def _gradient_samples_sorted(samples):
    keep = [s for s in samples if any(m and a for m, a in zip(s.loss_mask, s.advantages))]
    return sorted(keep, key=lambda s: s.prompt_ids + s.response_ids)


def test_entropy_term_reads_zero_advantage_tokens_when_kept():
    """With a KL or entropy term, tokens of advantage 0 still count: packing keeps them and matches the plain
    entropy exactly."""
    cfg = TrainConfig()
    samples = shared_prefix_samples(3)
    n_tokens = float(sum(sum(s.loss_mask) for s in samples))
    model = tiny_qwen2(3, layers=1)
    _, ent_a, _ = _plain_loss(model, samples, n_tokens, cfg)
    _, ent_b, _, _ = _packed_loss(model, samples, n_tokens, cfg, 4096, keep_zero=True)
    assert abs(float(ent_a) - float(ent_b)) < 1e-12
    _, ent_c, _, _ = _packed_loss(model, samples, n_tokens, cfg, 4096, keep_zero=False)
    assert abs(float(ent_a) - float(ent_c)) > 1e-6  # dropping them would change the entropy term


def test_rows_respect_the_cap_and_share_prefixes():
    samples = shared_prefix_samples(4, groups=3, group_size=4)
    rows = pack_rows(samples, 60)
    for r in rows:
        assert len(r) <= 60 or len(r.preds) and len({p[0] for p in r.preds}) >= 1
        # a node's parent precedes it and is one position shallower
        for i, (p, d) in enumerate(zip(r.parents, r.depths)):
            assert (p == -1 and d == 0) or (0 <= p < i and r.depths[p] == d - 1)
    assert padding_row(PAD_ID).preds == []
    # every gradient-carrying prediction is packed exactly once
    want = sum(1 for s in samples for m, a in zip(s.loss_mask, s.advantages) if m and a)
    assert sum(len(r.preds) for r in rows) == want


@pytest.mark.parametrize("kl_coef,entropy_coef", [(0.0, 0.0), (0.05, 0.01)])
def test_update_is_the_same_with_packing_on_and_off(kl_coef, entropy_coef):
    """A whole RL update (two mini-batches, micro-batches, AdamW) gives the same weights and statistics packed or
    not, including a mini-batch whose every advantage is 0 (AdamW still takes its zero-gradient step)."""
    samples = shared_prefix_samples(5, groups=3, group_size=4)
    zero = [TrainingSample(s.prompt_ids, s.response_ids, s.loss_mask, s.old_logprobs, [0.0] * len(s.advantages),
                           s.rollout) for s in samples[:4]]
    results = []
    for packing in (False, True):
        cfg = TrainConfig(packing=packing, mini_batches=3, micro_batch_size=3, pack_tokens=48, lr=1e-2,
                          kl_coef=kl_coef, entropy_coef=entropy_coef)
        model = tiny_qwen2(5, layers=2)
        tr = PolicyTrainer(model, cfg, PAD_ID, seed=0)
        s1 = tr.update(samples)
        s2 = tr.update(zero)  # every advantage 0: a zero-gradient step, momentum carries on
        results.append((copy.deepcopy(model.state_dict()), s1, s2))
    (wa, a1, a2), (wb, b1, b2) = results
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-10, rtol=1e-8), k
    for x, y in ((a1, b1), (a2, b2)):
        assert abs(x.loss - y.loss) < 1e-10 and abs(x.clip_frac - y.clip_frac) < 1e-10
        assert abs(x.kl - y.kl) < 1e-10 and abs(x.entropy - y.entropy) < 1e-10
        assert x.optimizer_steps == y.optimizer_steps and x.num_tokens == y.num_tokens
    assert b1.forward_tokens < a1.forward_tokens


def test_kl_to_init_is_the_k3_estimate_over_sampled_tokens():
    """kl_to_init = mean over the sampled tokens of exp(r) − r − 1, r = log π_init − log π_behaviour: 0 when the
    behaviour log-probs are the initial policy's own, the hand-computed value when they are shifted."""
    samples = shared_prefix_samples(6)
    model = tiny_qwen2(6, layers=1)
    tr = PolicyTrainer(model, TrainConfig(log_kl_to_init=True), PAD_ID, seed=0)
    own = []
    with torch.no_grad():
        for s in samples:
            lp, _ = token_logprobs(model, collate([s], PAD_ID, dtype=torch.float64))
            P = len(s.prompt_ids)
            true = lp[0, P - 1 : P - 1 + len(s.response_ids)].tolist()
            own.append(TrainingSample(s.prompt_ids, s.response_ids, s.loss_mask,
                                      [t if m else 0.0 for t, m in zip(true, s.loss_mask)], s.advantages, s.rollout))
    assert abs(tr.kl_to_init(own)) < 1e-12
    shifted = [TrainingSample(s.prompt_ids, s.response_ids, s.loss_mask, [o - 0.3 * m for o, m in
                                                                          zip(s.old_logprobs, s.loss_mask)],
                              s.advantages, s.rollout) for s in own]
    n = sum(sum(s.loss_mask) for s in own)
    r = 0.3  # log π_init − log π_behaviour on every trained token
    assert tr.kl_to_init(shifted) == pytest.approx(math.exp(r) - r - 1.0, abs=1e-12)
    assert n > 0
    # masked samples (an overlong rollout's) still count: the policy that sampled them moved all the same
    masked = [TrainingSample(s.prompt_ids, s.response_ids, [0] * len(s.loss_mask), s.old_logprobs, s.advantages,
                             s.rollout, sampled_mask=list(s.loss_mask)) for s in shifted]
    assert tr.kl_to_init(masked) == pytest.approx(math.exp(r) - r - 1.0, abs=1e-12)



def test_kl_to_init_every_k_updates_leaves_the_update_alone():
    """``train.kl_to_init_every = k``: updates 0, k, 2k, … measure kl_to_init (the value measuring every update
    gives), the others report NaN; the update's weights and statistics are the same either way."""
    samples = shared_prefix_samples(6)
    runs = {}
    for every in (1, 2):
        cfg = TrainConfig(log_kl_to_init=True, lr=1e-2, mini_batches=2, micro_batch_size=3)
        cfg.kl_to_init_every = every
        model = tiny_qwen2(6, layers=1)
        tr = PolicyTrainer(model, cfg, PAD_ID, seed=0)
        runs[every] = ([tr.update(samples) for _ in range(3)], model.state_dict())
    (each, w_each), (some, w_some) = runs[1], runs[2]
    assert [math.isnan(s.kl_to_init) for s in each] == [False] * 3
    assert [math.isnan(s.kl_to_init) for s in some] == [False, True, False]
    assert (some[0].kl_to_init, some[2].kl_to_init) == (each[0].kl_to_init, each[2].kl_to_init)
    for a, b in zip(each, some):
        assert (a.loss, a.grad_norm, a.clip_frac, a.num_tokens) == (b.loss, b.grad_norm, b.clip_frac, b.num_tokens)
    assert all(torch.equal(w_each[k], w_some[k]) for k in w_each)

def test_sft_loss_is_the_same_packed_or_not():
    from supo.trainer.policy_trainer import sft_loss

    samples = [TrainingSample(s.prompt_ids, s.response_ids, s.loss_mask, s.old_logprobs, [0.0] * len(s.advantages),
                              s.rollout) for s in shared_prefix_samples(7)]
    model = tiny_qwen2(7, layers=2)
    a = sft_loss(model, samples, PAD_ID, packing=False)
    a.backward()
    ga = grads_of(model)
    model.zero_grad(set_to_none=True)
    b = sft_loss(model, samples, PAD_ID, packing=True, pack_tokens=64)
    b.backward()
    gb = grads_of(model)
    assert abs(float(a.detach()) - float(b.detach())) < 1e-12
    for k in ga:
        assert torch.allclose(ga[k], gb[k], atol=1e-12, rtol=1e-10), k
