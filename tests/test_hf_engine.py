"""supo.engines.hf_engine: the ``transformers`` engine on its own (no vLLM) — processed log-probs, per-request seeds,
stopping, in-place weight updates, and the trainer's view of its samples (importance ratio 1). Its parity with the
vLLM engine is in ``tests/test_engine_parity.py``."""

from __future__ import annotations

import pytest
import torch

from supo.config import EngineConfig
from supo.contracts import GenRequest
from supo.engines.hf_engine import HFPolicy, processed_logprobs, sample_row
from supo.models import load_policy
from supo.trainer.batch import collate
from supo.trainer.policy_trainer import token_logprobs
from supo.types import TrainingSample


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFPolicy(tiny_model_dir, EngineConfig(backend="hf", max_model_len=256, max_num_seqs=16), seed=0,
                    temperature=1.0)


def _prompts(tok, n=4):
    return [tok.encode(f"Find the maximum of a hidden array of {6 + i} values.", add_special_tokens=False)
            for i in range(n)]


def _trainer_logprobs(model, prompt, response, temperature=1.0):
    s = TrainingSample(prompt, response, [1] * len(response), [0.0] * len(response), [0.0] * len(response), 0)
    with torch.no_grad():
        lp, _ = token_logprobs(model, collate([s], pad_id=0), temperature=temperature)
    return lp[0, len(prompt) - 1: len(prompt) - 1 + len(response)].tolist()


def test_processed_logprobs_apply_temperature_then_the_nucleus():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.allclose(processed_logprobs(logits, 0.5, 1.0), torch.log_softmax(logits / 0.5, -1))
    assert torch.allclose(processed_logprobs(logits, 0.0, 1.0), torch.log_softmax(logits, -1))  # greedy: raw
    nucleus = processed_logprobs(logits, 1.0, 0.7)  # p = .64 .24 .09 .03: the two most likely reach 0.7
    assert torch.isinf(nucleus[0, 2:]).all() and torch.allclose(nucleus[0, :2].exp().sum(), torch.tensor(1.0))
    assert torch.allclose(nucleus[0, :2], torch.log_softmax(logits[0, :2], -1))
    only_top = processed_logprobs(logits, 1.0, 0.01)
    assert only_top[0, 0] == 0 and torch.isinf(only_top[0, 1:]).all()


def test_the_exponential_race_samples_the_distribution():
    logp = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([sample_row(logp, 1.0, g) for _ in range(6000)]), minlength=3) / 6000
    assert torch.allclose(counts, torch.tensor([0.6, 0.3, 0.1]), atol=0.03)
    assert sample_row(logp, 0.0, None) == 0


def test_behaviour_logprobs_are_the_trainers_at_the_sampling_temperature(tiny_model_dir, tiny_tokenizer):
    """R6 and the importance ratio: the log-probs the engine reports are those the trainer computes for the same
    tokens at the same temperature (ratio 1 at the first mini-batch); the raw model's differ at T = 0.7."""
    model = load_policy(tiny_model_dir).eval()
    engine = HFPolicy(tiny_model_dir, EngineConfig(backend="hf", max_model_len=256), seed=0, temperature=0.7)
    reqs = [GenRequest(k, p, "action", 12, k) for k, p in enumerate(_prompts(tiny_tokenizer))]
    gaps_t, gaps_raw = [], []
    for req, out in zip(reqs, engine.generate(reqs)):
        assert 1 <= len(out.token_ids) <= 12 and len(out.logprobs) == len(out.token_ids)
        at_t = _trainer_logprobs(model, req.context, out.token_ids, temperature=0.7)
        gaps_t += [abs(a - b) for a, b in zip(out.logprobs, at_t)]
        gaps_raw += [abs(a - b) for a, b in zip(out.logprobs, _trainer_logprobs(model, req.context, out.token_ids))]
        assert engine.score(req.context, out.token_ids) == pytest.approx(out.logprobs, abs=1e-5)
    assert max(gaps_t) < 1e-4
    assert max(gaps_raw) > 1e-2


def test_seeded_requests_sample_the_same_tokens_whatever_the_batch(engine, tiny_tokenizer):
    """Common random numbers: a request's sample depends on its context and seed, not on the batch or its order."""
    reqs = [GenRequest(k, p * (1 + k % 3), "action", 20, 1000 + k) for k, p in enumerate(_prompts(tiny_tokenizer, 12))]
    ids = lambda outs: [o.token_ids for o in outs]  # noqa: E731
    together = engine.generate(reqs)
    assert ids(engine.generate(reqs[::-1])) == ids(together)[::-1]
    assert [engine.generate([r])[0].token_ids for r in reqs[:4]] == ids(together)[:4]
    reseeded = engine.generate([GenRequest(r.key, r.context, r.kind, r.max_tokens, r.seed + 1) for r in reqs])
    assert ids(reseeded) != ids(together), "another seed draws other tokens"


def test_generation_stops_at_the_end_token_or_the_budget(engine, tiny_model_dir, tiny_tokenizer):
    """A row ends at the model's end-of-sequence id (kept, finish "stop") or at ``max_tokens`` ("length"), and
    leaves the batch while the others go on: the others' tokens are what they are alone."""
    reqs = [GenRequest(k, p, "action", 3 + 5 * k, k) for k, p in enumerate(_prompts(tiny_tokenizer, 4))]
    outs = engine.generate(reqs)
    for req, out in zip(reqs, outs):
        assert len(out.token_ids) <= req.max_tokens
        if out.finish_reason == "stop":
            assert out.token_ids[-1] in engine.eos and not set(out.token_ids[:-1]) & engine.eos
        else:
            assert out.finish_reason == "length" and len(out.token_ids) == req.max_tokens
        assert engine.generate([req])[0].token_ids == out.token_ids
    forced = HFPolicy(tiny_model_dir, EngineConfig(backend="hf", max_model_len=256), temperature=1.0)
    eos = tiny_tokenizer.eos_token_id
    forced.model.lm_head.weight.data.zero_()  # every logit 0 but the end token's bias below: it always ends
    with torch.no_grad():
        forced.model.model.norm.weight.zero_()
    forced.model.lm_head.bias = torch.nn.Parameter(torch.zeros(forced.model.config.vocab_size))
    forced.model.lm_head.bias.data[eos] = 50.0
    out = forced.generate([GenRequest(0, reqs[0].context, "action", 8, 0)])[0]
    assert out.token_ids == [eos] and out.finish_reason == "stop"


def test_a_context_beyond_the_engine_limit_is_named(engine):
    with pytest.raises(ValueError, match="request 7: context 250 \\+ max_tokens 10 exceeds engine.max_model_len 256"):
        engine.generate([GenRequest(7, [5] * 250, "action", 10, 0)])


def test_weights_are_taken_in_place_and_change_what_it_samples(tiny_model_dir, tiny_tokenizer):
    """``push_weights``: a tensor on the engine's device in its dtype becomes the parameter (no copy); another dtype
    is copied in; an unknown name or a wrong shape raises; new weights change the samples."""
    engine = HFPolicy(tiny_model_dir, EngineConfig(backend="hf", max_model_len=256), seed=0, temperature=1.0)
    reqs = [GenRequest(k, p, "action", 12, k) for k, p in enumerate(_prompts(tiny_tokenizer))]
    before = [o.token_ids for o in engine.generate(reqs)]
    trainer_model = load_policy(tiny_model_dir)
    with torch.no_grad():
        for p in trainer_model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    sd = trainer_model.state_dict()
    engine.push_weights(sd)
    params = dict(engine.model.named_parameters())
    name = "model.layers.0.mlp.up_proj.weight"
    assert params[name].data_ptr() == sd[name].data_ptr(), "the trainer's tensor, not a copy"
    assert [o.token_ids for o in engine.generate(reqs)] != before
    with torch.no_grad():
        trainer_model.model.layers[0].mlp.up_proj.weight.mul_(0.0)  # the engine reads the trainer's live tensor
    assert params[name].abs().sum() == 0
    half = {name: sd[name].to(torch.float64)}
    engine.push_weights(half)
    assert params[name].dtype == torch.float32
    with pytest.raises(KeyError, match="e.g. nope"):
        engine.push_weights({"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match=f"{name} has shape"):
        engine.push_weights({name: torch.zeros(3, 3)})
