"""supo.algo.objective: the whole loss built in one place — the default (clip-higher, token-mean) is the loss of
before to the bit; sequence-mean follows its formula and does not depend on how a mini-batch is cut into
micro-batches; and a sequence-level (GSPO-style) policy loss is one registry entry that the trainer runs unchanged,
with the same update packed or not."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from algo_helpers import PAD_ID
from supo.algo.loss import POLICY_LOSSES, kl_k3, policy_loss, register_policy_loss
from supo.algo.objective import AGGREGATIONS, MiniBatchCounts, Objective, micro_batch_loss
from supo.config import ConfigError, TrainConfig, load_config
from supo.trainer.policy_trainer import PolicyTrainer
from supo.types import TrainingSample

D = torch.float64


@pytest.fixture(autouse=True)
def float64_rmsnorm(monkeypatch):
    """Qwen2RMSNorm in its input's dtype (see tests/test_packing.py): exact float64 comparisons."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(Qwen2RMSNorm, "forward", forward)


def _tensors(seed: int, B: int = 3, T: int = 6):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=D) * 3
    lp = old + 0.4 * torch.randn(B, T, generator=g, dtype=D)
    adv = torch.randn(B, 1, generator=g, dtype=D).expand(B, T).clone()
    mask = (torch.rand(B, T, generator=g) < 0.7).to(D)
    seq = torch.arange(B)[:, None].expand(B, T).clone()
    return lp, old, adv * mask, mask, seq


def test_the_default_objective_is_the_token_mean_clipped_loss_of_before():
    lp, old, adv, mask, seq = _tensors(0)
    counts = MiniBatchCounts(float(mask.sum()), tuple(mask.sum(1).tolist()))
    loss, st = micro_batch_loss(Objective(), lp, old, adv, mask, seq, counts)
    ref, ref_st = policy_loss("clip_higher", lp, old, adv, mask, num_tokens=counts.num_tokens)
    assert torch.equal(loss, ref) and st["clip_frac"] == ref_st["clip_frac"]
    ref_lp, ent = lp - 0.1, torch.rand_like(lp)
    loss2, st2 = micro_batch_loss(Objective(kl_coef=0.1, entropy_coef=0.01), lp, old, adv, mask, seq, counts,
                                  entropy=ent, ref_logprobs=ref_lp)
    n = float(mask.sum())
    kl = (kl_k3(lp, ref_lp) * mask).sum() / n
    e = (ent * mask).sum() / n
    assert torch.allclose(loss2, ref + 0.1 * kl - 0.01 * e, rtol=0, atol=1e-15)
    assert st2["kl"] == pytest.approx(float(kl)) and st2["entropy"] == pytest.approx(float(e))
    with pytest.raises(ValueError, match="reference policy's log-probs"):
        micro_batch_loss(Objective(kl_coef=0.1), lp, old, adv, mask, seq, counts)


def test_sequence_mean_is_the_mean_of_each_samples_token_mean_whatever_the_micro_batches():
    lp, old, adv, mask, seq = _tensors(1, B=4)
    mask[2] = 0.0  # a sample without trained tokens does not count
    counts = MiniBatchCounts.of([TrainingSample([1], [1] * 6, [int(m) for m in row], [0.0] * 6, [0.0] * 6, 0)
                                 for row in mask.tolist()])
    assert counts.num_seqs == 3 and counts.num_tokens == float(mask.sum())
    loss, _ = micro_batch_loss(Objective(loss_agg="sequence-mean"), lp, old, adv, mask, seq, counts)
    per_token, _ = POLICY_LOSSES["clip_higher"](lp, old, adv)
    want = sum(float((per_token[b] * mask[b]).sum() / mask[b].sum()) for b in (0, 1, 3)) / 3
    assert float(loss) == pytest.approx(want, abs=1e-14)
    parts = [micro_batch_loss(Objective(loss_agg="sequence-mean"), lp[r], old[r], adv[r], mask[r], seq[r], counts)[0]
             for r in (slice(0, 1), slice(1, 4))]
    assert float(sum(parts)) == pytest.approx(float(loss), abs=1e-14)


def test_unknown_terms_are_named():
    lp, old, adv, mask, seq = _tensors(2)
    counts = MiniBatchCounts(float(mask.sum()), ())
    with pytest.raises(ValueError, match="unknown loss aggregation 'nope'; choose one of token-mean"):
        micro_batch_loss(Objective(loss_agg="nope"), lp, old, adv, mask, seq, counts)
    with pytest.raises(ValueError, match="shape mismatch"):
        micro_batch_loss(Objective(), lp, old, adv, mask, seq[:, :2], counts)
    with pytest.raises(ConfigError, match="train.loss_agg"):
        load_config(None, {"train.loss_agg": "nope"})
    assert set(AGGREGATIONS) >= {"token-mean", "sequence-mean"}


def gspo_style(logprobs, old_logprobs, advantages, clip_low=0.2, clip_high=0.28, *, mask, seq_ids):
    """A sequence-level importance ratio (GSPO): s = exp(mean over the sample's trained tokens of log π − log π_old),
    clipped per sequence, its gradient flowing through every token (GSPO-token with equal advantages)."""
    ids = seq_ids.clamp_min(0).reshape(-1)
    n = int(ids.max()) + 1 if ids.numel() else 1
    diff = ((logprobs - old_logprobs) * mask).reshape(-1)
    sums = torch.zeros(n, dtype=logprobs.dtype).index_add(0, ids, diff)
    counts = torch.zeros(n, dtype=logprobs.dtype).index_add(0, ids, mask.reshape(-1)).clamp_min(1.0)
    s = torch.exp(sums / counts)[ids].reshape(logprobs.shape)
    ratio = s.detach() * torch.exp(logprobs - logprobs.detach())
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    return -torch.minimum(unclipped, clipped), (clipped < unclipped).to(logprobs.dtype)


@pytest.fixture
def gspo_registered():
    name = "test-gspo-style"
    register_policy_loss(name)(gspo_style)
    yield name
    POLICY_LOSSES.pop(name)


def test_a_sequence_level_loss_is_one_registry_entry_and_runs_packed_or_not(gspo_registered):
    from algo_helpers import tiny_qwen2
    from test_packing import shared_prefix_samples

    samples = shared_prefix_samples(11, groups=3, group_size=4)
    results = []
    for packing in (False, True):
        cfg = TrainConfig(packing=packing, mini_batches=2, micro_batch_size=3, pack_tokens=48, lr=1e-2,
                          policy_loss=gspo_registered, loss_agg="sequence-mean", clip_low=0.05, clip_high=0.05)
        model = tiny_qwen2(11, layers=2)
        stats = PolicyTrainer(model, cfg, PAD_ID, seed=0).update(samples)
        results.append((copy.deepcopy(model.state_dict()), stats))
    (wa, a), (wb, b) = results
    assert a.clip_frac > 0 and math.isfinite(a.loss)  # the clip is exercised
    assert abs(a.loss - b.loss) < 1e-10 and abs(a.clip_frac - b.clip_frac) < 1e-10
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-10, rtol=1e-8), k
    base = tiny_qwen2(11, layers=2).state_dict()
    assert any(not torch.equal(base[k], wa[k]) for k in wa)  # it trained


def test_the_trainer_reads_the_objective_from_the_config_once():
    """The algorithm functions take values: the trainer builds them from ``train.*``, and the paper's terms (R10) are
    the defaults of both."""
    from supo.trainer.policy_trainer import objective_of

    assert objective_of(TrainConfig()) == Objective()
    cfg = TrainConfig(policy_loss="clip", clip_low=0.1, clip_high=0.3, loss_agg="sequence-mean", kl_coef=0.1,
                      entropy_coef=0.01)
    assert objective_of(cfg) == Objective("clip", 0.1, 0.3, "sequence-mean", 0.1, 0.01)
