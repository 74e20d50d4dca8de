"""The claims of the reproduction (docs/design.md §7), each decided by a paired bootstrap interval
(:mod:`supo.report.stats`), never by comparing means:

* **C0** (per trained arm) — RL improves on the warm start: arm − warm start at the arm's own setting > 0; the C0
  comparisons form one family, adjusted by Holm–Bonferroni (:func:`apply_holm`);
* **C1** — SUPO beats GRPO-W at the same working context: SUPO @ S − GRPO-W @ 0 > 0;
* **C2** — SUPO matches or beats GRPO-Weff while its working context stays ≤ W: SUPO @ S − GRPO-Weff @ 0 > −δ
  (non-inferiority margin δ = :data:`C2_MARGIN`), and the share of SUPO's context segments in which the policy
  generated beyond W (summary turn included) ≤ :data:`C2_OVER_W_TOLERANCE`;
* **C3** — SUPO improves when S_eval > S_train: SUPO @ 2S − SUPO @ S > 0 (2S is fixed in advance; 4S is shown);
  with prefix views "not held" means "no improvement detected" and carries the MDE;
* **C4** — each ablation scores lower than SUPO: SUPO − ablation > 0 at S, for every ablation.

Every comparison is over the seeds and test tasks both cells share. A comparison where both sides are 0 everywhere
says so (its interval is the point 0). Each claim states its SE, its minimum detectable effect (80 % power) and the
variance components of its difference matrix; a bound within its Monte-Carlo error of the threshold is borderline
(issue 21, items 5 and 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from supo.report.analysis import Cell, EnvResults, common
from supo.report.stats import (
    BORDERLINE,
    CONFIDENCE,
    NOT_EVALUATED,
    NOT_HELD,
    Effect,
    VarianceComponents,
    bootstrap_effect,
    borderline_note,
    combine,
    holm,
    seeds_for_mde,
    verdict_greater,
    verdict_lower_bound,
    verdict_not_worse,
)

C2_MARGIN = 0.05
"""C2's non-inferiority margin on the success rate: "matches" = not worse by more than 5 points."""
C2_OVER_W_TOLERANCE = 0.05
"""C2's working-context condition: at most this share of SUPO's context segments may see the policy generate in a
context longer than W (the summary turn included)."""
TARGET_MDE = 0.05
"""The MDE a design should reach (issue 21, item 7): each comparison states the seeds that would reach it."""
ALPHA = 1.0 - CONFIDENCE

STATEMENTS = {
    "C0": "RL improves on the warm start",
    "C1": "SUPO beats GRPO-W at the same working context",
    "C2": "SUPO matches or beats GRPO-Weff while its working context stays ≤ W",
    "C3": "SUPO improves when S_eval > S_train",
    "C4": "each ablation scores lower than SUPO",
}


@dataclass
class Claim:
    key: str
    statement: str
    rule: str
    verdict: str
    evidence: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    unadjusted: str = ""
    """A family-adjusted claim (C0): its verdict read from the unadjusted 95 % interval ("" when not adjusted)."""
    components: dict[str, VarianceComponents] = field(default_factory=dict)
    """comparison name → the variance components of its paired difference matrix."""
    effect: Effect | None = field(default=None, repr=False, compare=False)
    threshold: float = 0.0
    """The bound the interval is read against: 0, or −:data:`C2_MARGIN` for C2's non-inferiority."""

    @property
    def label(self) -> str:
        return self.verdict


def _at(arm: str, s: int | None, w: int | None = None) -> str:
    return f"{arm} @ S_eval={s}" + (f", W={w}" if w is not None else "")


def _describe(c: Cell) -> str:
    st = c.stat("success_rate")
    return f"{_at(c.arm, c.s_eval, c.working_context)}: success {st.fmt(n=True)} over seeds" if st else c.arm


@dataclass(frozen=True)
class Comparison:
    """A paired comparison a − b: its bootstrap effect, the variance components of its difference matrix and the
    matrix's smallest entry (≥ 0 everywhere: one side never scored below the other on any (seed, task))."""

    effect: Effect
    components: VarianceComponents | None
    min_difference: float


def paired(a: Cell | None, b: Cell | None, *, seed: int = 0) -> tuple[Comparison | None, str]:
    """The paired comparison a − b on their shared seeds and tasks; (None, why) when it cannot be computed."""
    if a is None or b is None:
        return None, "not evaluated: " + ", ".join(f"{x} missing" for x, c in (("left", a), ("right", b)) if c is None)
    seeds, tasks = common(a, b)
    if not seeds or not tasks:
        return None, f"no seeds or tasks in common between {a.arm} and {b.arm}"
    d = a.matrix(seeds, tasks) - b.matrix(seeds, tasks)
    return Comparison(bootstrap_effect(d, seed=seed), VarianceComponents.of(d), float(d.min())), ""


def compare(a: Cell | None, b: Cell | None, *, seed: int = 0) -> tuple[Effect | None, str]:
    """The paired effect a − b on their shared seeds and tasks; (None, why) when it cannot be computed."""
    comp, why = paired(a, b, seed=seed)
    return (comp.effect if comp else None), why


def power_numbers(comp: Comparison) -> dict[str, float]:
    """The numbers a claim reports for one comparison: effect, interval, bootstrap SE, MDE, the bounds' Monte-Carlo
    SEs, and (two seeds or more) the seed / task / residual SDs, the SE they give at the run's design and the seeds
    that would bring the MDE to :data:`TARGET_MDE` at the run's task count."""
    e, vc = comp.effect, comp.components
    out = {"effect": e.effect, "ci_low": e.low, "ci_high": e.high, "se": e.se, "mde": e.mde,
           "ci_low_mc_se": e.low_mc_se, "ci_high_mc_se": e.high_mc_se}
    if vc is not None:
        out.update(seed_sd=vc.seed ** 0.5, task_sd=vc.task ** 0.5, residual_sd=vc.residual ** 0.5, se_design=vc.se())
        need = seeds_for_mde(vc, vc.n_tasks, TARGET_MDE)
        if need is not None:
            out["seeds_for_target_mde"] = float(need)
    return out


def _record(claim: Claim, name: str, comp: Comparison, prefix: str = "") -> None:
    claim.numbers.update({prefix + k: v for k, v in power_numbers(comp).items()})
    if comp.components is not None:
        claim.components[name] = comp.components
    if not prefix:
        claim.effect = comp.effect


def _opened(key: str, rule: str, a: Cell | None, b: Cell | None):
    """A claim not yet decided and the paired comparison a − b; (claim saying why, None) when it cannot be made."""
    comp, why = paired(a, b)
    claim = Claim(key, STATEMENTS[key], rule, NOT_EVALUATED)
    if comp is None:
        claim.evidence.append(why)
    return claim, comp


def _greater(key: str, rule: str, a: Cell | None, b: Cell | None, name: str) -> Claim:
    claim, comp = _opened(key, rule, a, b)
    if comp is None:
        return claim
    effect = comp.effect
    claim.verdict = verdict_greater(effect)
    claim.evidence += [_describe(a), _describe(b), f"{name}: {effect.fmt()}"]
    if effect.degenerate:
        claim.evidence.append("both sides score the same on every (seed, task): no difference to find")
    if claim.verdict == BORDERLINE:
        claim.evidence.append(borderline_note(effect))
    _record(claim, name, comp)
    return claim


def claim_c0(res: EnvResults, arm: str) -> Claim:
    """C0 for one arm, unadjusted (:func:`apply_holm` adjusts the family)."""
    s, w = res.own.get(arm, (None, None))
    ws = res.warm_start_at(s, w) if s is not None else None
    claim = _greater("C0", f"{arm} − warm start at {arm}'s own setting (S_eval={s}, W={w}) > 0: the 95% CI above 0",
                     res.cell(arm, s), ws, f"{arm} − warm start")
    claim.key = f"C0 {arm}"
    return claim


def apply_holm(claims: list[Claim]) -> None:
    """Adjust the C0 family (one claim per trained arm) by Holm–Bonferroni's step-down (:func:`stats.holm`): each
    claim keeps its unadjusted 95 % interval and verdict (``unadjusted``) and takes the adjusted verdict."""
    family = [c for c in claims if c.effect is not None]
    m = len(family)
    for c in claims:
        c.unadjusted = c.verdict
        c.rule += (f"; the {m} C0 comparisons form one family, adjusted by Holm–Bonferroni: the comparison whose "
                   f"one-sided bootstrap p-value (the share of resampled differences ≤ 0) ranks k-th smallest is "
                   f"read at one-sided level {ALPHA / 2:g}/(m−k+1), i.e. its interval at confidence "
                   f"1 − {ALPHA:g}/(m−k+1), and is held only if every comparison with a smaller p-value is held "
                   f"(family-wise rate of a false 'held' ≤ {ALPHA / 2:g}); the unadjusted 95% CI is shown")
    for c, step in zip(family, holm([c.effect for c in family], ALPHA), strict=True):
        c.verdict = step.verdict
        c.numbers.update(p_one_sided=step.p, holm_rank=float(step.rank), holm_m=float(step.m),
                         holm_level=step.level, holm_low=step.low, holm_high=step.high)
        c.evidence.append(f"Holm: one-sided p = {step.p:.4f}, rank {step.rank} of {step.m}, read at one-sided "
                          f"{step.level:.4f} (confidence {step.confidence:.2%}): [{step.low:+.3f}, {step.high:+.3f}] "
                          f"→ {step.verdict} (unadjusted 95% CI: {c.unadjusted})")


def claim_c1(res: EnvResults) -> Claim:
    r, s = res.roles, res.s_train
    return _greater("C1", f"{r.supo} @ S_eval={s} − {r.grpo_w} @ S_eval=0 > 0: the 95% CI above 0",
                    res.cell(r.supo, s), res.cell(r.grpo_w, 0), f"{r.supo} − {r.grpo_w}")


def context_condition(a: Cell) -> tuple[bool, str]:
    """C2's working-context condition on SUPO's cell: the share of context segments over W ≤ the tolerance; for
    evaluations that predate that measure (or recorded no generation peak: largest peak 0), the mean per-segment
    peak ≤ W (said so in the evidence)."""
    over, peak, w = a.stat("over_w_segment_frac"), a.max_of("max_generation_peak_tokens"), a.working_context
    if peak is not None and peak <= 0:  # no generation peak was recorded: a share of 0 would be no measurement
        over = None
    if over is not None:
        within = over.mean <= C2_OVER_W_TOLERANCE
        peak_text = "" if peak is None else f"; largest generation peak {peak:.0f} tokens"
        return within, (f"{a.arm} working context: {over.mean:.1%} of context segments saw the policy generate in a "
                        f"context longer than W = {w} (summary turn included; mean over {over.n} seeds{peak_text}) "
                        f"≤ tolerance {C2_OVER_W_TOLERANCE:.0%}: {'yes' if within else 'no'}")
    wc, top = a.stat("mean_working_context_tokens"), a.max_of("max_working_context_tokens")
    if wc is None or w is None:
        return False, f"{a.arm} working context: not recorded, so the condition cannot be checked"
    within = wc.mean <= w
    top_text = "" if top is None else f" (max {top:.0f}, trigger turn included)"
    return within, (f"{a.arm} working context: mean per-segment peak {wc.mean:.0f} tokens{top_text} ≤ W = {w}: "
                    f"{'yes' if within else 'no'} — fallback: these evaluations do not record the share of segments "
                    "over W (written before it existed, or no generation peak recorded), and a mean can hide "
                    "segments over W")


def claim_c2(res: EnvResults) -> Claim:
    r, s = res.roles, res.s_train
    rule = (f"{r.supo} @ S_eval={s} − {r.grpo_weff} @ S_eval=0 > −{C2_MARGIN} (the 95% CI above −{C2_MARGIN}: "
            f"not worse by more than {C2_MARGIN:.0%} points), AND the share of {r.supo}'s context segments in which "
            f"the policy generated in a context longer than W (summary turn included; mean over seeds) "
            f"≤ {C2_OVER_W_TOLERANCE:.0%} — evaluations that predate that measure fall back to the mean per-segment "
            f"peak ≤ W, and say so")
    a, b = res.cell(r.supo, s), res.cell(r.grpo_weff, 0)
    claim, comp = _opened("C2", rule, a, b)
    claim.threshold = -C2_MARGIN
    if comp is None:
        return claim
    effect = comp.effect
    success = verdict_not_worse(effect, C2_MARGIN)
    within, context = context_condition(a)
    claim.verdict = NOT_HELD if not within else success
    claim.evidence += [_describe(a), _describe(b), f"{r.supo} − {r.grpo_weff}: {effect.fmt()}; margin −{C2_MARGIN}",
                       context]
    if success == BORDERLINE:
        claim.evidence.append(borderline_note(effect, -C2_MARGIN))
    _record(claim, f"{r.supo} − {r.grpo_weff}", comp)
    return claim


def claim_c3(res: EnvResults) -> Claim:
    """C3. When every (seed, task) difference 2S − S is ≥ 0 — the S run is a prefix view of the 2S run (or of a
    larger one), so a success at S is a success at 2S and success cannot fall as S grows — every resampled mean is
    ≥ 0 and so is the interval's lower bound: the interval cannot straddle 0. Then held = lower bound
    above 0, otherwise not held, read as "no improvement detected" with the MDE (an improvement smaller than it could
    be missed); "inconclusive" cannot arise. Where some difference is negative (not prefix views), the ordinary
    three-way reading applies and the evidence says so."""
    r, s = res.roles, res.s_train
    if s is None:
        return Claim("C3", STATEMENTS["C3"], "needs S_train", NOT_EVALUATED, ["S_train unknown"])
    rule = (f"{r.supo} @ S_eval={2 * s} − {r.supo} @ S_eval={s} > 0: the 95% CI above 0 (2S fixed in advance). Each "
            f"smaller S_eval is a prefix view of the largest run (a success within S summaries is one within 2S), so "
            f"success cannot fall as S grows and the interval's lower bound is ≥ 0: held when it is above 0, "
            f"otherwise not held — \"no improvement detected\", with the MDE below which an improvement could be "
            f"missed (inconclusive cannot arise; where the runs are not prefix views the ordinary reading applies)")
    a2, a1 = res.cell(r.supo, 2 * s), res.cell(r.supo, s)
    claim, comp = _opened("C3", rule, a2, a1)
    if comp is None:
        return claim
    effect = comp.effect
    prefix = comp.min_difference >= 0
    claim.verdict = verdict_lower_bound(effect) if prefix else verdict_greater(effect)
    claim.evidence += [_describe(a2), _describe(a1), f"2S − S: {effect.fmt()}"]
    if prefix:
        if claim.verdict == NOT_HELD:
            claim.evidence.append(f"no improvement detected: a true improvement below the MDE {effect.mde:.3f} "
                                  "could be missed by this design")
    else:
        claim.evidence.append("some (seed, task) scores lower at 2S than at S: these runs are not prefix views of "
                              "one run, so the ordinary three-way reading applies")
    if claim.verdict == BORDERLINE:
        claim.evidence.append(borderline_note(effect))
    by_h, cut = a2.stat("max_steps_rate"), a2.stat("failure_budget_cut_rate")
    if by_h is not None:
        claim.evidence.append(f"{r.supo} @ S_eval={2 * s}: {by_h.mean:.1%} of rollouts ended by the action budget H "
                              f"(mean over {by_h.n} seeds): where H binds, more summaries cannot help")
    elif cut is not None:
        claim.evidence.append(f"{r.supo} @ S_eval={2 * s}: {cut.mean:.1%} of rollouts failed on a budget cut (H, S "
                              "or the engine's limit on valid calls; which one is not recorded)")
    _record(claim, "2S − S", comp)
    far, _ = compare(res.cell(r.supo, 4 * s), a1)
    if far is not None:
        claim.evidence.append(f"shown, not decided: S_eval={4 * s} − S_eval={s}: {far.fmt()}")
    return claim


def claim_c4(res: EnvResults) -> Claim:
    r, s = res.roles, res.s_train
    rule = f"for every ablation a: {r.supo} @ S_eval={s} − a @ S_eval={s} > 0 (each 95% CI above 0)"
    claim = Claim("C4", STATEMENTS["C4"], rule, NOT_EVALUATED)
    verdicts = []
    for abl in r.ablations:
        one = _greater("C4", rule, res.cell(r.supo, s), res.cell(abl, s), f"{r.supo} − {abl}")
        verdicts.append(one.verdict)
        claim.evidence += [f"{abl}: {one.verdict}"] + one.evidence[1:]
        claim.numbers.update({f"{abl}_{k}": v for k, v in one.numbers.items()})
        claim.components.update(one.components)
    claim.verdict = combine(verdicts) if verdicts else NOT_EVALUATED
    return claim


def all_claims(res: EnvResults) -> list[Claim]:
    trained = [a for a in res.roles.trained_arms if a in res.arms]
    c0 = [claim_c0(res, a) for a in trained]
    apply_holm(c0)
    return [*c0, claim_c1(res), claim_c2(res), claim_c3(res), claim_c4(res)]


__all__ = ["C2_MARGIN", "C2_OVER_W_TOLERANCE", "Claim", "Comparison", "STATEMENTS", "TARGET_MDE", "all_claims",
           "apply_holm", "claim_c0", "claim_c1", "claim_c2", "claim_c3", "claim_c4", "compare",
           "context_condition", "paired", "power_numbers"]
