"""The report (supo.report) on outputs written by the pipeline's own writers (``supo.evaluate.write_eval``,
``supo.train_loop.write_run_files``) at the paths ``supo.layout`` gives: the claims are decided by paired bootstrap
intervals, the files are written, roles come from the config, malformed inputs are named.

The synthetic results: 4 seeds × 40 test tasks; each arm at each S_eval succeeds on a fixed, seeded subset of tasks
whose size sets its success rate (independently per seed), so the true differences are known.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from supo.config import load_config
from supo.evaluate import write_eval
from supo.layout import checkpoint_dir, eval_dir, parse_checkpoint_dir, parse_eval_dir, warm_start_label
from supo.metrics import rollout_metrics
from supo.report import collect_evals, collect_training, roles_from_config, write_report
from supo.report.analysis import analyze
from supo.report.claims import all_claims
from supo.report.stats import HELD, INCONCLUSIVE, NOT_HELD, bootstrap_effect, verdict_greater, verdict_not_worse
from supo.results import EvalResult
from supo.train_loop import write_run_files
from supo.types import Rollout

SEEDS = (0, 1, 2, 3)
TASKS = 40
S, W = 4, 128
GRID = (0, 1, 4, 8, 16)
ROLES = {"grpo-w": {"role": "baseline-w", "train.algo": "grpo"},
         "grpo-weff": {"role": "baseline-weff", "train.algo": "grpo", "budget.use_effective_context": True},
         "supo": {"role": "method", "train.algo": "supo"},
         "supo-no-mask": {"role": "ablation", "train.algo": "supo", "train.overlong": "none"},
         "supo-eq4": {"role": "ablation", "train.algo": "supo", "train.advantage": "segment"}}


def _rollouts(rate: float, seed: int, key: str) -> list[Rollout]:
    rng = random.Random(f"{key}-{seed}")
    wins = set(rng.sample(range(TASKS), round(rate * TASKS)))
    out = []
    for t in range(TASKS):
        ok = t in wins
        out.append(Rollout(task_id=f"test-{t:05d}", group_id=f"test-{t:05d}@eval", index=0, reward=float(ok),
                           finished=ok, overlong=not ok and t % 3 == 0, num_summaries=2, tool_calls=20,
                           context_lengths=[110, 115, 100]))
    return out


def _write_eval(root: Path, arm: str, seed: int, s_eval: int, rate: float, w: int = W) -> None:
    rs = _rollouts(rate, seed, f"{arm}-{s_eval}")
    m = rollout_metrics(rs, working_context=w, max_summaries=s_eval)
    result = EvalResult(env="array", arm=arm, seed=seed, s_eval=s_eval, working_context=w, split="test", metrics=m)
    write_eval(eval_dir(root / "array", seed, arm, s_eval), result, rs)


def _write_train(root: Path, arm: str, seed: int) -> None:
    over = {"seed": seed, "budget.max_summaries": S, "budget.working_context": W, "engine.max_model_len": 192,
            **{k: v for k, v in ROLES.get(arm, {"train.algo": "supo"}).items() if k != "role"}}
    cfg = load_config(None, over)
    history = [{"step": k, "mean_reward": 0.3 + 0.02 * k, "success_rate": 0.3 + 0.02 * k, "overlong_rate": 0.1,
                "error_loop_rate": 0.05, "budget_cut_rate": 0.05, "mean_summaries": 2.0, "clip_frac": 0.01,
                "kl_to_init": 0.001 * k} for k in range(5)]
    write_run_files(checkpoint_dir(root / "array", seed, arm), cfg, arm, history, None)


RATES = {  # arm -> S_eval -> success rate
    "sft": {0: 0.0, 1: 0.05, 4: 0.30, 8: 0.30, 16: 0.30},
    "grpo-w": {s: 0.0 for s in GRID},
    "grpo-weff": {s: 0.50 for s in GRID},
    "supo": {0: 0.0, 1: 0.1, 4: 0.60, 8: 0.75, 16: 0.75},
    "supo-no-mask": {s: 0.30 for s in GRID},
    "supo-eq4": {0: 0.0, 1: 0.1, 4: 0.60, 8: 0.60, 16: 0.60},
}


@pytest.fixture
def outputs(tmp_path):
    evals, ckpts = tmp_path / "evals", tmp_path / "checkpoints"
    for seed in SEEDS:
        for arm, rates in RATES.items():
            w = W * (S + 1) if arm == "grpo-weff" else W
            for s, rate in rates.items():
                _write_eval(evals, arm, seed, s, rate, w)
            if arm != "sft":
                _write_train(ckpts, arm, seed)
        _write_eval(evals, warm_start_label("grpo-weff"), seed, 0, 0.20, W * (S + 1))  # the warm start at W_eff
    # grpo-weff's training run is at W_eff
    return evals, ckpts


def test_the_readers_invert_the_writers(outputs):
    evals, ckpts = outputs
    runs = collect_evals(evals)
    assert len(runs) == len(SEEDS) * (sum(len(r) for r in RATES.values()) + 1)
    one = next(r for r in runs if r.arm == "supo" and r.seed == 2 and r.s_eval == 8)
    assert parse_eval_dir(one.path.parent, evals) == {"env": "array", "seed": 2, "arm": "supo", "s_eval": 8}
    assert len(one.outcomes) == TASKS and one.split == "test"
    assert abs(sum(one.outcomes.values()) / TASKS - 0.75) < 1e-9
    train = collect_training(ckpts)
    assert {(t.arm, t.seed) for t in train} == {(a, s) for a in ROLES for s in SEEDS}
    assert parse_checkpoint_dir(train[0].checkpoint, ckpts)["env"] == "array"


def test_claims_are_decided_by_their_intervals(outputs):
    evals, ckpts = outputs
    roles = roles_from_config(list(ROLES), ROLES)
    (res,) = analyze(collect_evals(evals), collect_training(ckpts), roles, arms=list(ROLES), seeds=list(SEEDS))
    claims = {c.key: c for c in all_claims(res)}
    assert res.s_train == S and res.grid == list(GRID)
    assert claims["C0 supo"].verdict == HELD  # 0.60 vs the warm start's 0.30 at (W, S)
    assert claims["C0 grpo-weff"].verdict == HELD  # 0.50 vs the warm start's 0.20 at (W_eff, 0)
    assert claims["C0 supo-no-mask"].verdict == INCONCLUSIVE or claims["C0 supo-no-mask"].numbers["effect"] == 0
    c0w = claims["C0 grpo-w"]
    assert c0w.verdict == NOT_HELD and "no difference" in " ".join(c0w.evidence)  # both 0 at S_eval = 0
    assert claims["C1"].verdict == HELD
    assert claims["C2"].verdict == HELD  # 0.60 vs 0.50: not worse by 5 points, working context ≤ W
    assert claims["C3"].verdict == HELD  # 0.75 at 2S vs 0.60 at S
    c4 = claims["C4"]
    assert c4.verdict == INCONCLUSIVE  # supo-eq4 scores as supo does: that comparison cannot be decided
    assert "supo-no-mask: held" in c4.evidence and "supo-eq4: inconclusive" in c4.evidence
    for c in claims.values():
        if "effect" in c.numbers:
            assert c.numbers["ci_low"] <= c.numbers["effect"] <= c.numbers["ci_high"]


def test_report_files(outputs, tmp_path):
    evals, ckpts = outputs
    roles = roles_from_config(list(ROLES), ROLES)
    files = write_report(evals, ckpts, tmp_path / "reports", roles=roles, envs=["array"], arms=list(ROLES),
                         seeds=list(SEEDS))
    md = files.markdown.read_text()
    assert "## Summary" in md and "C0 supo" in md and "95% CI" in md and "**test** split" in md
    assert "Missing: nothing." in md
    html = files.html.read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html
    names = {p.name for p in files.figures["array"]}
    assert names == {"array-success_vs_s_eval.png", "array-training_curves.png", "array-overlong_dynamics.png"}
    assert files.summary["array.C1_held"] == 1 and files.summary["array.C4_inconclusive"] == 1
    assert files.summary["array.supo.s4.n_seeds"] == len(SEEDS)
    header = (tmp_path / "reports/plots/training_curves.csv").read_text().splitlines()[0]
    assert "overlong_rate" in header and "kl_to_init" in header


def test_a_new_ablation_needs_no_report_change(outputs, tmp_path):
    """An arm declared `role: ablation` joins C4 (and gets its C0) without touching the report."""
    evals, ckpts = outputs
    for seed in SEEDS:
        for s in GRID:
            _write_eval(evals, "supo-penalty", seed, s, 0.1)
        _write_train(ckpts, "supo-penalty", seed)
    specs = {**ROLES, "supo-penalty": {"role": "ablation", "train.algo": "supo", "train.overlong": "penalty"}}
    roles = roles_from_config(list(specs), specs)
    assert roles.ablations == ("supo-no-mask", "supo-eq4", "supo-penalty")
    (res,) = analyze(collect_evals(evals), collect_training(ckpts), roles, arms=list(specs), seeds=list(SEEDS))
    claims = {c.key: c for c in all_claims(res)}
    assert "C0 supo-penalty" in claims and "supo-penalty: held" in claims["C4"].evidence


def test_a_malformed_metrics_file_is_named(outputs, tmp_path):
    evals, ckpts = outputs
    bad = eval_dir(evals / "array", 1, "supo", 4) / "metrics.json"
    bad.write_text(json.dumps({"success_rate": 1.7}))
    with pytest.raises(ValueError, match=str(bad)):
        collect_evals(evals)


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    a = (rng.random((4, 200)) < 0.6).astype(float)
    b = (rng.random((4, 200)) < 0.4).astype(float)
    e = bootstrap_effect(a, b)
    assert e == bootstrap_effect(a, b)  # deterministic
    assert e.low < e.effect < e.high and e.low > 0 and verdict_greater(e) == HELD
    small = bootstrap_effect(a[:, :20], b[:, :20])
    assert small.high - small.low > e.high - e.low  # fewer tasks, wider interval
    same = bootstrap_effect(a, a)
    assert same.degenerate and verdict_greater(same) == NOT_HELD
    assert verdict_not_worse(bootstrap_effect(b, a), margin=0.05) == NOT_HELD
    assert verdict_not_worse(bootstrap_effect(a, a + 0.01), margin=0.05) == HELD


NEW_METRICS = ("summary_state_accuracy", "failure_wrong_summary_rate", "failure_action_error_rate",
               "failure_wrong_answer_rate", "failure_budget_cut_rate", "over_w_segment_frac",
               "max_generation_peak_tokens", "max_steps_rate")


def test_old_format_outcomes_still_load_and_render(outputs, tmp_path):
    """Evaluations written before the summary and failure columns (5-column outcomes, metrics without the new keys)
    still read; the report renders "–" for what they lack and C2 falls back to the mean per-segment peak."""
    evals, ckpts = outputs
    for path in evals.rglob("outcomes.json"):
        data = json.loads(path.read_text())
        data["columns"], data["rollouts"] = data["columns"][:5], [row[:5] for row in data["rollouts"]]
        path.write_text(json.dumps(data))
    for path in evals.rglob("metrics.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in data.items() if k not in NEW_METRICS}))
    runs = collect_evals(evals)
    assert all(r.outcomes and not r.summaries_judged and not r.failures for r in runs)
    assert not any(k in r.metrics for r in runs for k in NEW_METRICS)
    roles = roles_from_config(list(ROLES), ROLES)
    files = write_report(evals, ckpts, tmp_path / "reports", roles=roles, envs=["array"], arms=list(ROLES),
                         seeds=list(SEEDS))
    md = files.markdown.read_text()
    assert "Summary state accuracy: –" in md and "| supo | 4 | 128 | 0.600 | – | – | – | – |" in md
    claims = {c.key: c for c in files.claims["array"]}
    assert claims["C2"].verdict == HELD and "fallback" in " ".join(claims["C2"].evidence)
    assert not any("summary_accuracy" in k or ".own.failure_" in k for k in files.summary)
    assert files.summary["array.C0_supo_mde"] > 0 and "array.C0_supo_holm_rank" in files.summary


def _write_judged_eval(root: Path, arm: str, seed: int, rate: float, accuracy: float) -> None:
    """SUPO's setting with a summary oracle: two judged summaries per rollout, each right with ``accuracy``; a
    failure is a wrong summary when one was judged wrong, else an action error on every other task."""
    rng = random.Random(f"{arm}-judged-{seed}")
    wins = set(rng.sample(range(TASKS), round(rate * TASKS)))
    rs = []
    for t in range(TASKS):
        ok, right = t in wins, sum(rng.random() < accuracy for _ in range(2))
        errors = 0 if ok or t % 4 else 1
        first = None if ok else "wrong_summary" if right < 2 else "action_error" if errors else None
        rs.append(Rollout(task_id=f"test-{t:05d}", group_id=f"test-{t:05d}@eval", index=0, reward=float(ok),
                          finished=ok or t % 2 == 0, overlong=not ok and t % 2 == 1, num_summaries=2, tool_calls=20,
                          error_observations=errors, first_failure=first, summaries_judged=2,
                          summaries_correct=2 if ok else right, context_lengths=[110, 115, 100],
                          generation_peaks=[120, 126, 140 if t % 5 == 0 else 110]))
    m = rollout_metrics(rs, working_context=W, max_summaries=S)
    result = EvalResult(env="array", arm=arm, seed=seed, s_eval=S, working_context=W, split="test", metrics=m)
    write_eval(eval_dir(root / "array", seed, arm, S), result, rs)


def test_report_with_summary_oracle(outputs, tmp_path):
    """Summary accuracy per arm with its interval and SUPO − warm start, the failure decomposition, the C0 family
    under Holm, the variance components, Table 3's W column and C2's share of segments over W."""
    evals, ckpts = outputs
    for seed in SEEDS:
        _write_judged_eval(evals, "sft", seed, 0.30, 0.5)
        _write_judged_eval(evals, "supo", seed, 0.60, 0.9)
    roles = roles_from_config(list(ROLES), ROLES)
    files = write_report(evals, ckpts, tmp_path / "reports", roles=roles, envs=["array"], arms=list(ROLES),
                         seeds=list(SEEDS))
    md = files.markdown.read_text()
    for heading in ("### Summary state accuracy", "### Failure decomposition", "### C0 family: Holm–Bonferroni",
                    "### Power: variance components"):
        assert heading in md
    assert "| arm | W | S_eval=0 |" in md and "| grpo-weff | 640 |" in md
    assert "| env | claim | statement | verdict | effect [95% CI] | SE | MDE (80% power) |" in md
    s = files.summary
    assert s["array.supo.summary_accuracy_ci_low"] < s["array.supo.summary_accuracy"] < 1.0
    assert s["array.supo.summary_accuracy_vs_warm_start_ci_low"] > 0  # 0.9-ish against 0.5-ish, paired
    assert "array.sft.summary_accuracy_vs_warm_start" not in s
    own = {k: v for k, v in s.items() if k.startswith("array.supo.own.")}
    assert sum(own.values()) == pytest.approx(1.0) and own["array.supo.own.failure_wrong_summary"] > 0
    assert s["array.C0_supo_seed_sd"] >= 0 and "array.C0_supo_seeds_for_target_mde" in s
    c2 = {c.key: c for c in files.claims["array"]}["C2"]
    assert c2.verdict == NOT_HELD and "6.7% of context segments" in " ".join(c2.evidence)  # 1 of 3, 1 task in 5
