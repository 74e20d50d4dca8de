"""The report's "Key findings" (issue 22, item 5): the block that opens the report and answers, in words with
intervals, *which arm is better* and *did RL help* — per environment:

* each arm's success at its own setting, highest first, next to the warm start's;
* every claim's verdict with the bound its interval is read against (0, or −:data:`~supo.report.claims.C2_MARGIN`
  for C2) and the interval itself (:func:`~supo.report.tables.bounded`: enough digits that a bound equal to the
  threshold is visibly equal to it);
* RL against the warm start per trained arm (C0, Holm-adjusted);
* the training reward over the first against the last :data:`EDGE_STEPS` steps per arm;
* what the pipeline flagged: overlong warnings of training runs, borderline verdicts, comparisons of identical
  results, verdicts Holm changed, C2's working-context condition failing, missing outputs.

Every number is read from the results; nothing here decides anything the claims did not.
"""

from __future__ import annotations

from collections.abc import Sequence

from supo.metrics import overlong_warning
from supo.report.analysis import EnvResults, edge_mean, success_interval
from supo.report.blocks import Block, Bullets, Heading, Para
from supo.report.claims import Claim, context_condition
from supo.report.collect import TrainRun
from supo.report.stats import BORDERLINE, HELD, INCONCLUSIVE, NOT_EVALUATED, NOT_HELD
from supo.report.tables import claim_interval

EDGE_STEPS = 3
"""The training steps averaged at each end of a run (first k against last k)."""


def _bound(c: Claim) -> str:
    return f"{c.threshold:g}" if c.threshold == 0 else f"{c.threshold:g} (the non-inferiority margin)"


def reading(c: Claim, prefix: str = "") -> str:
    """Why an interval gives its verdict, in words: where it lies against the claim's bound."""
    n, t = c.numbers, f"{c.threshold:g}"
    low, high = n.get(f"{prefix}ci_low"), n.get(f"{prefix}ci_high")
    if low is None or high is None:
        return ""
    if c.effect is not None and c.effect.degenerate and not prefix:
        return "both sides score the same on every (seed, task)"
    if low > c.threshold:
        return f"the interval lies above {t}"
    if high < c.threshold:
        return f"the interval lies below {t}"
    if low == c.threshold or high == c.threshold:
        return f"a bound touches {t}"
    return f"the interval straddles {t}"


def _verdict_text(c: Claim) -> str:
    """``**verdict**`` (a badge in HTML), with the unadjusted verdict where Holm changed it."""
    text = f"**{c.verdict}**"
    if c.unadjusted and c.unadjusted != c.verdict:
        text += f" after the Holm adjustment ({c.unadjusted} at 95%)"
    return text


def _why_not(c: Claim) -> str:
    return next((e for e in c.evidence if e.startswith(("not evaluated", "no seeds"))), "no comparison could be made")


def claim_lines(res: EnvResults) -> list[str]:
    """One line per claim other than C0: verdict, the comparison, its interval and the bound it is read against."""
    r, s = res.roles, res.s_train
    names = {"C1": f"{r.supo} @ S_eval={s} − {r.grpo_w} @ S_eval=0",
             "C2": f"{r.supo} @ S_eval={s} − {r.grpo_weff} @ S_eval=0",
             "C3": f"{r.supo} @ S_eval={2 * s if s is not None else '2S'} − {r.supo} @ S_eval={s}"}
    out = []
    for c in res.claims:
        if c.key.startswith("C0"):
            continue
        head = f"{c.key} — {c.statement}: {_verdict_text(c)}"
        if c.key == "C4":
            out.append(_c4_line(c, res, head))
        elif "effect" not in c.numbers:
            out.append(f"{head} ({_why_not(c)})")
        else:
            why = reading(c) + ("; but the working-context condition failed (see Flagged)" if c.key == "C2" and
                                not _context_ok(res) else "")
            out.append(f"{head}: {names.get(c.key, c.key)} = {claim_interval(c)}, bound {_bound(c)}: {why}")
    return out


def _context_ok(res: EnvResults) -> bool:
    """C2's working-context condition on SUPO's cell at S_train (True where there is no cell to check)."""
    cell = res.cell(res.roles.supo, res.s_train)
    return cell is None or context_condition(cell)[0]


def _c4_line(c: Claim, res: EnvResults, head: str) -> str:
    ablations = [a for a in res.roles.ablations if f"{a}_effect" in c.numbers]
    if not res.roles.ablations:
        return f"{head} (no ablation arm ran)"
    if not ablations:
        return f"{head} ({_why_not(c)})"
    parts = [f"{res.roles.supo} − {a} = {claim_interval(c, f'{a}_')} ({reading(c, f'{a}_')})" for a in ablations]
    return f"{head}: " + "; ".join(parts) + f", bound {_bound(c)}"


def _success(cell) -> float | None:
    """A cell's success: over seeds × tasks (Table 1's number), or the mean over seeds without per-task outcomes."""
    e = success_interval(cell)
    st = cell.stat("success_rate") if cell is not None else None
    return e.effect if e is not None else st.mean if st is not None else None


def _solved(cell) -> str:
    value = _success(cell)
    return "–" if value is None else f"{value:.3f}"


def rl_lines(res: EnvResults) -> tuple[str, list[str]]:
    """C0 per trained arm in words ("supo solved 0.256 vs the warm start's 0.211 …") and the headline above them."""
    c0 = {c.key[3:]: c for c in res.claims if c.key.startswith("C0 ")}
    lines, verdicts, above = [], [], 0
    for arm, s, w, cell, warm in res.own_cells():
        c = c0.get(arm)
        if c is None:
            continue
        where = f"S_eval={s}, W={w}"
        if "effect" not in c.numbers:
            lines.append(f"`{arm}` ({where}): {_verdict_text(c)} ({_why_not(c)})")
            continue
        verdicts.append(c.verdict)
        above += c.numbers["effect"] > 0
        lines.append(f"`{arm}` solved {_solved(cell)} vs the warm start's {_solved(warm)} ({where}): "
                     f"{claim_interval(c)}, bound 0: {_verdict_text(c)} — {reading(c)}")
    n = len(verdicts)
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in (HELD, BORDERLINE, INCONCLUSIVE, NOT_HELD)
                       if verdicts.count(v))
    head = (f"**Did RL improve on the warm start?** In {verdicts.count(HELD)} of {n} trained arms (C0 held, "
            f"Holm-adjusted over the {n}; {counts or 'none decided'}); the point estimate lies above the warm "
            f"start in {above} of {n}." if n else "**Did RL improve on the warm start?** Not evaluated.")
    return head, lines


def leader(res: EnvResults) -> str:
    """Each trained arm's success at its own setting, highest first, and the warm start's."""
    rows, warm = [], []
    for arm, s, w, cell, _ in res.own_cells():
        e = success_interval(cell)
        text = f"`{arm}` " + (f"{e.effect:.3f} [{e.low:.3f}, {e.high:.3f}]" if e is not None else _solved(cell))
        value = _success(cell)
        (warm if res.roles.role_of(arm) == "warm start" else rows).append(
            (-1.0 if value is None else value, f"{text} (S_eval={s}, W={w})"))
    if not rows:
        return ""
    ranked = [t for _, t in sorted(rows, key=lambda kv: -kv[0])]
    text = (f"**Which arm is better?** Success at each arm's own setting (`{res.env}`, "
            f"{', '.join(res.splits) or '?'} split; mean over seeds × tasks [95% CI]), highest first: "
            + "; ".join(ranked) + ".")
    if warm:
        text += " Warm start: " + "; ".join(t for _, t in warm) + "."
    return text + " The claims below decide which differences the data support."


def training_lines(training: Sequence[TrainRun], edge: int = EDGE_STEPS) -> tuple[str, list[str]]:
    """Per arm, the mean training reward over the first and the last ``edge`` steps, and the headline."""
    lines, moves = [], []
    for arm in dict.fromkeys(t.arm for t in training):
        runs = [t for t in training if t.arm == arm]
        first, last = edge_mean(runs, "mean_reward", edge, False), edge_mean(runs, "mean_reward", edge, True)
        if first is None or last is None:
            continue
        moves.append(last - first)
        word = "rose" if last > first else "fell" if last < first else "did not move"
        lines.append(f"`{arm}`: {first:.3f} → {last:.3f} ({last - first:+.3f}, {word}; {len(runs)} seeds)")
    if not moves:
        return "", []
    steps = max(len(t.history) for t in training)
    overlap = f" (runs of {steps} steps: the two ends overlap)" if steps < 2 * edge else ""
    head = (f"**Training reward** (train split; mean over seeds of the first {edge} against the last {edge} "
            f"steps{overlap}): rose in {sum(m > 0 for m in moves)} of {len(moves)} arms, fell in "
            f"{sum(m < 0 for m in moves)}.")
    return head, lines


def overlong_flags(training: Sequence[TrainRun]) -> list[str]:
    """The overlong warning each training run raised (``supo.metrics.overlong_warning``, checked step by step as
    the loop does: the first step at which it fired)."""
    out = []
    for t in training:
        rows = [dict(r) for r in t.history if r.get("overlong_rate") is not None]
        fired = next((w for k in range(2, len(rows) + 1) if (w := overlong_warning(rows[:k]))), None)
        if fired:
            out.append(f"`{t.arm}` seed {t.seed} (training): {fired}")
    return out


def flags(res: EnvResults) -> list[str]:
    """What the pipeline flagged in one environment (see the module docstring)."""
    out = overlong_flags(res.training) if res.training else []
    for c in res.claims:
        note = next((e for e in c.evidence if e.startswith("borderline:")), None)
        if c.verdict == BORDERLINE:
            out.append(f"{c.key} is **{BORDERLINE}**: " + (note[len("borderline: "):] if note else
                                                           "a bound lies within its Monte-Carlo error of the bound"))
        if c.effect is not None and c.effect.degenerate:
            out.append(f"{c.key} compares identical results: both sides score the same on every (seed, task), so "
                       "the difference is exactly 0 and there is nothing to decide")
        if c.unadjusted and c.unadjusted != c.verdict and c.unadjusted != NOT_EVALUATED:
            out.append(f"{c.key}: {c.unadjusted} at 95%, **{c.verdict}** after the Holm adjustment")
    supo = res.cell(res.roles.supo, res.s_train)
    if any(c.key == "C2" and c.verdict == NOT_HELD for c in res.claims) and not _context_ok(res):
        out.append(f"C2's working-context condition failed: {context_condition(supo)[1]}")
    if res.missing:
        out.append(f"{len(res.missing)} expected output(s) missing (listed under Missing)")
    return out


def env_findings(res: EnvResults, heading: bool) -> list[Block]:
    """The key findings of one environment."""
    out: list[Block] = [Heading(f"Environment `{res.env}`", 3)] if heading else []
    lead = leader(res)
    if lead:
        out.append(Para(lead))
    claims = claim_lines(res)
    if claims:
        out += [Para("**Claims** (verdict; the interval is the 95% CI of the paired difference):"), Bullets(tuple(claims))]
    head, lines = rl_lines(res)
    out += [Para(head)] + ([Bullets(tuple(lines))] if lines else [])
    head, lines = training_lines(res.training)
    if head:
        out += [Para(head), Bullets(tuple(lines))]
    flagged = flags(res)
    out += [Para("**Flagged:**"), Bullets(tuple(flagged))] if flagged else [Para("**Flagged:** nothing.")]
    return out


def key_findings(results: Sequence[EnvResults]) -> list[Block]:
    """The "Key findings" section that opens the report: :func:`env_findings` for every environment."""
    blocks: list[Block] = [Heading("Key findings", 2)]
    for r in results:
        blocks += env_findings(r, heading=len(results) > 1)
    return blocks


def headline(results: Sequence[EnvResults]) -> str:
    """The findings' two answers in a few lines of markdown, per environment (the report run's MLflow description):
    which arm is better, and did RL improve on the warm start."""
    parts = []
    for r in results:
        head, _ = rl_lines(r)
        parts += [p for p in (leader(r), head) if p]
    return "\n\n".join(parts)


__all__ = ["EDGE_STEPS", "claim_lines", "env_findings", "flags", "headline", "key_findings", "leader",
           "overlong_flags", "reading", "rl_lines", "training_lines"]
