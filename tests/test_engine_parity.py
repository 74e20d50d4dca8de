"""The ``hf`` engine against the vLLM engine on the same checkpoint (the tiny random Qwen2), through the agent loop:
greedy decoding gives identical multi-turn rollouts with summaries (every token id of every segment); at T = 1 each
engine's log-probs for the tokens the other sampled agree within 1e-4; and the trainer's log-probs of either engine's
rollouts equal the behaviour log-probs (the first mini-batch's importance ratio is 1 within 1e-3, as for vLLM in
``tests/test_vllm_engine.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from supo.config import load_config
from supo.contracts import GenRequest
from supo.envs.array import make_env
from supo.models import load_policy
from supo.rollout.agent_loop import run_rollouts
from supo.runtime import build_runtime
from supo.trainer.batch import collate
from supo.trainer.policy_trainer import token_logprobs

pytestmark = pytest.mark.slow

LOGPROB_TOL = 1e-4  # between engines, same tokens (float32 on CPU)
RATIO_TOL = 1e-3  # |exp(trainer − behaviour) − 1|, as the vLLM engine's test allows


@pytest.fixture(scope="module")
def parts(tiny_model_dir, tiny_tasks):
    cfg = load_config(None, {"budget.working_context": 256, "budget.max_summaries": 2, "budget.max_steps": 14,
                             "engine.max_model_len": 1024, "engine.max_num_seqs": 16})
    tasks = [t for t in tiny_tasks if len(t.env_config["values"]) >= 12][:6]
    rt = build_runtime(cfg, tiny_model_dir, tasks, max_summaries=2, working_context=256)
    return cfg, tasks, rt


def _engines(tiny_model_dir, cfg, temperature):
    import dataclasses

    from supo.engines.registry import make_engine

    vllm = make_engine(tiny_model_dir, cfg.engine, seed=0, temperature=temperature)
    hf = make_engine(tiny_model_dir, dataclasses.replace(cfg.engine, backend="hf"), seed=0, temperature=temperature)
    torch.set_num_threads(1)
    return vllm, hf


@pytest.fixture(scope="module")
def greedy(parts, tiny_model_dir):
    cfg, tasks, rt = parts
    vllm, hf = _engines(tiny_model_dir, cfg, 0.0)
    items = [(t, f"{t.id}@0", 0) for t in tasks]
    run = lambda eng: run_rollouts(items, eng, rt.tokenizer, rt.templates, rt.settings, make_env, seed=0)  # noqa: E731
    return run(vllm), run(hf)


def test_greedy_rollouts_are_identical_token_for_token(greedy):
    by_vllm, by_hf = greedy
    assert sum(r.num_summaries for r in by_vllm) >= 3, "the workload must summarise"
    for a, b in zip(by_vllm, by_hf):
        assert [(s.kind, s.prompt_ids, s.response_ids, s.response_mask) for s in a.segments] == \
               [(s.kind, s.prompt_ids, s.response_ids, s.response_mask) for s in b.segments]
        assert (a.reward, a.num_summaries, a.tool_calls, a.overlong_reason) == \
               (b.reward, b.num_summaries, b.tool_calls, b.overlong_reason)


def test_at_temperature_one_each_engine_scores_the_others_tokens_alike(parts, tiny_model_dir, tiny_tokenizer):
    from vllm import SamplingParams, TokensPrompt

    cfg, tasks, rt = parts
    vllm, hf = _engines(tiny_model_dir, cfg, 1.0)
    reqs = [GenRequest(k, rt.templates.prompt_ids(rt.tokenizer, t), "action", 16, 100 + k)
            for k, t in enumerate(tasks)]
    gaps = []
    for req, out in zip(reqs, vllm.generate(reqs)):  # vLLM samples, the hf engine scores
        gaps += [abs(a - b) for a, b in zip(out.logprobs, hf.score(req.context, out.token_ids))]
    by_hf = hf.generate(reqs)  # the hf engine samples, vLLM scores (its prompt log-probs at T = 1)
    scored = vllm.llm.generate([TokensPrompt(prompt_token_ids=r.context + o.token_ids) for r, o in zip(reqs, by_hf)],
                               SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0, detokenize=False),
                               use_tqdm=False)
    for req, out, s in zip(reqs, by_hf, scored):
        per_token = s.prompt_logprobs[len(req.context):]
        gaps += [abs(d[t].logprob - lp) for t, lp, d in zip(out.token_ids, out.logprobs, per_token)]
    assert len(gaps) >= 2 * len(reqs) and max(gaps) < LOGPROB_TOL


@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_the_first_importance_ratio_is_one_with_either_engine(parts, tiny_model_dir, backend):
    """Every sampled token of multi-turn rollouts at T = 0.7: the trainer's log-prob at the same temperature equals
    the engine's behaviour log-prob (R6), so the first mini-batch's ratio is 1."""
    import dataclasses

    from supo.engines.registry import make_engine
    from supo.types import TrainingSample

    cfg, tasks, rt = parts
    engine = make_engine(tiny_model_dir, dataclasses.replace(cfg.engine, backend=backend), seed=0, temperature=0.7)
    items = [(t, f"{t.id}@0", k) for t in tasks[:3] for k in range(2)]
    rollouts = run_rollouts(items, engine, rt.tokenizer, rt.templates, rt.settings, make_env, seed=5)
    segments = [s for r in rollouts for s in r.segments]
    model = load_policy(tiny_model_dir).eval()
    worst, n = 0.0, 0
    for s in segments:
        sample = TrainingSample(s.prompt_ids, s.response_ids, s.response_mask, s.logprobs, [0.0] * len(s.logprobs), 0)
        with torch.no_grad():
            lp, _ = token_logprobs(model, collate([sample], pad_id=rt.tokenizer.pad_token_id), temperature=0.7)
        new = lp[0, len(s.prompt_ids) - 1: len(s.prompt_ids) - 1 + len(s.response_ids)].tolist()
        for m, old, nw in zip(s.response_mask, s.logprobs, new):
            if m:
                worst, n = max(worst, abs(math.exp(nw - old) - 1)), n + 1
    assert sum(r.num_summaries for r in rollouts) >= 1 and n > 100 and worst < RATIO_TOL
