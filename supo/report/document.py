"""The report as a list of blocks (headings, paragraphs, bullets, tables, images), rendered to markdown and to one
self-contained HTML page from the same list."""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from supo.report.analysis import EnvResults, common
from supo.report.claims import C2_MARGIN, Claim
from supo.report.stats import BOOTSTRAP_SAMPLES, bootstrap_effect

DASH = "–"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph; ``**bold**`` and ``code`` in backticks are the only markup."""

    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    """A PNG under the report folder (``path`` relative to it)."""

    path: str
    alt: str


Block = Union[Heading, Para, Bullets, Table, Image]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub-flavoured markdown (figures as relative image links)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "|".join("---" for _ in b.headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.path})", ""]
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {b!r}")
    return "\n".join(out).rstrip("\n") + "\n"


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1a1a1a;line-height:1.45}
h1,h2,h3{line-height:1.2}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
""".strip()


def _inline_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped)
    return _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", escaped)


def render_html(blocks: Sequence[Block], base_dir: str | os.PathLike[str], title: str = "SUPO results") -> str:
    """The blocks as one self-contained HTML page: inline CSS, figures embedded as base64 PNG data URIs (read from
    ``base_dir``)."""
    base = Path(base_dir)
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.headers)
            rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode((base / b.path).read_bytes()).decode("ascii")
            alt = html.escape(b.alt)
            body.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{alt}</figcaption></figure>")
        else:  # pragma: no cover
            raise TypeError(f"unknown block {b!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# ---------------------------------------------------------------------------------------------------------------------
# content


def _fmt(value: float | None, decimals: int = 3) -> str:
    return DASH if value is None else f"{value:.{decimals}f}"


def _ci(res: EnvResults, arm: str, s: int | None) -> str:
    """The success rate of a cell with its 95% bootstrap interval over seeds × tasks."""
    c = res.cell(arm, s)
    if c is None:
        return DASH
    seeds, tasks = common(c)
    if not seeds or not tasks:
        st = c.stat("success_rate")
        return st.fmt() if st else DASH
    e = bootstrap_effect(c.matrix(seeds, tasks))
    return f"{e.effect:.3f} [{e.low:.3f}, {e.high:.3f}]"


def table1(res: EnvResults, claims: Sequence[Claim]) -> Table:
    """Each arm at its own setting: success with its CI, the C0 effect against the warm start there, context use."""
    c0 = {c.key[3:]: c for c in claims if c.key.startswith("C0 ")}
    rows = []
    for arm in res.arms:
        s, w = res.own.get(arm, (None, None))
        c = res.cell(arm, s)
        if c is None:
            continue
        st = {k: c.stat(k) for k in ("mean_working_context_tokens", "mean_tool_calls", "mean_summaries",
                                     "overlong_rate", "error_loop_rate")}
        claim = c0.get(arm)
        vs_warm = DASH if claim is None or "effect" not in claim.numbers else (
            f"{claim.numbers['effect']:+.3f} [{claim.numbers['ci_low']:+.3f}, {claim.numbers['ci_high']:+.3f}] "
            f"({claim.verdict})")
        rows.append((arm, res.roles.role_of(arm), str(s), DASH if w is None else str(w),
                     DASH if w is None else str(w * (s + 1)), _ci(res, arm, s), str(len(c.seeds)), vs_warm,
                     *(DASH if v is None else v.fmt(2 if k != "mean_working_context_tokens" else 0)
                       for k, v in st.items())))
    return Table(("arm", "role", "S_eval", "W", "W×(S+1)", "success [95% CI]", "seeds", "RL − warm start [95% CI]",
                  "working context", "tool calls", "summaries", "overlong", "error loops"), tuple(rows))


def table3(res: EnvResults) -> Table:
    rows = []
    for arm in res.arms:
        cells = [_ci(res, arm, s) for s in res.grid]
        cells = [f"**{t}**" if res.own.get(arm, (None,))[0] == s and t != DASH else t for t, s in zip(cells, res.grid)]
        if any(t != DASH for t in cells):
            rows.append((arm, *cells))
    return Table(("arm", *[f"S_eval={s}" for s in res.grid]), tuple(rows))


def training_table(res: EnvResults, edge: int = 3) -> Table:
    """Per arm (mean over seeds): reward over the first and last ``edge`` steps, final clip fraction and KL, overlong
    and error-loop rates at the end."""
    rows = []
    for arm in dict.fromkeys(t.arm for t in res.training):
        runs = [t for t in res.training if t.arm == arm]

        def edge_mean(key: str, last: bool) -> float | None:
            vals = [np.mean([float(r[key]) for r in (t.history[-edge:] if last else t.history[:edge])
                             if r.get(key) is not None and np.isfinite(r[key])] or [np.nan]) for t in runs]
            vals = [v for v in vals if np.isfinite(v)]
            return float(np.mean(vals)) if vals else None

        rows.append((arm, str(len(runs)), str(max(len(t.history) for t in runs)),
                     _fmt(edge_mean("mean_reward", False)), _fmt(edge_mean("mean_reward", True)),
                     _fmt(edge_mean("clip_frac", True), 4), _fmt(edge_mean("kl_to_init", True), 4),
                     _fmt(edge_mean("overlong_rate", False)), _fmt(edge_mean("overlong_rate", True)),
                     _fmt(edge_mean("error_loop_rate", True))))
    return Table(("arm", "seeds", "steps", f"reward, first {edge}", f"reward, last {edge}", "clip frac (end)",
                  "KL to warm start (end)", "overlong (start)", "overlong (end)", "error loops (end)"), tuple(rows))


def claim_blocks(claim: Claim) -> list[Block]:
    return [Para(f"**{claim.key}: {claim.statement}: {claim.verdict}.**"),
            Bullets((f"Rule: {claim.rule}.", *claim.evidence))]


def build_blocks(results: Sequence[EnvResults], figures: Mapping[str, Mapping[str, str]], *, evals_dir: str,
                 checkpoints_dir: str, title: str = "SUPO results") -> list[Block]:
    """The whole report. ``figures[env]`` maps "success" / "training" / "overlong" to a PNG path relative to the
    report folder."""
    n_eval = sum(len(c.runs) for r in results for c in r.cells.values())
    n_train = sum(len(r.training) for r in results)
    splits = sorted({s for r in results for s in r.splits})
    blocks: list[Block] = [
        Heading(title, 1),
        Para(f"Generated by `supo-cli report` from {n_eval} evaluations (`{evals_dir}/<env>/seed<k>/<arm>/s<N>/`) and "
             f"{n_train} training runs (`{checkpoints_dir}/<env>/seed<k>/<arm>/`). Every number below is read from "
             f"those files. Evaluations are on the **{', '.join(splits) or '?'}** split (never used for tuning: "
             "every setting was chosen on the validation split); training curves are on the train split."),
        Para("Success rates: mean over seeds × test tasks with a 95% confidence interval from a two-way bootstrap "
             f"({BOOTSTRAP_SAMPLES} resamples of seeds and tasks, with replacement). A claim compares two cells on the "
             "seeds and tasks they share (paired) and is decided by the interval of the difference: **held** when it "
             "lies above 0, **not held** when it lies at or below 0, **inconclusive** when it straddles 0 (C2: above "
             f"−{C2_MARGIN}, non-inferiority). Warm start = the SFT model, evaluated at each arm's own setting with "
             "the same sampling seeds."),
        Heading("Summary", 2),
        Table(("env", "claim", "statement", "verdict", "effect [95% CI]"),
              tuple((r.env, c.key, c.statement, f"**{c.verdict}**",
                     (f"{c.numbers['effect']:+.3f} [{c.numbers['ci_low']:+.3f}, {c.numbers['ci_high']:+.3f}]"
                      if "effect" in c.numbers else DASH)) for r in results for c in r.claims)),
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
                blocks.append(Image(figs["success"], f"{r.env}: success rate against S_eval"))
        if r.training:
            blocks += [Heading("Training", 3), training_table(r)]
            if "training" in figs:
                blocks.append(Image(figs["training"], f"{r.env}: reward, success, clip fraction and KL to the warm "
                                                      "start per step"))
            if "overlong" in figs:
                blocks.append(Image(figs["overlong"], f"{r.env}: overlong dynamics — never-finish, error-loop and "
                                                      "budget-cut rates and summaries per rollout per step"))
        blocks.append(Heading("Claims", 3))
        for claim in r.claims:
            blocks += claim_blocks(claim)
    return blocks
