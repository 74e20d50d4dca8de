"""Writing the report (markdown, self-contained HTML, figures, ``summary.json`` for ``dvc metrics``, CSVs for
``dvc plots``) and storing it in MLflow."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supo.report.analysis import DEFAULT_ROLES, ArmRoles, EnvResults, analyze, training_curves
from supo.report.blocks import render_html, render_markdown
from supo.report.claims import all_claims
from supo.report.collect import TRAIN_CURVE_KEYS, TrainRun, collect_evals, collect_training
from supo.report.document import build_blocks
from supo.report.findings import headline
from supo.report.figures import FILE_NAMES, build_figures, write_figures
from supo.report.mechanism import failure_decomposition, summary_accuracy

log = logging.getLogger(__name__)


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote, and what it found."""

    out_dir: Path
    markdown: Path
    html: Path
    summary_json: Path
    plots: list[Path]
    figures: dict[str, list[Path]]
    summary: dict[str, float | int]
    results: list[EnvResults]

    @property
    def training(self) -> list[TrainRun]:
        return [t for r in self.results for t in r.training]

    @property
    def claims(self) -> dict[str, list]:
        return {r.env: r.claims for r in self.results}


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def summary_metrics(results: Sequence[EnvResults]) -> dict[str, float | int]:
    """The flat numbers of the report: per (env, arm, S_eval) the seed mean and std of the success rate; per claim
    ``held`` / ``inconclusive`` / ``borderline`` (0/1) and its numbers (effect, interval, SE, MDE, the bounds'
    Monte-Carlo SEs, variance components, seeds for the target MDE, Holm's p-value, rank, level and interval); per arm
    at its own setting the summary state accuracy [interval] and its difference from the warm start, and the success
    and failure-class shares (each only where measured)."""
    out: dict[str, float | int] = {"eval_runs": sum(len(c.runs) for r in results for c in r.cells.values()),
                                   "train_runs": sum(len(r.training) for r in results)}
    for r in results:
        for (arm, s), c in sorted(r.cells.items()):
            st = c.stat("success_rate")
            if st is not None:
                out.update({f"{r.env}.{arm}.s{s}.success_mean": st.mean, f"{r.env}.{arm}.s{s}.success_std": st.std,
                            f"{r.env}.{arm}.s{s}.n_seeds": st.n})
        for claim in r.claims:
            key = claim.key.replace(" ", "_")
            out[f"{r.env}.{key}_held"] = int(claim.verdict == "held")
            out[f"{r.env}.{key}_inconclusive"] = int(claim.verdict == "inconclusive")
            out[f"{r.env}.{key}_borderline"] = int(claim.verdict == "borderline")
            if claim.unadjusted:
                out[f"{r.env}.{key}_unadjusted_held"] = int(claim.unadjusted == "held")
            for name, value in claim.numbers.items():
                if math.isfinite(value):
                    out[f"{r.env}.{key}_{name}"] = value
        for acc in r.accuracy:
            for name, e in (("summary_accuracy", acc.accuracy), ("summary_accuracy_vs_warm_start", acc.vs_warm_start)):
                if e is not None:
                    out.update({f"{r.env}.{acc.arm}.{name}": e.effect, f"{r.env}.{acc.arm}.{name}_ci_low": e.low,
                                f"{r.env}.{acc.arm}.{name}_ci_high": e.high})
        for row in r.failures:
            shares = {"success": row.success, **{f"failure_{k}": v for k, v in row.shares.items()}}
            out.update({f"{r.env}.{row.arm}.own.{k}": v for k, v in shares.items() if v is not None})
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


def write_report(evals_dir: str | os.PathLike[str], checkpoints_dir: str | os.PathLike[str],
                 out_dir: str | os.PathLike[str], *, roles: ArmRoles = DEFAULT_ROLES, envs: Sequence[str] = (),
                 arms: Sequence[str] = (), seeds: Sequence[int] = (), title: str = "SUPO results") -> ReportFiles:
    """Read every evaluation and training run, decide the claims, write the report into ``out_dir``. Raises
    FileNotFoundError when there is no evaluation and ValueError naming a malformed file."""
    results = analyze(collect_evals(evals_dir), collect_training(checkpoints_dir), roles, envs=envs, arms=arms,
                      seeds=seeds)
    for r in results:
        r.claims = all_claims(r)
        r.accuracy, r.failures = summary_accuracy(r), failure_decomposition(r)
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for stale in fig_dir.glob("*.png"):  # figures of environments no longer present must not linger
        stale.unlink()
    figures = {r.env: write_figures(r, fig_dir) for r in results}
    rel = {env: {k: f"figures/{p.name}" for k, p in figs.items()} for env, figs in figures.items()}
    blocks = build_blocks(results, rel, evals_dir=str(evals_dir), checkpoints_dir=str(checkpoints_dir), title=title)
    markdown, page, summary_json = out / "report.md", out / "report.html", out / "summary.json"
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page.write_text(render_html(blocks, out, title), encoding="utf-8")
    summary = summary_metrics(results)
    summary_json.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    success_rows = [(r.env, arm, s, round(st.mean, 6), round(st.std, 6), st.n)
                    for r in results for (arm, s), c in sorted(r.cells.items())
                    if (st := c.stat("success_rate")) is not None]
    curve_rows = [(r.env, arm, row["step"], *(round(row[k], 6) if k in row else "" for k in TRAIN_CURVE_KEYS))
                  for r in results for arm, rows in training_curves(r.training, TRAIN_CURVE_KEYS).items()
                  for row in rows]
    plots = [
        _write_csv(out / "plots" / "success_vs_s_eval.csv",
                   ("env", "arm", "s_eval", "success_rate", "success_std", "n_seeds"), success_rows),
        _write_csv(out / "plots" / "training_curves.csv",
                   ("env", "arm", "step", *TRAIN_CURVE_KEYS), curve_rows),
    ]
    return ReportFiles(out, markdown, page, summary_json, plots, {e: list(f.values()) for e, f in figures.items()},
                       summary, results)


def log_report(files: ReportFiles, tracking_uri: str, experiment: str, *, profile: str = "",
               params: Mapping[str, Any] | None = None) -> tuple[str, list[str]]:
    """Store the report in MLflow; return (the report run's id, the training run ids its figures went to).

    The run ``report`` (tags ``stage=report``, ``profile``, ``envs``) holds report.md, report.html, summary.json and
    plots/ as artifacts, the comparison figures as MLflow figures (previewed in the UI), and the summary numbers as
    metrics. Each environment's figures are also attached (under ``report/``) to its training runs in this store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from supo.tracking import Tracker, log_figures
    from supo.tracking_links import link_report

    tags = {"stage": "report", "profile": profile, "envs": ",".join(r.env for r in files.results)}
    with Tracker(tracking_uri, experiment, "report", params=params or {}, tags=tags) as tracker:
        for path in (files.markdown, files.html, files.summary_json):
            tracker.log_artifact(path)
        tracker.log_artifact(files.out_dir / "plots", "plots")
        # "/" groups the report's numbers into sections in the UI (env / arm or claim / number)
        tracker.log_metrics({k.replace(".", "/"): v for k, v in files.summary.items()}, step=0)
        report_run_id = tracker.run_id
    figures = {f"{r.env}-{FILE_NAMES[kind]}": fig for r in files.results for kind, fig in build_figures(r).items()}
    log_figures(tracking_uri, report_run_id, figures)
    client = MlflowClient(tracking_uri=tracking_uri)
    attached: list[str] = []
    for run in files.training:
        run_id, figs = run.run_id(), files.figures.get(run.env, [])
        if run_id is None or not figs:
            continue
        try:
            client.get_run(run_id)
        except MlflowException:
            log.info("training run %s (%s) is not in %s; figures not attached", run_id, run.checkpoint, tracking_uri)
            continue
        for fig in figs:
            client.log_artifact(run_id, str(fig), "report")
        attached.append(run_id)
    link_report(tracking_uri, report_run_id, attached, headline=headline(files.results),
                html=files.html.name)  # both ways: the report names its headline, the training runs their report
    return report_run_id, attached
