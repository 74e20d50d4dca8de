"""Links between MLflow runs, both ways, and the tags the UI's views filter on.

* an eval run carries ``checkpoint_run_id`` (its training run, or the ``sft`` run for the warm start) and a link in
  its description; :func:`link_eval` also lists the eval on its training run (tag ``eval_run_ids``, a description
  section);
* :func:`own_setting` says whether an evaluation is at its arm's own setting (the tag ``own_setting`` the eval view
  of :mod:`supo.tracking_views` filters on);
* :func:`link_report` (called by the report) links the report run to report.html and the training runs to it;
* :func:`relocate_artifacts` repairs the absolute artifact paths MLflow stores when a project folder was moved.

MLflow is imported by the functions that talk to it: :func:`own_setting` also serves the JSON tracking of a machine
without MLflow (``supo.tracking_json``).
"""

from __future__ import annotations

import logging
import sqlite3
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any


log = logging.getLogger(__name__)

EVAL_RUNS_TAG = "eval_run_ids"
"""Tag of a training run: its eval runs' ids, comma-separated (the newest last)."""
REPORT_RUN_TAG = "report_run_id"
"""Tag of a training run: the report run that covers it."""
OWN_SETTING_TAG = "own_setting"
"""Tag of an eval run: ``'true'`` when it is at its arm's own (W, S_eval) — for the warm start: at some arm's."""
_EVALS_HEADING = "**Evaluations:**"
_REPORT_HEADING = "**Report:**"


def run_path(experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """The UI's relative route to a run (``#/experiments/<e>/runs/<r>``), or to an artifact's preview in it."""
    path = f"#/experiments/{experiment_id}/runs/{run_id}"
    return f"{path}/artifacts/{urllib.parse.quote(artifact)}" if artifact else path


# --------------------------------------------------------------------------------------------
# Own setting
# --------------------------------------------------------------------------------------------


def _arm_setting(cfg: Any, overrides: dict) -> tuple[bool, int]:
    """(whether an arm with these ``arms.<name>`` overrides trains at the config's W, its training S)."""
    same_w = not overrides.get("budget.use_effective_context", cfg.budget.use_effective_context) and \
        overrides.get("budget.working_context", cfg.budget.working_context) == cfg.budget.working_context
    algo = overrides.get("train.algo", cfg.train.algo)
    return same_w, 0 if algo == "grpo" else int(overrides.get("budget.max_summaries", cfg.budget.max_summaries))


def own_setting(cfg: Any, label: str, s_eval: int) -> bool:
    """True when an evaluation labelled ``label`` at ``s_eval`` under ``cfg`` (the config the eval ran with) is at its
    own setting: a trained arm's (or ``sft-<arm>``'s) at its training S and W; the warm start ``sft`` at the S of any
    pipeline arm that trains at its W (e.g. GRPO-W's 0 and SUPO's S). An eval at another W is never at its own."""
    from supo.layout import WARM_START

    if cfg.eval.working_context not in (0, cfg.budget.working_context):
        return False
    if label != WARM_START:
        return s_eval == cfg.train_max_summaries
    settings = [_arm_setting(cfg, dict(cfg.arms.get(arm) or {})) for arm in cfg.pipeline.arms]
    return any(same_w and s == s_eval for same_w, s in settings) or s_eval == cfg.train_max_summaries


def _value(text: str) -> Any:
    """A param value back as a bool, int or str (MLflow keeps params as strings)."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        return text


def config_from_params(params: dict[str, str]) -> Any:
    """The fields :func:`own_setting` reads, rebuilt from a run's params (``cfg.flat()`` as :class:`Tracker` logs
    it), for runs tracked before the ``own_setting`` tag existed."""
    import ast
    from types import SimpleNamespace as NS

    get = lambda key, default: _value(params.get(key, str(default)))
    arms: dict[str, dict] = {}
    for key, text in params.items():
        if key.startswith("arms."):
            arm, _, field = key[len("arms."):].partition(".")
            arms.setdefault(arm, {})[field] = _value(text)
    try:
        pipeline_arms = list(ast.literal_eval(params.get("pipeline.arms", "[]")))
    except (ValueError, SyntaxError):
        pipeline_arms = []
    algo, summaries = get("train.algo", "supo"), get("budget.max_summaries", 0)
    return NS(eval=NS(working_context=get("eval.working_context", 0)), arms=arms, pipeline=NS(arms=pipeline_arms),
              budget=NS(working_context=get("budget.working_context", 0), max_summaries=summaries,
                        use_effective_context=get("budget.use_effective_context", False)),
              train=NS(algo=algo), train_max_summaries=0 if algo == "grpo" else summaries)


def tag_own_setting(uri: str, experiment_id: str) -> int:
    """Tag ``own_setting`` on the eval runs of the experiment that lack it (tracked before it existed), from their
    params; returns how many were tagged."""
    from mlflow import MlflowClient

    client, done = MlflowClient(tracking_uri=uri), 0
    for run in client.search_runs([experiment_id], "tags.stage = 'eval'", max_results=5000):
        tags = run.data.tags
        if OWN_SETTING_TAG in tags or "arm" not in tags or not tags.get("s_eval", "").isdigit():
            continue
        own = own_setting(config_from_params(run.data.params), tags["arm"], int(tags["s_eval"]))
        client.set_tag(run.info.run_id, OWN_SETTING_TAG, str(own).lower())
        done += 1
    return done


# --------------------------------------------------------------------------------------------
# Eval <-> training run
# --------------------------------------------------------------------------------------------


def sft_run_id(uri: str, experiment: str, env: str) -> str | None:
    """The newest finished ``sft`` run of ``env`` in ``experiment`` (the warm start's training run), or None."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"tags.stage = 'sft' and tags.env = '{env}' and "
                              "attributes.status = 'FINISHED'", max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def _section(description: str, heading: str) -> tuple[list[str], str]:
    """(the paragraphs of ``description`` other than the one starting ``heading``, that one's text after it)."""
    paragraphs = [p for p in description.split("\n\n") if p]
    found = [p[len(heading):].strip() for p in paragraphs if p.startswith(heading)]
    return [p for p in paragraphs if not p.startswith(heading)], (found[0] if found else "")


def _with_section(description: str, heading: str, body: str) -> str:
    """``description`` with its paragraph starting ``heading`` replaced by ``heading body`` (appended if missing)."""
    return "\n\n".join([*_section(description, heading)[0], f"{heading} {body}"])


def link_eval(uri: str, eval_run_id: str, train_run_id: str) -> None:
    """List eval run ``eval_run_id`` on its training run: tag ``eval_run_ids`` and a description section linking each
    eval by name (appended; MLflow's tag limit keeps the newest). A training run missing from the store is skipped."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from supo.tracking import NOTE_TAG

    client = MlflowClient(tracking_uri=uri)
    try:
        train, ev = client.get_run(train_run_id), client.get_run(eval_run_id)
    except MlflowException:
        return
    ids = [i for i in train.data.tags.get(EVAL_RUNS_TAG, "").split(",") if i]
    if eval_run_id in ids:
        return
    ids.append(eval_run_id)
    while len(",".join(ids)) > 5000:
        ids.pop(0)
    others, body = _section(train.data.tags.get(NOTE_TAG, ""), _EVALS_HEADING)
    new = f"[{ev.info.run_name}]({run_path(ev.info.experiment_id, eval_run_id)})"
    links = [*(body.split(" · ") if body else []), new]
    while links and len(_with_section("\n\n".join(others), _EVALS_HEADING, " · ".join(links))) > 7500:
        links.pop(0)
    client.set_tag(train_run_id, EVAL_RUNS_TAG, ",".join(ids))
    client.set_tag(train_run_id, NOTE_TAG, _with_section("\n\n".join(others), _EVALS_HEADING, " · ".join(links)))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def link_report(uri: str, report_run_id: str, training_run_ids: Iterable[str], headline: str = "",
                html: str = "report.html") -> None:
    """Link the report run both ways: its description states ``headline`` (markdown) and links its ``html`` artifact's
    preview; each training run in the store gets tag ``report_run_id`` and a description section linking the report.
    Call it once the report run holds ``html``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from supo.tracking import NOTE_TAG, tag_value

    client = MlflowClient(tracking_uri=uri)
    report = client.get_run(report_run_id)
    exp_id = report.info.experiment_id
    page = f"[{html}]({run_path(exp_id, report_run_id, html)})"
    client.set_tag(report_run_id, NOTE_TAG, tag_value(f"{headline}\n\nThe full report: {page}" if headline
                                                         else f"The full report: {page}"))
    link = f"[{report.info.run_name}]({run_path(exp_id, report_run_id)}) ({page})"
    for run_id in dict.fromkeys(training_run_ids):
        try:
            run = client.get_run(run_id)
        except MlflowException:
            continue
        client.set_tag(run_id, REPORT_RUN_TAG, report_run_id)
        client.set_tag(run_id, NOTE_TAG, tag_value(_with_section(run.data.tags.get(NOTE_TAG, ""), _REPORT_HEADING,
                                                                   link)))


# --------------------------------------------------------------------------------------------
# A moved project
# --------------------------------------------------------------------------------------------


def relocate_artifacts(uri: str, experiment: str) -> str | None:
    """Repair a moved project: MLflow stores artifact locations as absolute paths, so when the folder holding a
    sqlite store moved, the experiment's old artifact folder is gone. If the default one next to the database
    (``<db folder>/mlartifacts/<experiment>``) exists, point the experiment and its runs there. Returns the old
    location when it changed something, else None."""
    from mlflow import MlflowClient

    from supo.tracking import default_artifact_location
    from supo.tracking_params import sqlite_db_path

    db = sqlite_db_path(uri)
    new = default_artifact_location(uri, experiment)
    if db is None or new is None or not db.exists():
        return None
    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if exp is None or not exp.artifact_location.startswith("file://") or exp.artifact_location == new:
        return None
    old = exp.artifact_location
    if Path(urllib.parse.urlparse(old).path).exists() or not Path(urllib.parse.urlparse(new).path).exists():
        return None
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                     (new, int(exp.experiment_id)))
        conn.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE experiment_id = ? AND "
                     "substr(artifact_uri, 1, ?) = ?", (new, len(old) + 1, int(exp.experiment_id), len(old), old))
    log.info("experiment %s: artifacts moved from %s to %s", experiment, old, new)
    return old
