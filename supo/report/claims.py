"""The claims of the reproduction (docs/design.md §7), each decided by a paired bootstrap interval
(:mod:`supo.report.stats`), never by comparing means:

* **C0** (per trained arm) — RL improves on the warm start: arm − warm start at the arm's own setting > 0;
* **C1** — SUPO beats GRPO-W at the same working context: SUPO @ S − GRPO-W @ 0 > 0;
* **C2** — SUPO matches or beats GRPO-Weff while its working context stays ≤ W: SUPO @ S − GRPO-Weff @ 0 > −δ
  (non-inferiority margin δ = :data:`C2_MARGIN`), and SUPO's mean per-segment peak working context ≤ W;
* **C3** — SUPO improves when S_eval > S_train: SUPO @ 2S − SUPO @ S > 0 (2S is fixed in advance; 4S is shown);
* **C4** — each ablation scores lower than SUPO: SUPO − ablation > 0 at S, for every ablation.

Every comparison is over the seeds and test tasks both cells share. A comparison where both sides are 0 everywhere
says so (its interval is the point 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from supo.report.analysis import Cell, EnvResults, common
from supo.report.stats import (
    HELD,
    INCONCLUSIVE,
    NOT_EVALUATED,
    NOT_HELD,
    Effect,
    bootstrap_effect,
    combine,
    verdict_greater,
    verdict_not_worse,
)

C2_MARGIN = 0.05
"""C2's non-inferiority margin on the success rate: "matches" = not worse by more than 5 points."""

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

    @property
    def label(self) -> str:
        return self.verdict


def _at(arm: str, s: int | None, w: int | None = None) -> str:
    return f"{arm} @ S_eval={s}" + (f", W={w}" if w is not None else "")


def _describe(c: Cell) -> str:
    st = c.stat("success_rate")
    return f"{_at(c.arm, c.s_eval, c.working_context)}: success {st.fmt(n=True)} over seeds" if st else c.arm


def compare(a: Cell | None, b: Cell | None, *, seed: int = 0) -> tuple[Effect | None, str]:
    """The paired effect a − b on their shared seeds and tasks; (None, why) when it cannot be computed."""
    if a is None or b is None:
        return None, "not evaluated: " + ", ".join(f"{x} missing" for x, c in (("left", a), ("right", b)) if c is None)
    seeds, tasks = common(a, b)
    if not seeds or not tasks:
        return None, f"no seeds or tasks in common between {a.arm} and {b.arm}"
    return bootstrap_effect(a.matrix(seeds, tasks), b.matrix(seeds, tasks), seed=seed), ""


def _greater(key: str, rule: str, a: Cell | None, b: Cell | None, name: str) -> Claim:
    effect, why = compare(a, b)
    claim = Claim(key, STATEMENTS[key], rule, NOT_EVALUATED)
    if effect is None:
        claim.evidence.append(why)
        return claim
    claim.verdict = verdict_greater(effect)
    claim.evidence += [_describe(a), _describe(b), f"{name}: {effect.fmt()}"]
    if effect.degenerate:
        claim.evidence.append("both sides score the same on every (seed, task): no difference to find")
    claim.numbers.update(effect=effect.effect, ci_low=effect.low, ci_high=effect.high)
    return claim


def claim_c0(res: EnvResults, arm: str) -> Claim:
    s, w = res.own.get(arm, (None, None))
    ws = res.warm_start_at(s, w) if s is not None else None
    claim = _greater("C0", f"{arm} − warm start at {arm}'s own setting (S_eval={s}, W={w}) > 0: the 95% CI above 0",
                     res.cell(arm, s), ws, f"{arm} − warm start")
    claim.key = f"C0 {arm}"
    return claim


def claim_c1(res: EnvResults) -> Claim:
    r, s = res.roles, res.s_train
    return _greater("C1", f"{r.supo} @ S_eval={s} − {r.grpo_w} @ S_eval=0 > 0: the 95% CI above 0",
                    res.cell(r.supo, s), res.cell(r.grpo_w, 0), f"{r.supo} − {r.grpo_w}")


def claim_c2(res: EnvResults) -> Claim:
    r, s = res.roles, res.s_train
    rule = (f"{r.supo} @ S_eval={s} − {r.grpo_weff} @ S_eval=0 > −{C2_MARGIN} (the 95% CI above −{C2_MARGIN}: "
            f"not worse by more than {C2_MARGIN:.0%} points), AND {r.supo}'s mean per-segment peak working context "
            f"≤ W (the max, which includes the trigger turn, is shown)")
    a, b = res.cell(r.supo, s), res.cell(r.grpo_weff, 0)
    effect, why = compare(a, b)
    claim = Claim("C2", STATEMENTS["C2"], rule, NOT_EVALUATED)
    if effect is None:
        claim.evidence.append(why)
        return claim
    success = verdict_not_worse(effect, C2_MARGIN)
    wc, peak, w = a.stat("mean_working_context_tokens"), a.max_of("max_working_context_tokens"), a.working_context
    within = wc is not None and w is not None and wc.mean <= w
    claim.verdict = NOT_HELD if not within else success
    claim.evidence += [_describe(a), _describe(b), f"{r.supo} − {r.grpo_weff}: {effect.fmt()}; margin −{C2_MARGIN}"]
    if wc is not None and w is not None:
        claim.evidence.append(f"{r.supo} working context: mean per-segment peak {wc.mean:.0f} tokens (max {peak:.0f}, "
                              f"trigger turn included) ≤ W = {w}: {'yes' if within else 'no'}")
    claim.numbers.update(effect=effect.effect, ci_low=effect.low, ci_high=effect.high)
    return claim


def claim_c3(res: EnvResults) -> Claim:
    r, s = res.roles, res.s_train
    if s is None:
        return Claim("C3", STATEMENTS["C3"], "needs S_train", NOT_EVALUATED, ["S_train unknown"])
    claim = _greater("C3", f"{r.supo} @ S_eval={2 * s} − {r.supo} @ S_eval={s} > 0: the 95% CI above 0 (2S fixed "
                           f"in advance)", res.cell(r.supo, 2 * s), res.cell(r.supo, s), "2S − S")
    far, _ = compare(res.cell(r.supo, 4 * s), res.cell(r.supo, s))
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
    claim.verdict = combine(verdicts) if verdicts else NOT_EVALUATED
    return claim


def all_claims(res: EnvResults) -> list[Claim]:
    trained = [a for a in res.roles.trained_arms if a in res.arms]
    return [*(claim_c0(res, a) for a in trained), claim_c1(res), claim_c2(res), claim_c3(res), claim_c4(res)]


__all__ = ["C2_MARGIN", "Claim", "HELD", "INCONCLUSIVE", "NOT_EVALUATED", "NOT_HELD", "STATEMENTS", "all_claims",
           "claim_c0", "claim_c1", "claim_c2", "claim_c3", "claim_c4", "compare"]
