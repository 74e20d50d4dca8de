"""The wall time of every stage of the last `dvc repro`, side by side, with each stage's share of the total.

Every `supo-cli` stage adds ``wall_seconds`` (from the command's start to its end, heavy imports and engine start-up
included) to the metrics file it writes (``supo.layout.metrics_file``: ``metrics/<env>/prepare.json``, ``sft.json``,
``train.json``, ``eval.json``) and to ``reports/summary.json``. This script reads them back, names each file's DVC
stage (``train@array`` …) and prints a table: stage, seconds, share of the total, and the ratio against the mean of
its kind; under each train stage, each (seed, arm) run (its steps and checkpoint, without the shared actor start-up).
Usage, after `dvc repro`:

    python bench/stage_times.py [--metrics metrics] [--report reports/summary.json] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

def collect(metrics_dir: Path, report_summary: Path | None) -> list[dict]:
    """One row per stage that recorded ``wall_seconds``: {stage, kind, env, seconds}; under each train stage, every
    (seed, arm) run inside it."""
    from supo.layout import METRIC_STAGES, metrics_file

    rows = []
    for env_dir in sorted(p for p in metrics_dir.iterdir() if p.is_dir()) if metrics_dir.is_dir() else []:
        env = env_dir.name
        for kind in METRIC_STAGES:
            path = metrics_file(env_dir, kind)
            if not path.exists():
                continue
            data = json.loads(path.read_text())
            if "wall_seconds" not in data:
                continue
            stage = f"{kind}@{env}"
            rows.append({"stage": stage, "kind": kind, "env": env, "seconds": float(data["wall_seconds"])})
            if kind == "train":  # the runs trained in turn inside the stage (the actors' start-up not included)
                for seed, arms in sorted((k, v) for k, v in data.items() if isinstance(v, dict)):
                    for arm, summary in arms.items():
                        if isinstance(summary, dict) and "run_seconds" in summary:
                            rows.append({"stage": f"  {stage} · {seed} · {arm}", "kind": "train run", "env": env,
                                         "seconds": float(summary["run_seconds"]), "part": True})
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
