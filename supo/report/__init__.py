"""The results report (docs/design.md §7): paper-style tables, figures, and the claims C0–C4 decided by confidence
intervals, read from the pipeline's outputs.

* :mod:`supo.report.collect` — reading evaluations and training runs (``supo.layout``'s parsers);
* :mod:`supo.report.stats` — seed statistics, the paired two-way bootstrap (and its ratio form) with each bound's
  Monte-Carlo error, verdicts (borderline included), Holm's step-down, MDE and variance components;
* :mod:`supo.report.analysis` — arm roles, cells (arm, S_eval), each arm's own setting, training curves;
* :mod:`supo.report.claims` — C0–C4 (the C0 family under Holm);
* :mod:`supo.report.mechanism` — summary state accuracy and the failure decomposition per arm;
* :mod:`supo.report.findings` — the "Key findings" that open the report (claims with their bounds, RL against the
  warm start per arm, training reward first against last steps, what the pipeline flagged);
* :mod:`supo.report.figures` — figures fitted to their data, one colour per arm role;
* :mod:`supo.report.blocks` — the report's blocks, rendered to markdown and HTML;
* :mod:`supo.report.tables` — the power, Holm and mechanism tables;
* :mod:`supo.report.document` — the report's content as blocks;
* :mod:`supo.report.publish` — writing the files and storing them in MLflow.
"""

from supo.report.analysis import DEFAULT_ROLES, ArmRoles, EnvResults, analyze, roles_from_config
from supo.report.claims import Claim, all_claims
from supo.report.collect import EvalRun, TrainRun, collect_evals, collect_training
from supo.report.publish import ReportFiles, log_report, summary_metrics, write_report

__all__ = ["ArmRoles", "Claim", "DEFAULT_ROLES", "EnvResults", "EvalRun", "ReportFiles", "TrainRun", "all_claims",
           "analyze", "collect_evals", "collect_training", "log_report", "roles_from_config", "summary_metrics",
           "write_report"]
