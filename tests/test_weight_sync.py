"""supo.distributed.weight_sync and the weight path without the driver: on a real 2-rank trainer group, rank 0 sends
the gathered weights to the rollout workers itself (the caller gets an ObjectRef, never the tensors), writes the
checkpoints and the final HF model, and every rank restores from a checkpoint folder; the train loop holds no copy
of the model. (Rollout workers are stand-in actors with the same ``receive_weights`` / ``push_weights`` methods: the
engine's own loading is tested in tests/test_rollout_workers.py. The NCCL strategy needs CUDA: only its refusal on
CPU is tested here.)"""

from __future__ import annotations

import ast
import random
import sys
from pathlib import Path

import pytest
import torch

from supo.config import ConfigError, TrainConfig, load_config
from supo.distributed.weight_sync import WEIGHT_SYNCS, ObjectStoreReceiver, make_receiver, make_sender
from supo.types import TrainingSample

REPO = Path(__file__).resolve().parents[1]
VOCAB, PAD = 64, 0


def test_the_strategies_and_their_config_field():
    assert load_config(None).trainer.weight_sync == "object-store"
    choices = ", ".join(WEIGHT_SYNCS)  # the config's choices are the registry's keys
    with pytest.raises(ConfigError, match=f"^trainer.weight_sync: unknown strategy 'carrier-pigeon'; choose one of "
                                          f"{choices}$"):
        load_config(None, {"trainer.weight_sync": "carrier-pigeon"})
    with pytest.raises(ValueError, match="unknown weight sync"):
        make_sender("carrier-pigeon")
    with pytest.raises(TypeError, match="expected a state dict"):
        ObjectStoreReceiver().receive([("w", "float32", (2,))])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_nccl_is_refused_without_cuda():
    for make in (make_sender, make_receiver):
        with pytest.raises(RuntimeError, match="nccl needs CUDA"):
            make("nccl")


def test_the_train_loop_holds_no_copy_of_the_model():
    """No model load, state-dict gather or weight push in the driver's loop: the ranks do them."""
    tree = ast.parse((REPO / "supo" / "train_loop.py").read_text())
    calls = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
             for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not calls & {"load_policy", "state_dict", "push_weights", "checkpoint_state", "save_pretrained"}
    assert {"sync_weights", "save_checkpoint", "save_model", "restore_from"} <= calls


class FakeWorker:
    """A rollout worker's weight-loading surface, without an engine: it keeps what it was sent."""

    def __init__(self) -> None:
        self.weights: dict | None = None

    def receive_weights(self, payload) -> float:
        self.weights = make_receiver("object-store").receive(payload)
        return 0.0

    def push_weights(self, state_dict) -> float:
        self.weights = state_dict
        return 0.0

    def get(self) -> dict | None:
        return self.weights


def _samples(n: int, seed: int) -> list[TrainingSample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        R, adv = rng.randint(3, 8), rng.uniform(-2, 2)
        out.append(TrainingSample([rng.randint(1, VOCAB - 1) for _ in range(4)],
                                  [rng.randint(1, VOCAB - 1) for _ in range(R)], [1] * R,
                                  [-rng.uniform(3.5, 5.0)] * R, [adv] * R, rollout=i))
    return out


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _weights(group, folder: Path) -> dict:
    """The group's current weights as the product keeps them: a checkpoint rank 0 writes, read back."""
    from supo.checkpoint import load_checkpoint, rng_state

    return load_checkpoint(group.save_checkpoint(folder, 0, [], None, None, rng_state())).trainer_state["model"]


@pytest.mark.slow
def test_rank_zero_sends_writes_and_restores_without_the_driver(tmp_path):
    import ray
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from supo.checkpoint import load_checkpoint, rng_state
    from supo.distributed import init_ray
    from supo.distributed.trainer_group import TrainerGroup
    from supo.models import build_tokenizer, load_policy

    model_dir = tmp_path / "model"
    tok = build_tokenizer(["a b c d e f g h"] * 20, VOCAB, model_dir)
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                 num_attention_heads=1, num_key_value_heads=1, head_dim=64,
                                 max_position_embeddings=128, tie_word_embeddings=True,
                                 pad_token_id=tok.pad_token_id)).float().save_pretrained(str(model_dir))
    init_ray(num_cpus=4)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = TrainConfig(mini_batches=1, micro_batch_size=2, lr=1e-3, log_kl_to_init=False)
    group = TrainerGroup(2, str(model_dir), cfg, PAD, 64, 0, threads_per_rank=1)
    workers = [ray.remote(FakeWorker).remote() for _ in range(2)]
    try:
        group.connect_weight_sync(workers)
        group.reset(model_dir, cfg, 64, 0, PAD)  # every rank reads the folder itself
        first = group.sync_weights(workers)
        assert isinstance(first.ref, ray.ObjectRef) and first.seconds > 0  # the driver holds a ref only
        initial = _weights(group, tmp_path / "w0")
        assert _same(initial, load_policy(model_dir).state_dict())
        assert all(_same(ray.get(w.get.remote()), initial) for w in workers)

        group.update(_samples(4, 1))
        sent = group.sync_weights(workers)
        after = _weights(group, tmp_path / "w1")
        assert not _same(after, initial) and all(_same(ray.get(w.get.remote()), after) for w in workers)
        restarted = ray.remote(FakeWorker).remote()  # what the pool does for a restarted worker: load the ref
        ray.get(restarted.push_weights.remote(sent.ref))
        assert _same(ray.get(restarted.get.remote()), after)

        rng = rng_state()
        ckpt = group.save_checkpoint(tmp_path / "steps", 1, [{"step": 0}], "run-1", {"arm": "supo"}, rng)
        state = load_checkpoint(ckpt)
        assert (state.step, state.history, state.mlflow_run_id) == (1, [{"step": 0}], "run-1")
        assert _same(state.trainer_state["model"], after) and state.trainer_state["updates"] == 1
        assert state.trainer_state["optimizer"]["state"] and torch.equal(state.rng["torch"], rng["torch"])
        assert _same({k: v for k, v in load_policy(ckpt).state_dict().items()}, after)
        light = load_checkpoint(ckpt, trainer_state=False)
        assert light.trainer_state is None and torch.equal(light.rng["torch"], rng["torch"])
        final = group.save_model(tmp_path / "final")
        assert _same(load_policy(final).state_dict(), after) and (final / "tokenizer.json").exists()

        group.update(_samples(4, 2))
        assert not _same(_weights(group, tmp_path / "w2"), after)
        assert group.restore_from(ckpt) == 1  # every rank reads the checkpoint: back in time
        assert _same(_weights(group, tmp_path / "w3"), after)
    finally:
        group.shutdown()
        for w in workers:
            ray.kill(w)
