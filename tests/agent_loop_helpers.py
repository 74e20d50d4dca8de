"""The agent-loop test set-up shared by tests/test_agent_loop.py and tests/test_agent_loop_edges.py: a tokenizer trained
on 40 array tasks, a recording expert policy, the loop settings and a runner."""

from __future__ import annotations

from supo.config import load_config
from supo.contracts import GenResult
from supo.envs.array import ArrayExpert, corpus, make_env, make_tasks
from supo.models import build_tokenizer
from supo.rollout.agent_loop import LoopSettings, run_rollouts
from supo.rollout.expert_policy import ExpertPolicy
from supo.rollout.templates import Templates


def build_setup(tmp_path_factory):
    """40 array tasks, a tokenizer trained on their corpus and the chat templates."""
    tasks = make_tasks("train", 40, 6, 14, ["max", "sum"], 99, seed=3)
    cfg = load_config(None)
    tok = build_tokenizer(corpus(tasks) + [cfg.prompts.summary_instruction, cfg.prompts.continuation + "\n"] * 20
                          + ["system\n", "user\n", "assistant\n", "tool\n"] * 50, 1024,
                          tmp_path_factory.mktemp("tok"))
    templates = Templates.build(tok, cfg.prompts.summary_instruction, cfg.prompts.continuation)
    return tasks, tok, templates


class Recording(ExpertPolicy):
    """The expert, recording what it samples; log-probs are distinct negative numbers per generated token."""

    def __init__(self, tok, tasks, eos, *, error_rate=0.0, mutate=None):
        super().__init__(tok, {k: ArrayExpert(t, error_rate=error_rate, seed=k) for k, t in enumerate(tasks)}, eos)
        self.sampled: dict[int, list[tuple[str, list[int], list[float]]]] = {}
        self.counter = 0
        self.mutate = mutate

    def generate(self, requests):
        results = super().generate(requests)
        out = []
        for req, res in zip(requests, results):
            ids = self.mutate(req, res.token_ids) if self.mutate else res.token_ids
            lps = [-(self.counter + i + 1) / 1000.0 for i in range(len(ids))]
            self.counter += len(ids)
            self.sampled.setdefault(req.key, []).append((req.kind, list(ids), lps))
            out.append(GenResult(ids, lps))
        return out


def settings(L=120, S=8, H=100, max_len=400, trigger_action=True):
    return LoopSettings(trigger=L, max_summaries=S, max_steps=H, max_turn_tokens=24, max_summary_tokens=24,
                        max_obs_tokens=24, engine_max_len=max_len, train_trigger_action=trigger_action)


def run(setup, st, policy=None, tasks=None, views=None, **kw):
    all_tasks, tok, t = setup
    tasks = tasks or all_tasks
    policy = policy or Recording(tok, tasks, t.eos_id, **kw)
    items = [(task, f"{task.id}@0", 0) for task in tasks]
    return run_rollouts(items, policy, tok, t, st, make_env, views=views), policy


def action_starts(seg):
    """(start, length) of each run of mask-1 tokens in a segment's response (one per action or summary)."""
    out, start = [], None
    for i, m in enumerate(seg.response_mask + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i - start))
            start = None
    return out
