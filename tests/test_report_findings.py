"""The report's "Key findings" block (supo.report.findings, issue 22 item 5): built from the report's inputs — eval
and training files written by the pipeline's own writers where RL scores below the warm start, and in-memory
evaluations where a claim's bound sits on its threshold (borderline) — plus the interval formatting that keeps a bound
equal to its threshold visibly equal to it, and the verdict badges of the HTML page.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from supo.config import load_config
from supo.evaluate import write_eval
from supo.layout import checkpoint_dir, eval_dir, warm_start_label
from supo.metrics import rollout_metrics
from supo.report import write_report
from supo.report.analysis import ArmRoles, analyze
from supo.report.blocks import Bullets, Para, render_markdown
from supo.report.claims import all_claims
from supo.report.collect import EvalRun, TrainRun
from supo.report.findings import EDGE_STEPS, flags, key_findings
from supo.report.stats import BORDERLINE, NOT_HELD, bootstrap_effect
from supo.report.tables import bounded
from supo.results import EvalResult
from supo.train_loop import write_run_files
from supo.types import Rollout

SEEDS, TASKS, S, W = (0, 1, 2), 40, 4, 128
ARMS = {"grpo-w": {"train.algo": "grpo"},
        "grpo-weff": {"train.algo": "grpo", "budget.use_effective_context": True},
        "supo": {"train.algo": "supo"}}
ROLES = ArmRoles(ablations=())


def _write_eval(root: Path, arm: str, seed: int, s_eval: int, rate: float, w: int = W) -> None:
    """One evaluation whose first ``rate × TASKS`` tasks succeed."""
    wins = round(rate * TASKS)
    rs = [Rollout(task_id=f"test-{t:05d}", group_id=f"test-{t:05d}@eval", index=0, reward=float(t < wins),
                  finished=t < wins, overlong=t >= wins, num_summaries=1, tool_calls=5, context_lengths=[100])
          for t in range(TASKS)]
    m = rollout_metrics(rs, working_context=w, max_summaries=s_eval)
    result = EvalResult(env="array", arm=arm, seed=seed, s_eval=s_eval, working_context=w, split="test", metrics=m)
    write_eval(eval_dir(root / "array", seed, arm, s_eval), result, rs)


def _write_train(root: Path, arm: str, seed: int, rewards: list[float], overlong: list[float]) -> None:
    cfg = load_config(None, {"seed": seed, "budget.max_summaries": S, "budget.working_context": W,
                             "engine.max_model_len": 192, **ARMS[arm]})
    history = [{"step": k, "mean_reward": r, "success_rate": r, "overlong_rate": o, "kl_to_init": 0.01 * k}
               for k, (r, o) in enumerate(zip(rewards, overlong, strict=True))]
    write_run_files(checkpoint_dir(root / "array", seed, arm), cfg, arm, history, None)


def test_rl_below_the_warm_start_leads_the_report(tmp_path):
    """SUPO (0.2) below the warm start (0.5) at its setting: C0 not held, said in words with its interval; SUPO's
    training reward fell and one run's overlong rate doubled: both in the block, which opens report.md and whose
    verdicts are coloured badges in report.html."""
    evals, ckpts = tmp_path / "evals", tmp_path / "checkpoints"
    rates = {("sft", S): 0.5, ("sft", 0): 0.0, ("supo", S): 0.2, ("supo", 2 * S): 0.2, ("grpo-w", 0): 0.1,
             (warm_start_label("grpo-weff"), 0): 0.3, ("grpo-weff", 0): 0.5}
    for seed in SEEDS:
        for (arm, s), rate in rates.items():
            _write_eval(evals, arm, seed, s, rate, W * (S + 1) if "weff" in arm else W)
        _write_train(ckpts, "supo", seed, [0.4, 0.4, 0.4, 0.3, 0.2, 0.2, 0.2], [0.1] * 6 + [0.1 + 0.2 * (seed == 1)])
        _write_train(ckpts, "grpo-w", seed, [0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1], [0.5] * 7)
    files = write_report(evals, ckpts, tmp_path / "reports", roles=ROLES, envs=["array"], arms=list(ARMS),
                         seeds=list(SEEDS))
    md = files.markdown.read_text()
    assert md.startswith("# SUPO results\n\n## Key findings\n")
    findings = md[:md.index("## How to read this report")]
    line = next(x for x in findings.splitlines() if x.startswith("- `supo` solved"))
    assert line.startswith("- `supo` solved 0.200 vs the warm start's 0.500 (S_eval=4, W=128): -0.300 [")
    assert "bound 0: **not held** — the interval lies below 0" in line
    assert "In 1 of 3 trained arms" in findings  # grpo-weff 0.5 vs its warm start 0.3: held
    assert "highest first: `grpo-weff` 0.500" in findings
    assert f"first {EDGE_STEPS} against the last {EDGE_STEPS}" in findings
    assert "- `supo`: 0.400 → 0.200 (-0.200, fell; 3 seeds)" in findings
    assert "- `grpo-w`: 0.000 → 0.100 (+0.100, rose; 3 seeds)" in findings
    assert "`supo` seed 1 (training): the overlong rate doubled: 0.100 at step 0 -> 0.300 at step 6" in findings
    assert "C3 compares identical results" in findings  # 2S and S score the same everywhere
    c2 = next(x for x in findings.splitlines() if x.startswith("- C2"))
    assert "bound -0.05 (the non-inferiority margin)" in c2
    html = files.html.read_text()
    top = html[:html.index("How to read this report")]
    assert '<strong class="verdict v-not-held">not held</strong>' in top
    assert '<strong class="verdict v-held">held</strong>' in top and ".v-held{background:" in html


# ---------------------------------------------------------------------------------------------------------------------
# a borderline claim, in memory


def _runs(arm: str, s: int, m: np.ndarray, w: int = W) -> list[EvalRun]:
    ids = [f"test-{t:05d}" for t in range(m.shape[1])]
    return [EvalRun(env="array", arm=arm, seed=seed, s_eval=s, working_context=w, split="test",
                    metrics={"success_rate": float(m[i].mean())}, path=Path(f"{arm}/s{s}"),
                    outcomes=dict(zip(ids, m[i])))
            for i, seed in enumerate(SEEDS)]


def _borderline_results():
    """C1 (SUPO − GRPO-W) with its lower bound shifted onto 0: a constant shift moves every resample, and so the
    percentile bound, by the same amount."""
    rng = np.random.default_rng(7)
    shape = (len(SEEDS), 128)
    base = rng.uniform(0.3, 0.7, shape)
    supo = np.clip(base + rng.normal(0.0, 0.1, shape), 0.1, 0.9)
    supo -= bootstrap_effect(supo, base).low
    warm = rng.uniform(0.2, 0.6, shape)
    cells = {("sft", S, W): warm, ("supo", S, W): supo, ("supo", 2 * S, W): supo, ("grpo-w", 0, W): base,
             ("sft", 0, W): base, ("grpo-weff", 0, W * (S + 1)): base, ("sft-grpo-weff", 0, W * (S + 1)): base}
    evals = [r for (arm, s, w), m in cells.items() for r in _runs(arm, s, m, w)]
    training = [TrainRun("array", arm, seed, "grpo" if arm.startswith("grpo") else "supo", 0 if "grpo" in arm else S,
                         W * (S + 1) if arm == "grpo-weff" else W, (), Path(f"{arm}/train_metrics.json"))
                for arm in ARMS for seed in SEEDS]
    (res,) = analyze(evals, training, ROLES, arms=list(ARMS), seeds=list(SEEDS))
    res.claims = all_claims(res)
    return res


def test_a_borderline_claim_is_flagged_with_a_bound_that_reads_as_its_threshold():
    res = _borderline_results()
    c1 = next(c for c in res.claims if c.key == "C1")
    assert c1.verdict == BORDERLINE and abs(c1.numbers["ci_low"]) < 2 * c1.numbers["ci_low_mc_se"]
    md = render_markdown(key_findings([res]))
    line = next(x for x in md.splitlines() if x.startswith("- C1"))
    assert "**borderline**" in line and "bound 0" in line
    low = re.search(r"\[([+-][0-9.]+),", line).group(1)
    assert float(low) == c1.numbers["ci_low"] or "(lower bound = 0)" in line  # never a rounded "+0.000" alone
    assert any(f.startswith("C1 is **borderline**: lower bound") for f in flags(res))
    c0 = {c.key: c for c in res.claims}["C0 grpo-w"]  # grpo-w and its warm start score the same everywhere
    assert c0.verdict == NOT_HELD and "C0 grpo-w compares identical results" in md


def test_bounded_intervals_tell_a_bound_from_its_threshold():
    assert bounded(0.009, 0.0, 0.027) == "+0.009 [+0.000, +0.027] (lower bound = 0)"
    assert bounded(0.009, 0.0004, 0.027) == "+0.0090 [+0.0004, +0.0270]"
    assert bounded(0.0, 0.0, 0.0) == "+0.000 [+0.000, +0.000] (both bounds = 0)"
    assert bounded(0.05, -0.0502, 0.15, -0.05) == "+0.0500 [-0.0502, +0.1500]"
    assert bounded(0.05, -0.05, 0.15, -0.05).endswith("(lower bound = -0.05)")
    assert bounded(0.247, 0.169, 0.331) == "+0.247 [+0.169, +0.331]"


def test_every_block_of_the_findings_is_a_paragraph_or_a_list():
    blocks = key_findings([_borderline_results()])
    assert all(isinstance(b, (Para, Bullets)) for b in blocks[1:])
