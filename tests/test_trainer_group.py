"""The trainer group on a real local Ray cluster: FSDP2 ranks (gloo) give the update of a plain in-process
``PolicyTrainer`` whatever the world size, gather the full HF state dict, and checkpoint/resume exactly.

One module-scoped scenario runs everything once (Ray start-up and actor start-up dominate the time) and the tests
below check its parts; the group's state is read the way the product reads it, from the checkpoints its rank 0 writes
(``save_checkpoint`` → ``supo.checkpoint.load_checkpoint``):

* a plain ``PolicyTrainer``, a world-1 group and a world-2 group each take one update on the same samples;
* the world-2 group then checkpoints and takes a second update (→ A); a fresh world-1 group restores the checkpoint
  and takes the same second update (→ A up to rounding: a checkpoint taken at one world size loads at another, into an
  optimizer without state); the world-2 group restores it too and repeats the second update (→ A bit for bit).
"""

from __future__ import annotations

import random

import pytest
import torch

from supo.config import TrainConfig
from supo.types import TrainingSample

pytestmark = pytest.mark.slow

PAD = 0
VOCAB = 96
SEED = 3
MAX_SEQ = 64
# 9 samples in 2 mini-batches → 5 rows each (one zero-mask padding row), dealt to 2 ranks → 3 rows each (one more
# padding row), 2 micro-batches per rank; KL and entropy terms on so the reference policy is sharded too.
# lr 1e-4 (the default): Adam turns float rounding in tiny gradients (the attention's key bias gets almost none) into
# parameter differences proportional to lr, ~2e-6 at lr 1e-3 after 4 steps, ~2e-7 here; real updates move ~4e-4.
CFG = TrainConfig(mini_batches=2, ppo_epochs=2, micro_batch_size=2, lr=1e-4, max_grad_norm=1.0, kl_coef=0.05,
                  entropy_coef=0.01)


def _samples(n: int, seed: int) -> list[TrainingSample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        P, R = rng.randint(2, 6), rng.randint(3, 14)
        mask = [rng.randint(0, 1) for _ in range(R)]
        mask[0] = 1
        if i == 2:
            mask = [0] * R  # a sample that trains nothing (masked overlong rollout)
        adv = rng.uniform(-2.0, 2.0)
        out.append(TrainingSample(
            prompt_ids=[rng.randint(1, VOCAB - 1) for _ in range(P)],
            response_ids=[rng.randint(1, VOCAB - 1) for _ in range(R)],
            loss_mask=mask,
            old_logprobs=[-rng.uniform(3.5, 5.5) if m else 0.0 for m in mask],
            advantages=[adv * m for m in mask],
            rollout=i,
        ))
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny float32 Qwen2 with tied embeddings (like the package's models), saved in HF format with a tokenizer
    (rank 0 writes checkpoints in that format)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from supo.models import build_tokenizer

    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=1, num_key_value_heads=1, head_dim=64, max_position_embeddings=256,
                      tie_word_embeddings=True, pad_token_id=PAD)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tg_model")
    Qwen2ForCausalLM(cfg).float().save_pretrained(str(out))
    build_tokenizer(["a b c d e f g h"] * 20, VOCAB, out)
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with 4 logical CPUs (more than the machine's cores is fine: the ranks mostly wait)."""
    import ray

    from supo.distributed import init_ray

    started = not ray.is_initialized()
    init_ray(num_cpus=4)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def runs(ray_cluster, model_dir, tmp_path_factory):
    from concurrent.futures import ThreadPoolExecutor

    from supo.checkpoint import load_checkpoint, rng_state
    from supo.distributed.trainer_group import TrainerGroup
    from supo.models import load_policy
    from supo.trainer.policy_trainer import PolicyTrainer

    first, second = _samples(9, seed=1), _samples(7, seed=2)
    out: dict = {}
    root = tmp_path_factory.mktemp("tg_checkpoints")

    def checkpoint(g: TrainerGroup):
        """A checkpoint of ``g`` (rank 0 writes it) and its trainer state as read back."""
        ckpt = g.save_checkpoint(root / str(len(list(root.iterdir()))), 0, [], None, None, rng_state())
        return ckpt, load_checkpoint(ckpt).trainer_state

    def weights(g: TrainerGroup) -> dict:
        return checkpoint(g)[1]["model"]

    def group(world: int) -> TrainerGroup:
        return TrainerGroup(world, str(model_dir), CFG, PAD, MAX_SEQ, SEED, threads_per_rank=1)

    with ThreadPoolExecutor(3) as pool:  # start the actors (most of this test's time) while the plain run goes
        futures = [pool.submit(group, w) for w in (1, 2, 1)]
        plain = PolicyTrainer(load_policy(model_dir), CFG, PAD, MAX_SEQ, SEED)
        out["plain_init"] = {k: v.detach().clone() for k, v in plain.model.state_dict().items()}
        out["plain"] = (plain.update(first), plain.state_dict())
        g1, g2, fresh = [f.result() for f in futures]
    try:
        out["info"] = g2.info
        out["w1"] = (g1.update(first), weights(g1))
        out["w2"] = (g2.update(first), weights(g2))
        ckpt, out["ckpt"] = checkpoint(g2)
        out["A"] = (g2.update(second), weights(g2))
        out["restored"] = fresh.restore_from(ckpt)  # a new group (no optimizer state yet), and world 2 → world 1
        out["B_fresh"] = (fresh.update(second), weights(fresh))
        g2.restore_from(ckpt)  # back in time, same world size
        out["B_same"] = (g2.update(second), weights(g2))
        too_long = TrainingSample([1] * MAX_SEQ, [2, 3], [1, 1], [-1.0, -1.0], [1.0, 1.0], rollout=0)
        try:
            g2.update([*second, too_long])
        except Exception as e:  # noqa: BLE001 - checked in the test
            out["too_long"] = e
        out["after_error"] = (checkpoint(g2)[1]["updates"], g2.update(second))
        g2.reset(out["plain_init"], CFG, MAX_SEQ, SEED, PAD)  # a new run on the same actors (train --arm a --arm b)
        before = checkpoint(g2)[1]
        out["reset"] = (before["updates"], before["model"], g2.update(first), weights(g2))
    finally:
        for g in (g1, g2, fresh):
            g.shutdown()
    return out


def _close(a: float, b: float, rel: float = 1e-5) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _assert_state_close(a: dict, b: dict, atol: float) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def test_world_sizes_give_the_single_process_update(runs):
    (sp, sdp), (s1, sd1), (s2, sd2) = runs["plain"], runs["w1"], runs["w2"]
    assert [i["rank"] for i in runs["info"]] == [0, 1] and {i["device"] for i in runs["info"]} == {"cpu"}
    for s in (sp, s1, s2):
        assert s.optimizer_steps == CFG.mini_batches * CFG.ppo_epochs == 4
        assert s.num_samples == 9 and s.num_tokens == sp.num_tokens > 0
    assert abs(sp.loss) > 1e-3 and sp.grad_norm > 1e-3 and sp.kl > 0 and sp.entropy > 0 and 0 < sp.clip_frac
    for name in ("loss", "grad_norm", "clip_frac", "kl", "entropy"):
        p, w1, w2 = getattr(sp, name), getattr(s1, name), getattr(s2, name)
        assert _close(w1, p) and _close(w2, p) and _close(w1, w2), (name, p, w1, w2)
    moved = max(float((sdp[k] - runs["plain_init"][k]).abs().max()) for k in sdp)
    assert moved > 1e-4  # the update did something, far above the tolerance below
    _assert_state_close(sd1, sdp, atol=1e-6)
    _assert_state_close(sd2, sdp, atol=1e-6)
    _assert_state_close(sd1, sd2, atol=1e-6)


def test_state_dict_is_the_full_hf_state_dict(runs):
    plain_sd = runs["plain_init"]
    assert "lm_head.weight" in plain_sd  # tied embeddings: HF still lists the head
    for _stats, sd in (runs["w1"], runs["w2"]):
        assert set(sd) == set(plain_sd)
        for k, v in sd.items():
            assert type(v) is torch.Tensor and v.device.type == "cpu", k  # plain tensors, not DTensors
            assert v.shape == plain_sd[k].shape and v.dtype == plain_sd[k].dtype, k
        torch.testing.assert_close(sd["lm_head.weight"], sd["model.embed_tokens.weight"], rtol=0, atol=0)


def test_checkpoint_round_trip_continues_identically(runs):
    state = runs["ckpt"]
    assert state["updates"] == 1 and state["world_size"] == 2 and runs["restored"] == 1
    assert set(state["model"]) == set(runs["plain_init"])
    assert state["optimizer"]["state"]  # Adam moments are in it
    _assert_state_close(state["ref_model"], runs["plain_init"], atol=0)  # kl_coef > 0: the frozen initial policy
    (sa, sda), (sb, sdb), (sf, sdf) = runs["A"], runs["B_same"], runs["B_fresh"]
    assert sa.optimizer_steps == sb.optimizer_steps == sf.optimizer_steps == 4
    assert sa.num_samples == 7
    # restored at the same world size: the same computation, bit for bit
    assert (sb.loss, sb.grad_norm, sb.clip_frac) == (sa.loss, sa.grad_norm, sa.clip_frac)
    _assert_state_close(sdb, sda, atol=0)
    # a fresh group at another world size: the same update up to float rounding
    assert _close(sf.loss, sa.loss) and _close(sf.grad_norm, sa.grad_norm)
    _assert_state_close(sdf, sda, atol=1e-6)
    assert any(not torch.equal(sda[k], state["model"][k]) for k in sda)  # the second update did something


def test_a_rank_error_raises_on_the_driver_and_leaves_the_group_usable(runs):
    """Every rank sees all samples, so a too-long segment raises on every rank before any collective (no hang)."""
    err = runs["too_long"]
    assert isinstance(err, ValueError) and "exceeds the trainer's sequence limit" in str(err)
    updates, stats = runs["after_error"]
    assert updates == 2 and stats.optimizer_steps == 4  # the failed update changed nothing, the next one runs


def test_reset_starts_a_new_run_on_the_same_actors_as_a_fresh_group_would(runs):
    """After updates, a reset to the initial weights makes the group what a new one is: the initial weights, no
    optimizer state, update count 0 — so its first update repeats a fresh group's first update bit for bit."""
    updates, before, stats, after = runs["reset"]
    assert updates == 0
    _assert_state_close(before, runs["plain_init"], atol=0)
    (s2, sd2) = runs["w2"]
    assert (stats.loss, stats.grad_norm, stats.clip_frac) == (s2.loss, s2.grad_norm, s2.clip_frac)
    _assert_state_close(after, sd2, atol=0)
