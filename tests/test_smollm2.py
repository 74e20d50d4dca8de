"""SmolLM2-135M-Instruct's real tokenizer and chat template (49,152 tokens, ChatML with its own default system line,
digits split one by one) through the rollout loop: chunks as its template writes them, its tool-call format, and
token-exact segments (R6) — every training tensor holds exactly the ids and log-probs that were sampled."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from supo.algo.advantage import broadcast, compute_advantages
from supo.config import load_config
from supo.contracts import GenResult
from supo.envs import get_env_spec
from supo.rollout.agent_loop import LoopSettings, run_rollouts
from supo.rollout.expert_policy import ExpertPolicy
from supo.rollout.templates import Templates
from supo.runtime import build_runtime
from supo.trainer.batch import collate
from supo.trainer.packing import collate_rows, pack_rows
from test_templates import _conversation

PROFILE = "profiles/smollm2-cpu.yaml"


def test_tokenizer_is_smollm2s(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert len(tok) == 49152
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    ids = tok.encode("Add 1234 to 57", add_special_tokens=False)
    assert [tok.decode([i]) for i in ids] == ["Add", " ", "1", "2", "3", "4", " to", " ", "5", "7"]  # digits split
    assert "SmolLM" in tok.chat_template


def test_chunks_follow_smollm2s_template(smollm2_tokenizer, tiny_tasks):
    cfg = load_config(None, {"model.tool_parser": "tags-list"})
    t = Templates.from_config(smollm2_tokenizer, cfg)
    dec = lambda ids: smollm2_tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    assert t.eos_id == 2 and dec(t.assistant_header) == "<|im_start|>assistant\n"
    assert dec(t.obs_prefix) == "\n<|im_start|>tool\n"
    assert dec(t.summary_request).startswith("<|im_end|>\n<|im_start|>user\nYou are a helpful agent")
    for ids, text in _conversation(smollm2_tokenizer, t, tiny_tasks[3]):
        assert dec(ids) == text


class CharwiseSampler(ExpertPolicy):
    """The scripted expert in the model's tool-call format, its text tokenized one character at a time (a sampling
    the tokenizer would never produce on re-encoding), each token with its own log-prob; records what it samples."""

    def __init__(self, tok, experts, eos, fmt):
        super().__init__(tok, experts, eos, tool_parser=fmt)
        self.sampled: list[tuple[list[int], list[float]]] = []
        self.counter = 0

    def generate(self, requests):
        out = []
        for req, res in zip(requests, super().generate(requests)):
            text = self.tokenizer.decode(res.token_ids[:-1])
            ids = [i for ch in text for i in self.tokenizer.encode(ch, add_special_tokens=False)]
            ids = ids[: max(req.max_tokens - 1, 0)] + [self.eos_id]
            lps = [-(self.counter + k + 1) / 4096.0 for k in range(len(ids))]
            self.counter += len(ids)
            self.sampled.append((ids, lps))
            out.append(GenResult(ids, lps))
        return out


@pytest.mark.parametrize("env,fmt", [("funcall", "tags-list"), ("array", "json")])
def test_training_tensors_hold_exactly_the_sampled_ids(smollm2_tokenizer, env, fmt):
    tok = smollm2_tokenizer
    cfg = load_config(None, {"env.name": env, "model.tool_parser": fmt, "funcall.num_train": 8, "env.num_train": 8,
                                    "env.train_max_len": 10})
    spec = get_env_spec(env)
    tasks = spec["build_split"](cfg, "train")[:6]
    t = Templates.from_config(tok, cfg)
    longest = max(len(t.prompt_ids(tok, task)) for task in tasks)
    st = LoopSettings(trigger=longest + 300, max_summaries=6, max_steps=40, max_turn_tokens=160,
                      max_summary_tokens=160, max_obs_tokens=48, engine_max_len=longest + 1200)
    items = [(tasks[k // 2], f"g{k // 2}", k % 2) for k in range(len(tasks))]  # groups of two rollouts of one task
    experts = {k: spec["make_expert"](task, 0.0, k) for k, (task, _, _) in enumerate(items)}
    policy = CharwiseSampler(tok, experts, t.eos_id, fmt)
    rollouts = run_rollouts(items, policy, tok, t, st, spec["make_env"])
    assert all(r.finished and r.reward == 1.0 and r.tool_format_misses == 0 for r in rollouts)
    assert sum(r.num_summaries for r in rollouts) > 0, "the test must cross summaries and resets"
    canonical = tok.encode(tok.decode(policy.sampled[0][0][:-1]), add_special_tokens=False)
    assert canonical != policy.sampled[0][0][:-1], "the sampling must differ from the tokenizer's own encoding"

    sampled = Counter((i, lp) for ids, lps in policy.sampled for i, lp in zip(ids, lps))
    samples = broadcast(rollouts, compute_advantages(rollouts))
    # padded tensors: at every loss-mask position the target and behaviour log-prob are a sampled (id, log-prob)
    batch = collate(samples, tok.pad_token_id, dtype=torch.float64)
    on = batch.loss_mask.bool()
    got = Counter(zip(batch.targets[on].tolist(), batch.old_logprobs[on].tolist()))
    assert got == sampled
    for b, s in enumerate(samples):  # and every row is the segment's ids as stored, nothing re-encoded
        n = s.length
        assert batch.input_ids[b, :n].tolist() == s.prompt_ids + s.response_ids
    # packed token trees (what the trainer runs): the same (id, log-prob) pairs, once each
    packed = collate_rows(pack_rows(samples, 512, keep_zero_advantage=True), tok.pad_token_id, dtype=torch.float64)
    assert Counter(zip(packed.targets.tolist(), packed.old_logprobs.tolist())) == sampled


@pytest.mark.parametrize("env", ["funcall", "array"])
def test_the_profile_fits_smollm2s_prompts_and_its_expert_succeeds(smollm2_tokenizer, env):
    """The profile's budgets validate against SmolLM2's real prompt lengths (W above the longest prompt with room for
    a step after a reset, the engine limit above the derived need), and its expert demonstrations succeed."""
    from supo.prepare import run_expert

    cfg = load_config(PROFILE, {"expert.num_demos": 8}, env=env)
    spec = get_env_spec(env)
    train, test = spec["build_split"](cfg, "train"), spec["build_split"](cfg, "test")
    for tasks in (train, test):
        build_runtime(cfg, "unused", tasks, max_summaries=cfg.budget.max_summaries,
                      working_context=cfg.budget.working_context, tokenizer=smollm2_tokenizer)
    demos = run_expert(cfg, train, smollm2_tokenizer, num=8, error_rate=0.0, max_summaries=cfg.expert.max_summaries,
                       seed=0, model_dir="unused")
    assert sum(r.reward for r in demos) == len(demos)
    # the demonstrations are written in the profile's tool-call format (what the warm start teaches)
    t = Templates.from_config(smollm2_tokenizer, cfg)
    seg = demos[0].context_segments[0]
    text = smollm2_tokenizer.decode(seg.response_ids[: seg.response_ids.index(t.eos_id)])
    assert cfg.model.tool_parser != "tags" and text == t.parser.render(t.parser.parse(text))


# ---------------------------------------------------------------------------------------------------------------------
# slow: the real engine, and the profile end to end at one step


class Recorder:
    """A policy wrapper recording every (ids, log-probs) the engine returned."""

    def __init__(self, policy):
        self.policy, self.sampled = policy, []

    def generate(self, requests):
        results = self.policy.generate(requests)
        self.sampled += [(list(r.token_ids), list(r.logprobs)) for r in results]
        return results

    def on_step(self, key, action, observation):
        pass

    def on_drop(self, key):
        pass


@pytest.mark.slow
def test_engine_samples_land_exactly_in_the_training_tensors(smollm2_dir):
    """SmolLM2 served by vLLM on its imported folder, through the loop at the profile's array settings (summaries,
    resets): the padded and the packed training tensors hold exactly the ids and log-probs the engine returned."""
    from supo.engines.vllm_engine import VLLMPolicy
    from supo.models import load_tokenizer

    cfg = load_config(PROFILE, {"model.source": str(smollm2_dir)}, env="array")
    tok = load_tokenizer(smollm2_dir)
    spec = get_env_spec("array")
    tasks = spec["build_split"](cfg, "train")[:3]
    rt = build_runtime(cfg, smollm2_dir, tasks, max_summaries=2, working_context=cfg.budget.working_context,
                       tokenizer=tok)
    engine = Recorder(VLLMPolicy(smollm2_dir, cfg.engine, seed=0, temperature=1.0))
    items = [(task, f"g{k}", i) for k, task in enumerate(tasks) for i in range(2)]
    rollouts = run_rollouts(items, engine, tok, rt.templates, rt.settings, spec["make_env"])
    assert engine.sampled and all(r.tool_calls > 0 for r in rollouts)
    sampled = Counter((i, lp) for ids, lps in engine.sampled for i, lp in zip(ids, lps))
    # the base model rarely finishes within H: keep every rollout's loss mask (no overlong masking) to see them all
    samples = broadcast(rollouts, compute_advantages(rollouts, overlong="none"))
    batch = collate(samples, tok.pad_token_id, dtype=torch.float64)
    on = batch.loss_mask.bool()
    assert Counter(zip(batch.targets[on].tolist(), batch.old_logprobs[on].tolist())) == sampled
    packed = collate_rows(pack_rows(samples, 512, keep_zero_advantage=True), tok.pad_token_id, dtype=torch.float64)
    assert Counter(zip(packed.targets.tolist(), packed.old_logprobs.tolist())) == sampled


@pytest.mark.slow
def test_the_profile_runs_end_to_end_at_one_step(tmp_path, smollm2_dir):
    """The README's smollm2-cpu commands at one RL step (array env): prepare → SFT → SUPO and GRPO → the S_eval
    sweep of the warm start and both arms (the engine loads each checkpoint folder as written) → the report; the
    checkpoint loads in transformers as written, and the metrics count tool-call format misses."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    repo = Path(__file__).resolve().parents[1]
    sets = ["-S", f"model.source={smollm2_dir}", "-S", "expert.num_demos=6", "-S", "sft.steps=2",
            "-S", "sft.batch_size=2", "-S", "train.steps=1", "-S", "rollout.tasks_per_step=1",
            "-S", "rollout.group_size=2", "-S", "eval.num_tasks=2", "-S", "eval.sweep=[0,2]",
            "-S", "pipeline.envs=[array]", "-S", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    env = {**os.environ, "SUPO_PROGRESS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "cli.main", *args, "-c", str(repo / PROFILE), *sets],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"supo-cli {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return proc

    cli("prepare", "--env", "array")
    cli("sft", "--env", "array")
    cli("train", "--env", "array", "--all-arms", "--all-seeds")
    cli("eval", "--env", "array", "--all-arms", "--warm-start", "--all-seeds", "--sweep")
    cli("report")
    run = tmp_path / "runs" / "smollm2-cpu"
    for label in ("sft", "grpo-w", "supo"):
        for s in (0, 2):
            m = json.loads((run / "evals" / "array" / "seed0" / label / f"s{s}" / "metrics.json").read_text())
            assert 0.0 <= m["success_rate"] <= 1.0 and "tool_call_format_miss_rate" in m
    ckpt = run / "checkpoints" / "array" / "seed0" / "supo"
    model = AutoModelForCausalLM.from_pretrained(str(ckpt))
    assert model.config.num_hidden_layers == 30 and (ckpt / "chat_template.jinja").is_file()
    report = (run / "reports" / "report.md").read_text()
    assert "supo" in report and "grpo-w" in report
