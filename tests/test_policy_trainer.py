"""Invariants of the RL update on a tiny local Qwen2: S = 0 equals plain multi-turn GRPO (R11), the optimizer-step
count does not depend on the number of segments (R10), micro-batching changes nothing."""

from __future__ import annotations

import random

import pytest
import torch

from algo_helpers import (
    EPS,
    PAD_ID,
    f32,
    grads_of,
    grpo_advantages,
    make_rollout,
    split_into_segments,
    tiny_qwen2,
)
from supo.algo.advantage import broadcast, compute_advantages
from supo.algo.loss import policy_loss
from supo.config import TrainConfig
from supo.trainer.batch import collate
from supo.trainer.policy_trainer import PolicyTrainer, token_logprobs
from supo.types import Rollout, Segment, TrainingSample

# ---------------------------------------------------------------------------------------------------------------------
# an independent multi-turn GRPO, written from scratch (no supo code): one forward pass per rollout, own gather


def _ref_token_logprobs(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """log π(response[k] | prompt + response[:k]) for every k, from an unpadded batch-of-one forward pass."""
    seq = torch.tensor([prompt + response], dtype=torch.long)
    logits = model(input_ids=seq).logits[0]  # [L, V], model dtype
    logp = torch.log_softmax(logits, dim=-1)
    P = len(prompt)
    return torch.stack([logp[P - 1 + k, tok] for k, tok in enumerate(response)])


def _grpo_reference_loss(model, rewards, prompts, responses, masks, old_logprobs, lo=0.2, hi=0.28, eps=EPS):
    """Σ over valid tokens of −min(ρA, clip(ρ, 1−lo, 1+hi)A) / (number of valid tokens), A per rollout."""
    advs = grpo_advantages(rewards, eps)
    terms = []
    for a, p, r, m, old in zip(advs, prompts, responses, masks, old_logprobs):
        lp = _ref_token_logprobs(model, p, r)
        for k in range(len(r)):
            if m[k]:
                ratio = torch.exp(lp[k] - old[k])
                terms.append(-torch.minimum(ratio * a, torch.clamp(ratio, 1 - lo, 1 + hi) * a))
    return torch.stack(terms).sum() / len(terms)


def _s0_group(model, seed: int, G: int = 6):
    """G single-segment rollouts of one task (what S = 0 produces): observation tokens masked 0, random rewards,
    random float32 behaviour log-probs near the model's own (so some ratios fall outside [0.8, 1.28])."""
    rng = random.Random(seed)
    rewards = [float(rng.choice([0.0, 1.0, 0.25])) for _ in range(G)]
    rewards[0], rewards[1] = 1.0, 0.0  # not degenerate
    prompts, responses, masks, olds = [], [], [], []
    for _ in range(G):
        P = rng.randint(3, 6)
        prompts.append([rng.randint(1, 63) for _ in range(P)])
        # turns: action (mask 1) then observation (mask 0), 2–3 turns
        resp, mask = [], []
        for _turn in range(rng.randint(2, 3)):
            n_act, n_obs = rng.randint(1, 4), rng.randint(1, 3)
            resp += [rng.randint(1, 63) for _ in range(n_act + n_obs)]
            mask += [1] * n_act + [0] * n_obs
        responses.append(resp)
        masks.append(mask)
        with torch.no_grad():
            true = _ref_token_logprobs(model, prompts[-1], resp).tolist()
        olds.append([f32(t + rng.uniform(-0.45, 0.45)) if m else 0.0 for t, m in zip(true, mask)])
    rollouts = [
        Rollout(task_id="task-7", group_id="task-7/step-3", index=j, reward=rewards[j], finished=True,
                segments=[Segment(prompts[j], responses[j], masks[j], olds[j], index=0, is_last=True)])
        for j in range(G)
    ]
    return rollouts, rewards, prompts, responses, masks, olds


def _supo_vs_grpo(seed: int):
    model = tiny_qwen2(seed=seed, layers=2)  # float64
    rollouts, rewards, prompts, responses, masks, olds = _s0_group(model, seed)

    # SUPO pipeline
    model.zero_grad(set_to_none=True)
    res = compute_advantages(rollouts, "rollout", overlong="loss-mask", eps=EPS)
    batch = collate(broadcast(rollouts, res), PAD_ID, dtype=torch.float64)
    lp, _ = token_logprobs(model, batch)
    supo_loss, stats = policy_loss("clip_higher", lp, batch.old_logprobs, batch.advantages, batch.loss_mask,
                                   clip_low=0.2, clip_high=0.28)
    supo_loss.backward()
    supo_grads = grads_of(model)

    # plain multi-turn GRPO
    model.zero_grad(set_to_none=True)
    ref_loss = _grpo_reference_loss(model, rewards, prompts, responses, masks, olds)
    ref_loss.backward()
    ref_grads = grads_of(model)
    assert 0.0 < stats["clip_frac"] < 1.0  # both clipped and unclipped tokens are exercised
    return supo_loss.detach(), ref_loss.detach(), supo_grads, ref_grads


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_s0_supo_loss_equals_plain_grpo_exactly_in_float64(seed):
    supo_loss, ref_loss, supo_grads, ref_grads = _supo_vs_grpo(seed)
    assert ref_loss.dtype == torch.float64
    assert abs(ref_loss.item()) > 1e-3
    assert abs(supo_loss.double().item() - ref_loss.item()) <= 1e-12, (supo_loss.item(), ref_loss.item())
    assert sum(float(g.abs().sum()) for g in ref_grads.values()) > 0
    for name, g in ref_grads.items():
        torch.testing.assert_close(supo_grads[name].double(), g, rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_s0_supo_loss_matches_plain_grpo_to_float32_rounding(seed):
    """The same comparison at float32 tolerance: pins the structure (advantages, masks, alignment, clipping,
    token-mean) even while the exact float64 comparison above fails for precision reasons."""
    supo_loss, ref_loss, supo_grads, ref_grads = _supo_vs_grpo(seed)
    torch.testing.assert_close(supo_loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    for name, g in ref_grads.items():
        torch.testing.assert_close(supo_grads[name].double(), g, rtol=1e-4, atol=1e-6, msg=name)


def test_token_logprobs_keeps_float64_precision():
    model = tiny_qwen2(seed=4)  # float64
    prompt, response = [5, 9, 2, 33], [7, 7, 40, 1, 63]
    sample = TrainingSample(prompt, response, [1] * 5, [0.0] * 5, [0.0] * 5, rollout=0)
    with torch.no_grad():
        lp, _ = token_logprobs(model, collate([sample], PAD_ID))
        ref = _ref_token_logprobs(model, prompt, response)
    assert lp.dtype == torch.float64, f"a float64 model's log-probs come back as {lp.dtype}"
    torch.testing.assert_close(lp[0, len(prompt) - 1:], ref, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# optimizer steps = mini_batches × ppo_epochs, whatever the number of segments


def _count_steps(trainer: PolicyTrainer) -> list[int]:
    calls: list[int] = []
    real_step = trainer.optimizer.step

    def counting_step(*args, **kwargs):
        calls.append(1)
        return real_step(*args, **kwargs)

    trainer.optimizer.step = counting_step
    return calls


def _same_rollouts_in_k_segments(k: int) -> list[Rollout]:
    rng = random.Random(11)
    out = []
    for j, reward in enumerate([1.0, 0.0, 0.0, 1.0]):
        prompt = [rng.randint(1, 63) for _ in range(4)]
        resp = [rng.randint(1, 63) for _ in range(15)]
        mask = [1 if (t % 4) < 2 else 0 for t in range(15)]
        lps = [f32(-rng.uniform(1, 5)) if m else 0.0 for m in mask]
        out.append(Rollout(task_id="t", group_id="t/0", index=j, reward=reward,
                           segments=split_into_segments(prompt, resp, mask, lps, k), num_summaries=k - 1))
    return out


@pytest.mark.parametrize("num_segments", [1, 2, 5])
def test_optimizer_steps_do_not_depend_on_segment_count(num_segments):
    rollouts = _same_rollouts_in_k_segments(num_segments)
    assert all(len(r.segments) == num_segments for r in rollouts)
    samples = broadcast(rollouts, compute_advantages(rollouts))
    assert len(samples) == 4 * num_segments
    cfg = TrainConfig(mini_batches=3, ppo_epochs=2, micro_batch_size=4, lr=1e-3)
    trainer = PolicyTrainer(tiny_qwen2(seed=0, dtype=torch.float32), cfg, pad_id=PAD_ID)
    calls = _count_steps(trainer)
    stats = trainer.update(samples)
    assert stats.optimizer_steps == cfg.mini_batches * cfg.ppo_epochs == 6
    assert len(calls) == 6
    assert stats.num_samples == len(samples)


def test_optimizer_steps_with_fewer_samples_than_mini_batches():
    rollouts = [make_rollout("g", 0, 1.0, [5], masks=[[1, 1, 0, 1, 1]]), make_rollout("g", 1, 0.0, [3])]
    samples = broadcast(rollouts, compute_advantages(rollouts))
    cfg = TrainConfig(mini_batches=4, ppo_epochs=1, micro_batch_size=64)
    trainer = PolicyTrainer(tiny_qwen2(seed=0, dtype=torch.float32), cfg, pad_id=PAD_ID)
    calls = _count_steps(trainer)
    stats = trainer.update(samples)
    assert stats.optimizer_steps == 4 and len(calls) == 4


# ---------------------------------------------------------------------------------------------------------------------
# micro-batching does not change the update


def _update_samples():
    rs = [
        make_rollout("g", 0, 1.0, [6, 4, 7], trigger_actions=1),
        make_rollout("g", 1, 0.0, [5]),
        make_rollout("g", 2, 0.0, [3, 8], trigger_actions=2),
        make_rollout("g", 3, 1.0, [9, 2]),
        make_rollout("g", 4, 0.0, [4, 4], overlong=True),
    ]
    for r in rs:  # make sure every context segment trains something
        for s in r.segments:
            s.response_mask[0] = 1
            s.logprobs[0] = -2.5
    return broadcast(rs, compute_advantages(rs))


def test_micro_batch_size_does_not_change_the_update():
    samples = _update_samples()
    assert len(samples) == 13
    results = {}
    for mbs in (1, 64):
        model = tiny_qwen2(seed=3, layers=2)  # float64
        init = {n: p.detach().clone() for n, p in model.named_parameters()}
        cfg = TrainConfig(mini_batches=2, ppo_epochs=2, micro_batch_size=mbs, lr=1e-3, max_grad_norm=1e6)
        trainer = PolicyTrainer(model, cfg, pad_id=PAD_ID, seed=5)
        stats = trainer.update(samples)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        results[mbs] = (stats, params, grads_of(model), init)
    (s1, p1, g1, init), (s64, p64, g64, _) = results[1], results[64]
    assert s1.optimizer_steps == s64.optimizer_steps == 4
    assert any(not torch.equal(p1[n], init[n]) for n in p1)  # the update did something
    # the reported loss is a float sum over micro-batches (float32 while token_logprobs returns float32)
    assert s1.loss == pytest.approx(s64.loss, rel=1e-6, abs=1e-9)
    assert s1.num_tokens == s64.num_tokens
    for n in p1:
        # gradient of the last mini-batch (scale-sensitive, unlike one Adam step) and the parameters after 4 steps
        torch.testing.assert_close(g1[n], g64[n], rtol=0, atol=1e-12, msg=n)
        torch.testing.assert_close(p1[n], p64[n], rtol=0, atol=1e-12, msg=n)
