"""Synthesis statistics for a run config: ``python scripts/synth_stats.py [params.yaml] [KEY=VALUE ...]``.

Per family and split: tasks, Phase III kept share (and first-attempt share), the expert's mean calls, and the share of
tasks whose full expert history (initial prompt + every action and observation, no summaries) exceeds given working
contexts, measured with a BPE tokenizer trained as ``supo-cli prepare`` trains it (``supo.prepare.tokenizer_corpus``
over the funcall env's ``corpus``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import defaultdict

from supo.config import Config, load_config
from supo.envs.funcall import FuncallExpert, corpus, make_env
from supo.models import IM_END, build_tokenizer
from supo.prepare import tokenizer_corpus
from supo.rollout.agent_loop import LoopSettings, run_rollouts
from supo.rollout.expert_policy import ExpertPolicy
from supo.rollout.templates import Templates, prompt_ids
from supo.synth.tasks import make_tasks


def synthesis_stats(cfg: Config, *, vocab_size: int = 1024, working_contexts: tuple[int, ...] = (224, 512)) -> dict:
    f = cfg.funcall
    t0 = time.time()
    splits, synth = {}, {}
    for split, lo, hi, num in (("train", f.train_min_calls, f.train_max_calls, f.num_train),
                               ("test", f.test_min_calls, f.test_max_calls, f.num_test)):
        splits[split], synth[split] = make_tasks(split, num, lo, hi, f.families, cfg.seed, k_max=f.k_max,
                                                 explore_prob=f.explore_prob, noise_prob=f.noise_prob,
                                                 return_stats=True)
    synth_seconds = time.time() - t0
    with tempfile.TemporaryDirectory() as d:
        tok = build_tokenizer(tokenizer_corpus(cfg, splits["train"], splits["test"], corpus), vocab_size, d)
    templates = Templates.build(tok, cfg.prompts.summary_instruction, cfg.prompts.continuation)
    settings = LoopSettings(trigger=10**9, max_summaries=0, max_steps=10**4, max_turn_tokens=cfg.budget.max_turn_tokens,
                            max_summary_tokens=cfg.budget.max_summary_tokens, max_obs_tokens=cfg.budget.max_obs_tokens,
                            engine_max_len=10**9)
    out: dict = {"synth_seconds": round(synth_seconds, 2), "families": {}}
    for split, tasks in splits.items():
        experts = {k: FuncallExpert(t) for k, t in enumerate(tasks)}
        policy = ExpertPolicy(tok, experts, tok.convert_tokens_to_ids(IM_END))
        rollouts = run_rollouts([(t, f"{t.id}@0", 0) for t in tasks], policy, tok, templates, settings, make_env)
        rows = defaultdict(list)
        for t, r in zip(tasks, rollouts):
            rows[t.env_config["family"]].append((t, r))
        for fam, pairs in rows.items():
            s = synth[split][fam]
            n = len(pairs)
            hist = [r.context_lengths[0] for _, r in pairs]
            entry = {
                "tasks": n,
                "candidates": s.candidates,
                "kept_share": round(s.kept_share, 4),
                "first_attempt_share": round(s.first_try / s.candidates, 4) if s.candidates else 0.0,
                "expert_success": sum(r.reward == 1.0 for _, r in pairs) / n,
                "expert_mean_calls": round(sum(r.tool_calls for _, r in pairs) / n, 2),
                "mean_prompt_tokens": round(sum(len(prompt_ids(tok, t)) for t, _ in pairs) / n, 1),
                "max_prompt_tokens": max(len(prompt_ids(tok, t)) for t, _ in pairs),
                "mean_history_tokens": round(sum(hist) / n, 1),
                "max_history_tokens": max(hist),
            }
            for w in working_contexts:
                entry[f"history_over_{w}"] = round(sum(h > w for h in hist) / n, 4)
            out["families"].setdefault(fam, {})[split] = entry
    out["seconds"] = round(time.time() - t0, 2)
    return out


if __name__ == "__main__":  # pragma: no cover - a reporting entry point
    args = sys.argv[1:]
    path = args[0] if args and "=" not in args[0] else None
    print(json.dumps(synthesis_stats(load_config(path, [a for a in args if "=" in a])), indent=2))
