"""The report's content: the blocks (:mod:`supo.report.blocks`) that say, per environment, what the evaluations and
training runs show — Table 1 / Table 3 analogues, the claims with their power, the C0 family under Holm, the
mechanism tables (:mod:`supo.report.tables`) — rendered to markdown and HTML by :mod:`supo.report.blocks`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from supo.report.analysis import EnvResults, edge_mean, success_interval
from supo.report.blocks import DASH, Block, Bullets, Heading, Image, Para, Table
from supo.report.claims import C2_MARGIN, TARGET_MDE, Claim
from supo.report.findings import EDGE_STEPS, key_findings
from supo.report.stats import BOOTSTRAP_SAMPLES, BORDERLINE_MC_SES
from supo.report.tables import accuracy_table, claim_interval, failure_table, holm_table, power_table

# ---------------------------------------------------------------------------------------------------------------------
# content


def _fmt(value: float | None, decimals: int = 3) -> str:
    return DASH if value is None else f"{value:.{decimals}f}"


def _ci(res: EnvResults, arm: str, s: int | None) -> str:
    """The success rate of a cell with its 95% bootstrap interval over seeds × tasks."""
    c = res.cell(arm, s)
    if c is None:
        return DASH
    e = success_interval(c)
    if e is None:
        st = c.stat("success_rate")
        return st.fmt() if st else DASH
    return f"{e.effect:.3f} [{e.low:.3f}, {e.high:.3f}]"


def table1(res: EnvResults, claims: Sequence[Claim]) -> Table:
    """Each arm at its own setting: success with its CI, the C0 effect against the warm start there, context use."""
    c0 = {c.key[3:]: c for c in claims if c.key.startswith("C0 ")}
    rows = []
    for arm, s, w, c, _ in res.own_cells():
        st = {k: c.stat(k) for k in ("mean_working_context_tokens", "mean_tool_calls", "mean_summaries",
                                     "overlong_rate", "error_loop_rate")}
        claim = c0.get(arm)
        vs_warm = DASH if claim is None or "effect" not in claim.numbers else (
            f"{claim_interval(claim)}: **{claim.verdict}**")
        rows.append((arm, res.roles.role_of(arm), str(s), DASH if w is None else str(w),
                     DASH if w is None else str(w * (s + 1)), _ci(res, arm, s), str(len(c.seeds)), vs_warm,
                     *(DASH if v is None else v.fmt(2 if k != "mean_working_context_tokens" else 0)
                       for k, v in st.items())))
    return Table(("arm", "role", "S_eval", "W", "W×(S+1)", "success [95% CI]", "seeds", "RL − warm start [95% CI]",
                  "working context", "tool calls", "summaries", "overlong", "error loops"), tuple(rows))


def table3(res: EnvResults) -> Table:
    """Success [95% CI] of each arm at each S_eval of the grid, each row labelled with the working context W its
    evaluations ran at (GRPO-Weff's is W × (S+1)); bold: the arm's own setting."""
    rows = []
    for arm in res.arms:
        cells = [_ci(res, arm, s) for s in res.grid]
        cells = [f"**{t}**" if res.own.get(arm, (None,))[0] == s and t != DASH else t for t, s in zip(cells, res.grid)]
        ws = sorted({c.working_context for s in res.grid if (c := res.cell(arm, s)) is not None
                     and c.working_context is not None})
        if any(t != DASH for t in cells):
            rows.append((arm, ", ".join(map(str, ws)) or DASH, *cells))
    return Table(("arm", "W", *[f"S_eval={s}" for s in res.grid]), tuple(rows))


def training_table(res: EnvResults, edge: int = EDGE_STEPS) -> Table:
    """Per arm (mean over seeds): reward over the first and last ``edge`` steps, final clip fraction and KL, overlong
    and error-loop rates at the end."""
    rows = []
    for arm in dict.fromkeys(t.arm for t in res.training):
        runs = [t for t in res.training if t.arm == arm]
        at = lambda key, last, runs=runs: edge_mean(runs, key, edge, last)  # noqa: E731
        rows.append((arm, str(len(runs)), str(max(len(t.history) for t in runs)),
                     _fmt(at("mean_reward", False)), _fmt(at("mean_reward", True)),
                     _fmt(at("clip_frac", True), 4), _fmt(at("kl_to_init", True), 4),
                     _fmt(at("overlong_rate", False)), _fmt(at("overlong_rate", True)),
                     _fmt(at("error_loop_rate", True))))
    return Table(("arm", "seeds", "steps", f"reward, first {edge}", f"reward, last {edge}", "clip frac (end)",
                  "KL to warm start (end)", "overlong (start)", "overlong (end)", "error loops (end)"), tuple(rows))


def _per_comparison(claim: Claim, name: str) -> str:
    """A claim's number ``name`` (e.g. "mde"), or — for a claim of several comparisons (C4) — each one's, labelled."""
    if name in claim.numbers:
        return f"{claim.numbers[name]:.3f}"
    prefixes = [k[:-len("_effect")] for k in claim.numbers if k.endswith("_effect")]
    return "; ".join(f"{p} {claim.numbers[f'{p}_{name}']:.3f}" for p in prefixes if f"{p}_{name}" in claim.numbers
                     ) or DASH


def summary_table(results: Sequence[EnvResults]) -> Table:
    """Every claim of every environment: verdict, effect [95% CI], its bootstrap SE and minimum detectable effect."""
    return Table(("env", "claim", "statement", "verdict", "effect [95% CI]", "SE", "MDE (80% power)"),
                 tuple((r.env, c.key, c.statement, f"**{c.verdict}**", claim_interval(c), _per_comparison(c, "se"),
                        _per_comparison(c, "mde")) for r in results for c in r.claims))


def claim_blocks(claim: Claim) -> list[Block]:
    return [Para(f"**{claim.key}: {claim.statement}: {claim.verdict}.**"),
            Bullets((f"Rule: {claim.rule}.", *claim.evidence))]


def _power_blocks(res: EnvResults) -> list[Block]:
    """The C0 family under Holm and the variance components of every claim's comparison."""
    out: list[Block] = []
    if any(c.key.startswith("C0 ") for c in res.claims):
        out += [Heading("C0 family: Holm–Bonferroni", 3),
                Para("Each arm − warm start with its unadjusted 95% interval; the one-sided bootstrap p-value (share "
                     "of resampled differences ≤ 0) of rank k among m is read at one-sided 0.025/(m−k+1) — its "
                     "interval widened to that level — and is held only if every smaller p-value was held, so the "
                     "chance of any false 'held' in the family is ≤ 2.5%. The Holm verdict is the claim's verdict."),
                holm_table(res.claims)]
    if any(c.components for c in res.claims):
        out += [Heading("Power: variance components", 3),
                Para("Each comparison's paired difference d[seed, task] split by a two-way ANOVA into seed-to-seed, "
                     "task and residual variance; SE(S seeds, T tasks) = √(σ²_seed/S + σ²_task/T + σ²_res/(S·T)), "
                     f"MDE = 2.80 × SE, and the seeds that would bring the MDE to {TARGET_MDE:g} at this task count "
                     "(the seed term does not shrink with more tasks)."),
                power_table(res.claims)]
    return out


def _mechanism_blocks(res: EnvResults) -> list[Block]:
    """Summary state accuracy and the failure decomposition, per arm at its own setting (when computed)."""
    out: list[Block] = []
    if res.accuracy:
        out += [Heading("Summary state accuracy", 3),
                Para("Share of the summaries the env's oracle judged that carried the state needed to continue, "
                     "pooled over seeds × tasks (correct / judged), with a 95% interval from the two-way ratio "
                     "bootstrap; arm − warm start pairs the same seeds and tasks."), accuracy_table(res.accuracy)]
    elif res.cells:
        out.append(Para("Summary state accuracy: – (no summary was judged: the env has no oracle, or the "
                        "evaluations predate it)."))
    if res.failures:
        out += [Heading("Failure decomposition", 3),
                Para("Per rollout, the first that applies: a wrong summary (judged by the env's oracle), an action "
                     "error (an `Error:` observation), a wrong answer, or a budget cut; shares of all rollouts (with "
                     "success they sum to 1), mean over seeds × tasks; Δ: arm − warm start at the arm's setting "
                     "[95% CI]. –: not recorded by these evaluations."), failure_table(res.failures)]
    return out


def build_blocks(results: Sequence[EnvResults], figures: Mapping[str, Mapping[str, str]], *, evals_dir: str,
                 checkpoints_dir: str, title: str = "SUPO results") -> list[Block]:
    """The whole report. ``figures[env]`` maps "success" / "training" / "overlong" to a PNG path relative to the
    report folder."""
    n_eval = sum(len(c.runs) for r in results for c in r.cells.values())
    n_train = sum(len(r.training) for r in results)
    splits = sorted({s for r in results for s in r.splits})
    runs = [run for r in results for c in r.cells.values() for run in c.runs]
    temps = sorted({run.metrics["sampling_temperature"] for run in runs if "sampling_temperature" in run.metrics})
    crn = bool(runs) and all(run.metrics.get("seeded_sampling") == 1.0 for run in runs)
    pairing = ("paired by seed and task, under common random numbers: every generation is sampled with its own seed "
               "derived from (seed, task, sample, turn), so at the same seed every arm, the warm start and every "
               "S_eval meet the same noise at the same point of a rollout, whatever the batch or the order"
               if crn else "paired by seed and task; these evaluations were not all sampled with per-request seeds, "
               "so the sampling noise itself is not shared")
    blocks: list[Block] = [
        Heading(title, 1),
        *key_findings(results),
        Heading("How to read this report", 2),
        Para(f"Generated by `supo-cli report` from {n_eval} evaluations (`{evals_dir}/<env>/seed<k>/<arm>/s<N>/`) and "
             f"{n_train} training runs (`{checkpoints_dir}/<env>/seed<k>/<arm>/`). Every number below is read from "
             f"those files. Evaluations are on the **{', '.join(splits) or '?'}** split (never used for tuning: "
             "every setting was chosen on the validation split); training curves are on the train split."),
        Para("Success rates: mean over seeds × test tasks with a 95% confidence interval from a two-way bootstrap "
             f"({BOOTSTRAP_SAMPLES} resamples of seeds and tasks, with replacement). A claim compares two cells on the "
             f"seeds and tasks they share ({pairing}) and is decided by the "
             "interval of the difference: **held** when it lies above 0, **not held** when it lies at or below 0, "
             f"**inconclusive** when it straddles 0 (C2: above −{C2_MARGIN}, non-inferiority), **borderline** when a "
             f"bound lies within {BORDERLINE_MC_SES:g} of its Monte-Carlo standard errors of the threshold (another "
             "bootstrap RNG seed could move it across). Each claim states its SE (the bootstrap SD) and its minimum "
             "detectable effect at 80% power, MDE = (z₀.₉₇₅ + z₀.₈) × SE ≈ 2.80 × SE: a smaller true effect is likely "
             "missed. The C0 comparisons (one per trained arm) form one family adjusted by Holm–Bonferroni. Warm "
             "start = the SFT model, evaluated at each arm's own setting. Sampling temperature (rollouts and "
             f"evaluation): {', '.join(f'{t:g}' for t in temps) or 'not recorded'}."),
        Heading("Summary", 2),
        summary_table(results),
    ]
    missing = [m for r in results for m in r.missing]
    blocks.append(Para("Missing: " + ("nothing." if not missing else f"{len(missing)} item(s):")))
    if missing:
        blocks.append(Bullets(tuple(missing)))
    for r in results:
        figs = figures.get(r.env, {})
        blocks += [Heading(f"Environment `{r.env}`", 2),
                   Para(f"SUPO's S_train = {r.s_train}; S_eval grid {', '.join(map(str, r.grid)) or DASH}; roles: "
                        f"GRPO-W `{r.roles.grpo_w}`, GRPO-Weff `{r.roles.grpo_weff}`, SUPO `{r.roles.supo}`, ablations "
                        + (", ".join(f"`{a}`" for a in r.roles.ablations) or "none") + ".")]
        if r.cells:
            blocks += [Heading("Table 1 analogue: each arm at its own setting", 3),
                       Para("S_eval = the arm's training S (0 for GRPO), at its training W. Working context: mean "
                            "per-segment peak; tool calls, summaries, overlong and error-loop rates: per rollout; all "
                            "mean ± std over seeds."),
                       table1(r, r.claims),
                       Heading("Table 3 analogue: success rate against S_eval", 3),
                       Para("Mean [95% CI]; bold: the arm's own setting."), table3(r)]
            if "success" in figs:
                blocks.append(Image(figs["success"], f"{r.env}: success rate against S_eval (mean over "
                                                    "seeds × tasks; bars: the 95% bootstrap intervals of Table 3; "
                                                    "ring: the arm's own setting)"))
        blocks += _power_blocks(r) + _mechanism_blocks(r)
        if r.training:
            blocks += [Heading("Training", 3), training_table(r)]
            if "training" in figs:
                blocks.append(Image(figs["training"], f"{r.env}: training reward and KL to the warm start per "
                                                      "step (mean over seeds; band: min–max)"))
            if "overlong" in figs:
                blocks.append(Image(figs["overlong"], f"{r.env}: overlong dynamics — never-finish, error-loop and "
                                                      "budget-cut rates and summaries per rollout per step (mean "
                                                      "over seeds; band: min–max)"))
        blocks.append(Heading("Claims", 3))
        for claim in r.claims:
            blocks += claim_blocks(claim)
    return blocks


__all__ = ["build_blocks", "claim_blocks", "summary_table", "table1", "table3", "training_table"]
