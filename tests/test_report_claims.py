"""The claims (supo.report.claims) on synthetic evaluations built in memory (:class:`EvalRun` / :class:`TrainRun`
with per-(seed, task) success matrices): the C0 family under Holm, C2's working-context condition (the share of
segments over W, and its fallback for old evaluations), C3's rule for prefix views, and the power numbers every claim
reports; and the mechanism rows (summary accuracy, failure decomposition) from per-task sums.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from supo.report.analysis import ArmRoles, analyze
from supo.report.claims import C2_OVER_W_TOLERANCE, Claim, all_claims, apply_holm, claim_c2, claim_c3
from supo.report.collect import EvalRun, TrainRun
from supo.report.mechanism import failure_decomposition, summary_accuracy
from supo.report.stats import BORDERLINE, HELD, INCONCLUSIVE, NOT_HELD, bootstrap_effect, mde, verdict_greater
from supo.results import FAILURES

SEEDS, TASKS, S, W = (0, 1, 2, 3), 128, 4, 128
ROLES = ArmRoles(grpo_w="grpo-w", grpo_weff="grpo-weff", supo="supo", ablations=())
TASK_IDS = [f"test-{t:05d}" for t in range(TASKS)]


def _binary(p: float, rng_seed: int) -> np.ndarray:
    return (np.random.default_rng(rng_seed).random((len(SEEDS), TASKS)) < p).astype(float)


def _run(arm: str, s: int, m: np.ndarray, seed_i: int, w: int = W, **extra) -> EvalRun:
    metrics = {"success_rate": float(np.clip(m[seed_i].mean(), 0, 1)), **extra.pop("metrics", {})}
    return EvalRun(env="array", arm=arm, seed=SEEDS[seed_i], s_eval=s, working_context=w, split="test",
                   metrics=metrics, path=Path(f"/x/{arm}/s{s}"), outcomes=dict(zip(TASK_IDS, m[seed_i])), **extra)


def _results(cells: dict, metrics: dict | None = None, evals: list[EvalRun] | None = None):
    """``cells``: (arm, S_eval, W) → success matrix [seed, task]; ``metrics``: (arm, S_eval) → extra eval metrics
    (or the ``evals`` themselves); the training runs give each arm its own setting."""
    metrics = metrics or {}
    evals = evals or [_run(arm, s, m, i, w, metrics=metrics.get((arm, s), {})) for (arm, s, w), m in cells.items()
                      for i in range(len(SEEDS))]
    training = [TrainRun("array", arm, seed, algo, smax, w, (), Path(f"/c/{arm}/train_metrics.json"))
                for arm, algo, smax, w in (("supo", "supo", S, W), ("grpo-w", "grpo", 0, W),
                                           ("grpo-weff", "grpo", 0, W * (S + 1))) for seed in SEEDS]
    (res,) = analyze(evals, training, ROLES, arms=list(ROLES.trained_arms), seeds=list(SEEDS))
    return res


def _base(supo4: np.ndarray | None = None, supo8: np.ndarray | None = None, weff: np.ndarray | None = None):
    warm = _binary(0.3, 0)
    supo4 = _binary(0.6, 1) if supo4 is None else supo4
    return {("sft", 0, W): _binary(0.05, 2), ("sft", S, W): warm, ("sft-grpo-weff", 0, W * (S + 1)): _binary(0.2, 3),
            ("supo", S, W): supo4, ("supo", 2 * S, W): supo4 if supo8 is None else supo8,
            ("grpo-w", 0, W): _binary(0.05, 4),
            ("grpo-weff", 0, W * (S + 1)): _binary(0.5, 5) if weff is None else weff}


def test_every_claim_reports_se_mde_and_variance_components():
    supo4 = _binary(0.6, 1)
    res = _results(_base(supo4, supo4 + (1 - supo4) * _binary(0.3, 21)))
    for c in all_claims(res):
        if c.key == "C4":
            continue  # no ablation in this family: not evaluated
        assert c.numbers["se"] > 0 and c.numbers["mde"] == pytest.approx(mde(c.numbers["se"])), c.key
        assert {"seed_sd", "task_sd", "residual_sd", "se_design", "ci_low_mc_se"} <= set(c.numbers), c.key
        assert c.components and "MDE" in " ".join(c.evidence)


def test_holm_turns_a_marginal_c0_inconclusive():
    """SUPO − warm start is held at 95% with a one-sided p between 0.025/3 and 0.025; the other two C0
    comparisons are null, so SUPO's ranks first in a family of three and is read at 0.025/3: inconclusive."""
    cells = _base()
    warm = cells[("sft", S, W)]
    d = _binary(0.35, 11) - _binary(0.3, 12)
    e = bootstrap_effect(d)
    (q1, _), (q3, _) = e.bound(0.025), e.bound(0.025 / 3)
    cells[("supo", S, W)] = cells[("supo", 2 * S, W)] = warm + d - (q1 + q3) / 2  # synthetic per-task means
    cells[("grpo-w", 0, W)] = cells[("sft", 0, W)] + _binary(0.1, 13) - _binary(0.1, 14)
    cells[("grpo-weff", 0, W * (S + 1))] = cells[("sft-grpo-weff", 0, W * (S + 1))] + _binary(0.1, 15) - \
        _binary(0.1, 16)
    claims = {c.key: c for c in all_claims(_results(cells))}
    supo = claims["C0 supo"]
    assert supo.unadjusted == HELD and supo.numbers["ci_low"] > 0
    assert supo.verdict == INCONCLUSIVE and supo.numbers["holm_rank"] == 1 and supo.numbers["holm_m"] == 3
    assert supo.numbers["holm_level"] == pytest.approx(0.025 / 3) and supo.numbers["holm_low"] < 0
    assert "Holm–Bonferroni" in supo.rule and any(line.startswith("Holm:") for line in supo.evidence)
    for arm in ("grpo-w", "grpo-weff"):
        assert claims[f"C0 {arm}"].verdict in (INCONCLUSIVE, NOT_HELD, BORDERLINE)


def test_holm_keeps_strong_c0s_held():
    claims = {c.key: c for c in all_claims(_results(_base()))}
    assert claims["C0 supo"].verdict == HELD and claims["C0 supo"].unadjusted == HELD
    assert claims["C0 grpo-weff"].verdict == HELD  # 0.5 against 0.2 at W_eff


def test_apply_holm_skips_what_was_not_evaluated():
    missing = Claim("C0 x", "s", "rule", "not evaluated")
    apply_holm([missing])
    assert missing.verdict == "not evaluated" and missing.unadjusted == "not evaluated"


def test_c2_fails_when_segments_exceed_w():
    """SUPO's success is well above GRPO-Weff's, but 30% of its segments generated beyond W: not held."""
    over = {("supo", S): {"over_w_segment_frac": 0.30, "max_generation_peak_tokens": 151.0}}
    c2 = claim_c2(_results(_base(), over))
    assert c2.verdict == NOT_HELD and c2.numbers["ci_low"] > -0.05
    text = " ".join(c2.evidence)
    assert "30.0% of context segments" in text and "151 tokens" in text and ": no" in text
    within = {("supo", S): {"over_w_segment_frac": C2_OVER_W_TOLERANCE / 2, "max_generation_peak_tokens": 131.0}}
    assert claim_c2(_results(_base(), within)).verdict == HELD


def test_c2_falls_back_on_old_evaluations():
    old = {("supo", S): {"mean_working_context_tokens": 120.0, "max_working_context_tokens": 140.0}}
    c2 = claim_c2(_results(_base(), old))
    assert c2.verdict == HELD and "fallback" in " ".join(c2.evidence)
    no_peaks = {("supo", S): {"over_w_segment_frac": 0.0, "max_generation_peak_tokens": 0.0,
                              "mean_working_context_tokens": 150.0}}
    c2 = claim_c2(_results(_base(), no_peaks))  # a share of 0 with no peak recorded is no measurement
    assert c2.verdict == NOT_HELD and "fallback" in " ".join(c2.evidence)


def test_c3_with_prefix_views_is_held_or_not_held():
    """2S ≥ S on every (seed, task) (prefix views): held when the lower bound clears 0; with one extra success the
    bound is 0 and the verdict is "not held", read as no improvement detected with its MDE — never inconclusive."""
    supo4 = _binary(0.6, 1)
    gain = supo4 + (1 - supo4) * _binary(0.3, 21)
    held = claim_c3(_results(_base(supo4, gain), {("supo", 2 * S): {"max_steps_rate": 0.46}}))
    assert held.verdict == HELD and held.numbers["ci_low"] > 0
    assert "46.0% of rollouts ended by the action budget H" in " ".join(held.evidence)
    one = supo4.copy()
    one[0, int(np.argmin(supo4[0]))] = 1.0
    c3 = claim_c3(_results(_base(supo4, one)))
    assert c3.verdict == NOT_HELD and c3.numbers["ci_low"] == 0 and c3.numbers["ci_high"] > 0
    text = " ".join(c3.evidence)
    assert "no improvement detected" in text and f"{c3.numbers['mde']:.3f}" in text
    assert "prefix view" in c3.rule
    same = claim_c3(_results(_base(supo4, supo4)))
    assert same.verdict == NOT_HELD


def test_c3_without_prefix_views_reads_three_ways():
    c3 = claim_c3(_results(_base(_binary(0.6, 1), _binary(0.6, 31))))
    assert c3.verdict in (INCONCLUSIVE, BORDERLINE) and "not prefix views" in " ".join(c3.evidence)


def test_mechanism_rows_from_per_task_sums():
    """Summary accuracy is pooled correct / judged with a paired interval against the warm start; the failure
    shares come from the per-task failure classes."""
    rng = np.random.default_rng(5)
    judged = {arm: rng.integers(1, 4, (len(SEEDS), TASKS)).astype(float) for arm in ("sft", "supo")}
    correct = {"sft": np.floor(judged["sft"] * 0.5), "supo": judged["supo"]}
    cells = _base()
    evals = []
    for (arm, s, w), m in cells.items():
        for i in range(len(SEEDS)):
            extra = {}
            if s == S and arm in judged:
                extra = {"summaries_judged": dict(zip(TASK_IDS, judged[arm][i])),
                         "summaries_correct": dict(zip(TASK_IDS, correct[arm][i])),
                         "failures": {k: dict(zip(TASK_IDS, (1 - m[i]) * (k == "budget_cut"))) for k in FAILURES}}
            evals.append(_run(arm, s, m, i, w, **extra))
    res = _results(cells, evals=evals)
    acc = {a.arm: a for a in summary_accuracy(res)}
    assert set(acc) == {"sft", "supo"} and acc["supo"].accuracy.effect == 1.0
    assert acc["sft"].accuracy.effect == pytest.approx(correct["sft"].sum() / judged["sft"].sum())
    assert acc["sft"].vs_warm_start is None and verdict_greater(acc["supo"].vs_warm_start) == HELD
    rows = {r.arm: r for r in failure_decomposition(res)}
    supo = rows["supo"]
    assert supo.success == pytest.approx(cells[("supo", S, W)].mean())
    assert supo.shares["budget_cut"] == pytest.approx(1 - supo.success) and supo.shares["wrong_summary"] == 0
    assert supo.vs_warm_start["budget_cut"].effect < 0
