"""Invariants of the policy losses (R10): clip-higher bounds, token-mean over the mini-batch, masking, registry."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from supo.algo.loss import POLICY_LOSSES, policy_loss

SETTINGS = settings(max_examples=40, deadline=None)
D = torch.float64


def _hand_clip_higher(ratio: float, adv: float, lo: float = 0.2, hi: float = 0.28) -> float:
    """−min(ρA, clip(ρ, 1−lo, 1+hi)·A), written out case by case."""
    clipped_ratio = min(max(ratio, 1 - lo), 1 + hi)
    return -min(ratio * adv, clipped_ratio * adv)


RATIOS = [0.3, 0.79, 0.8, 0.81, 0.95, 1.0, 1.1, 1.2, 1.21, 1.27, 1.28, 1.29, 1.5, 3.0]


@pytest.mark.parametrize("adv", [1.5, -1.5])
def test_clip_higher_bounds_are_asymmetric(adv):
    ratio = torch.tensor(RATIOS, dtype=D)
    old = torch.full_like(ratio, -2.0)
    lp = (old + torch.log(ratio)).requires_grad_(True)
    a = torch.full_like(ratio, adv)
    per_token, was_clipped = POLICY_LOSSES["clip_higher"](lp, old, a)
    expected = [_hand_clip_higher(r, adv) for r in RATIOS]
    torch.testing.assert_close(per_token, torch.tensor(expected, dtype=D), rtol=0, atol=1e-12)
    # the upper bound is 1.28, not 1.2: for A > 0 a ratio of 1.25 is *not* clipped; for A < 0 the bound is 0.8
    if adv > 0:
        exp_clipped = [r > 1.28 for r in RATIOS]
        assert per_token[RATIOS.index(1.5)].item() == pytest.approx(-1.28 * adv, abs=1e-12)
        assert per_token[RATIOS.index(1.21)].item() == pytest.approx(-1.21 * adv, abs=1e-12)
        assert per_token[RATIOS.index(0.3)].item() == pytest.approx(-0.3 * adv, abs=1e-12)  # no lower clip for A > 0
    else:
        exp_clipped = [r < 0.8 for r in RATIOS]
        assert per_token[RATIOS.index(0.3)].item() == pytest.approx(-0.8 * adv, abs=1e-12)
        assert per_token[RATIOS.index(3.0)].item() == pytest.approx(-3.0 * adv, abs=1e-12)  # no upper clip for A < 0
    # exactly at the bounds nothing is counted as clipped (ties); strictly outside they are
    for r, c, flag in zip(RATIOS, exp_clipped, was_clipped.tolist()):
        if r not in (0.8, 1.28):
            assert bool(flag) == c, (r, adv)
    # gradient wrt the log-prob: −A·ρ where not clipped, 0 where clipped
    per_token.sum().backward()
    for r, c, g in zip(RATIOS, exp_clipped, lp.grad.tolist()):
        if r in (0.8, 1.28):
            continue
        assert g == pytest.approx(0.0 if c else -adv * r, abs=1e-12), (r, adv)


def test_symmetric_clip_uses_clip_low_on_both_sides():
    ratio = torch.tensor([0.5, 1.25, 1.5], dtype=D)
    old = torch.zeros_like(ratio)
    per_token, _ = POLICY_LOSSES["clip"](torch.log(ratio), old, torch.ones_like(ratio))
    torch.testing.assert_close(per_token, torch.tensor([-0.5, -1.2, -1.2], dtype=D), rtol=0, atol=1e-12)


def test_policy_loss_clip_higher_matches_hand_formula_token_mean():
    ratios = [0.5, 1.0, 1.5, 0.7, 1.3, 1.1]
    advs = [1.0, -2.0, 0.5, -1.0, 2.0, 3.0]
    mask = [1, 1, 1, 1, 1, 0]
    old = torch.full((1, 6), -1.0, dtype=D)
    lp = old + torch.log(torch.tensor([ratios], dtype=D))
    loss, stats = policy_loss("clip_higher", lp, old, torch.tensor([advs], dtype=D), torch.tensor([mask], dtype=D))
    hand = [_hand_clip_higher(r, a) for r, a, m in zip(ratios, advs, mask) if m]
    assert loss.item() == pytest.approx(sum(hand) / 5, abs=1e-12)
    # clipped: (1.5, +0.5) above 1.28 and (0.7, −1) below 0.8; (1.3, +2) above 1.28 → 3 of 5 valid tokens
    assert stats["clip_frac"] == pytest.approx(3 / 5, abs=1e-12)


@SETTINGS
@given(data=st.data())
def test_loss_at_ratio_one_is_minus_mean_advantage(data):
    B, T = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 9))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    mask = (torch.rand(B, T, generator=g) < 0.6).to(D)
    mask[0, 0] = 1.0
    adv = torch.randn(B, T, generator=g, dtype=D)
    old = -torch.rand(B, T, generator=g, dtype=D) * 5
    for name in sorted(POLICY_LOSSES):
        loss, stats = policy_loss(name, old.clone(), old, adv, mask)
        expected = -(adv * mask).sum() / mask.sum()
        torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
        assert stats["clip_frac"] == 0.0


def _random_batch(B, T, seed, dtype=D):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=dtype) * 4
    lp = old + (torch.rand(B, T, generator=g, dtype=dtype) - 0.5)  # ratios in [0.61, 1.65]: clipped and not
    adv = torch.randn(B, T, generator=g, dtype=dtype)
    mask = (torch.rand(B, T, generator=g) < 0.7).to(dtype)
    mask[:, 0] = 1.0
    return lp, old, adv, mask


def test_masked_tokens_and_padding_change_nothing():
    lp, old, adv, mask = _random_batch(3, 7, seed=1)
    lp = lp.clone().requires_grad_(True)
    loss, stats = policy_loss("clip_higher", lp, old, adv, mask)
    loss.backward()
    g_ref = lp.grad.clone()

    # garbage under mask 0, plus two padding columns and one padding row, all with mask 0
    lp2 = torch.full((4, 9), 7.0, dtype=D)
    old2 = torch.full((4, 9), -30.0, dtype=D)
    adv2 = torch.full((4, 9), 1e3, dtype=D)
    mask2 = torch.zeros(4, 9, dtype=D)
    lp2[:3, :7] = torch.where(mask.bool(), lp.detach(), torch.tensor(5.0, dtype=D))
    old2[:3, :7] = torch.where(mask.bool(), old, torch.tensor(-9.0, dtype=D))
    adv2[:3, :7] = torch.where(mask.bool(), adv, torch.tensor(-100.0, dtype=D))
    mask2[:3, :7] = mask
    lp2.requires_grad_(True)
    loss2, stats2 = policy_loss("clip_higher", lp2, old2, adv2, mask2)
    loss2.backward()
    torch.testing.assert_close(loss2, loss.detach(), rtol=0, atol=1e-12)
    assert stats2["clip_frac"] == pytest.approx(stats["clip_frac"], abs=1e-12)
    torch.testing.assert_close(lp2.grad[:3, :7], g_ref, rtol=0, atol=1e-12)
    assert torch.all(lp2.grad[mask2 == 0] == 0)


@SETTINGS
@given(B=st.integers(2, 8), T=st.integers(1, 10), seed=st.integers(0, 10_000), data=st.data())
def test_micro_batches_with_total_num_tokens_reproduce_the_whole_batch(B, T, seed, data):
    lp, old, adv, mask = _random_batch(B, T, seed)
    whole_lp = lp.clone().requires_grad_(True)
    whole, _ = policy_loss("clip_higher", whole_lp, old, adv, mask)
    whole.backward()

    cuts = sorted(set(data.draw(st.lists(st.integers(1, B - 1), max_size=B - 1))))
    bounds = [0, *cuts, B]
    n = mask.sum()
    micro_lp = lp.clone().requires_grad_(True)
    total = torch.zeros((), dtype=D)
    clip = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        part, st_ = policy_loss("clip_higher", micro_lp[a:b], old[a:b], adv[a:b], mask[a:b], num_tokens=n)
        part.backward()  # gradient accumulation
        total = total + part.detach()
        clip += st_["clip_frac"]
    torch.testing.assert_close(total, whole.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(micro_lp.grad, whole_lp.grad, rtol=0, atol=1e-12)
    _, whole_stats = policy_loss("clip_higher", lp, old, adv, mask)
    assert clip == pytest.approx(whole_stats["clip_frac"], abs=1e-12)


def test_token_mean_denominator_is_the_num_tokens_given():
    lp, old, adv, mask = _random_batch(2, 5, seed=3)
    default, _ = policy_loss("clip_higher", lp, old, adv, mask)
    explicit, _ = policy_loss("clip_higher", lp, old, adv, mask, num_tokens=mask.sum().item())
    doubled, _ = policy_loss("clip_higher", lp, old, adv, mask, num_tokens=2 * mask.sum().item())
    torch.testing.assert_close(default, explicit, rtol=0, atol=1e-12)
    torch.testing.assert_close(doubled, default / 2, rtol=0, atol=1e-12)


def test_all_masked_batch_gives_zero_loss_not_nan():
    lp, old, adv, _ = _random_batch(2, 4, seed=5)
    loss, stats = policy_loss("clip_higher", lp, old, adv, torch.zeros(2, 4, dtype=D))
    assert loss.item() == 0.0 and stats["clip_frac"] == 0.0


def test_unknown_loss_name_raises_naming_the_choices():
    lp, old, adv, mask = _random_batch(1, 3, seed=0)
    with pytest.raises(ValueError, match="nope") as e:
        policy_loss("nope", lp, old, adv, mask)
    for name in POLICY_LOSSES:
        assert name in str(e.value)
    assert {"clip_higher", "clip"} <= set(POLICY_LOSSES)


@pytest.mark.parametrize("which", ["old", "adv", "mask", "lp"])
def test_shape_mismatch_raises(which):
    lp, old, adv, mask = _random_batch(2, 4, seed=0)
    bad = torch.zeros(2, 5, dtype=D)
    args = {"lp": lp, "old": old, "adv": adv, "mask": mask}
    args[which] = bad
    with pytest.raises(ValueError, match="shape"):
        policy_loss("clip_higher", args["lp"], args["old"], args["adv"], args["mask"])
