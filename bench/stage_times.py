"""The wall time of every stage of the last `dvc repro`, side by side, with each stage's share of the total.

Every `supo-cli` stage adds ``wall_seconds`` (from the command's start to its end, heavy imports and engine start-up
included) to the metrics file it writes: ``metrics/<env>/prepare.json``, ``sft.json``, ``train-seed<k>.json``,
``eval-seed<k>.json``, ``eval-sft.json`` and ``reports/summary.json``. This script reads them back, names each file's DVC stage
(``train@array-0`` …) and prints a table: stage, seconds, share of the total, and the ratio against the mean of its
kind; under each train stage, each arm's own run (its steps and checkpoint, without the shared actor start-up).
Usage, after `dvc repro`:

    python bench/stage_times.py [--metrics metrics] [--report reports/summary.json] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

PATTERNS = [  # file name -> (stage kind, DVC stage name)
    (re.compile(r"prepare\.json"), "prepare", "prepare@{env}"),
    (re.compile(r"sft\.json"), "sft", "sft@{env}"),
    (re.compile(r"train-seed(?P<seed>\d+)\.json"), "train", "train@{env}-{seed}"),
    (re.compile(r"eval-sft\.json"), "eval_warm_start", "eval_warm_start@{env}"),
    (re.compile(r"eval-seed(?P<seed>\d+)\.json"), "eval", "eval@{env}-{seed}"),
]


def collect(metrics_dir: Path, report_summary: Path | None) -> list[dict]:
    """One row per stage that recorded ``wall_seconds``: {stage, kind, env, seconds}."""
    rows = []
    for path in sorted(metrics_dir.glob("*/*.json")):
        env = path.parent.name
        for pattern, kind, template in PATTERNS:
            m = pattern.fullmatch(path.name)
            if m:
                data = json.loads(path.read_text())
                if "wall_seconds" in data:
                    stage = template.format(env=env, **m.groupdict())
                    rows.append({"stage": stage, "kind": kind, "env": env, "seconds": float(data["wall_seconds"])})
                    if kind == "train":  # the arms trained in turn inside the stage (start-up not included)
                        for arm, summary in data.items():
                            if isinstance(summary, dict) and "run_seconds" in summary:
                                rows.append({"stage": f"  {stage} · {arm}", "kind": "train run", "env": env,
                                             "seconds": float(summary["run_seconds"]), "part": True})
                break
    if report_summary is not None and report_summary.exists():
        data = json.loads(report_summary.read_text())
        if "wall_seconds" in data:
            rows.append({"stage": "report", "kind": "report", "env": "-", "seconds": float(data["wall_seconds"])})
    return rows


def render(rows: list[dict], markdown: bool = False) -> str:
    if not rows:
        return "no stage recorded wall_seconds: run `dvc repro` first"
    total = sum(r["seconds"] for r in rows if not r.get("part"))
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_kind[r["kind"]].append(r["seconds"])
    lines = [("stage", "seconds", "share of total", "× mean of its kind")]
    for r in rows:
        mean = statistics.fmean(by_kind[r["kind"]])
        lines.append((r["stage"], f"{r['seconds']:.1f}", f"{r['seconds'] / total:.1%}", f"{r['seconds'] / mean:.2f}"))
    lines.append(("", "", "", ""))
    for kind, secs in by_kind.items():
        lines.append((f"all {kind} ({len(secs)})", f"{sum(secs):.1f}", f"{sum(secs) / total:.1%}", ""))
    lines.append(("total (stages, sequential)", f"{total:.1f}", "100.0%", f"{total / 60:.1f} min"))
    if markdown:
        head, *body = lines
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(row) + " |" for row in body if any(row)]
        return "\n".join(out)
    widths = [max(len(row[i]) for row in lines) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics", default="metrics", help="the pipeline's metrics folder (paths.metrics)")
    ap.add_argument("--report", default="reports/summary.json", help="the report stage's summary.json")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()
    print(render(collect(Path(args.metrics), Path(args.report)), markdown=args.markdown))


if __name__ == "__main__":
    main()
