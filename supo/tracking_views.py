"""Saved views of the MLflow UI's experiment page, and one colour per arm.

A view is stored as the UI stores its own ("Views" menu): an experiment tag ``mlflow.sharedViewState.<key>`` holding
the deflated page state; ``?viewStateShareKey=<key>`` opens it (:func:`supo.tracking_ui.experiment_url`).

What MLflow 3.17's UI lets a stored state decide, read from its source (``mlflow/server/js/build``): the filter, the
order, the columns, the grouping (``groupBy``), the charts (``compareRunCharts``: ``LINE`` or ``BAR`` per metric) and
whether charts use the groups (``useGroupedValuesInCharts``). It does not hold colours: a *group's* colour lives in
the browser (``localStorage["experimentRunColors"]``) or is a hash of the group's id into MLflow's own palette; a
*run's* colour is the run tag ``mlflow.runColor``, which the UI reads with the run. So :func:`colour_runs` tags every
run with its arm's colour from the report's role palette, and the views chart runs (one bar or line per seed, in its
arm's colour: the spread over seeds is visible) while the run table groups them by arm (mean per group).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zlib
from collections.abc import Sequence

from mlflow import MlflowClient
from mlflow.entities import Run

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
"""Experiment tags under this prefix are the UI's saved views ("Views" menu); ``?viewStateShareKey=<key>`` opens one."""
RUN_COLOUR_TAG = "mlflow.runColor"
"""The run tag the UI colours a run by (it writes it itself when a user picks a run's colour)."""

TRAINING_CHARTS = ("success_rate", "mean_reward", "overlong_rate", "mean_summaries")
"""The charts a comparison of training runs shows first, in this order; every other metric follows alphabetically."""
EVAL_CHARTS = ("success_rate", "overlong_rate", "mean_summaries", "mean_working_context_tokens",
               "summary_state_accuracy")
"""The bar charts of the eval view, in this order (those the runs have); no other metric is charted there."""

_SECTION = "supo-model-metrics"


def _chart(i: int, key: str, bars: bool) -> dict:
    """One chart card as the UI saves it: a bar chart of a one-step metric or a line chart over steps."""
    base = {"uuid": f"supo-chart-{i}", "runsCountToCompare": 100, "metricSectionId": _SECTION, "deleted": False,
            "isGenerated": True, "displayName": key, "metricKey": key}
    if bars:
        return {**base, "type": "BAR", "selectedMetricKeys": [key]}
    return {**base, "type": "LINE", "lineSmoothness": 0, "xAxisScaleType": "linear", "scaleType": "linear",
            "range": {}, "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric",
            "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True}


def view_state(search_filter: str, metrics: Sequence[str], group_by: Sequence[str], *, bars: bool,
               columns: Sequence[str] = ()) -> dict:
    """The experiment page's state as MLflow 3.17's UI saves it: the filter, runs ordered by name (so an arm's seeds
    sit together), the table grouped by the tags ``group_by`` (mean per group), one chart per metric (bars for
    one-step metrics, else lines over steps) drawing each run in its own colour, ``columns`` (tag or metric keys,
    e.g. ``tags.seed``) shown in the table."""
    columns_ = [f"{kind}.`{name}`" for kind, _, name in (c.partition(".") for c in columns)]
    return {
        "searchFilter": search_filter, "orderByKey": "tags.`mlflow.runName`", "orderByAsc": True, "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": columns_, "columnOrder": [], "columnWidths": {}, "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [_chart(i, key, bars) for i, key in enumerate(metrics)],
        "compareRunSections": [
            {"uuid": _SECTION, "name": "Model metrics", "display": True, "isReordered": True, "deleted": False,
             "isGenerated": True},
            {"uuid": "supo-system-metrics", "name": "System metrics", "display": False, "isReordered": False,
             "deleted": False, "isGenerated": True}],
        "viewMaximized": False, "runListHidden": False, "isAccordionReordered": False,
        "useGroupedValuesInCharts": False, "hideEmptyCharts": True,
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "tag", "groupByData": tag} for tag in group_by]},
        "groupsExpanded": {}, "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0,
                                                         "selectedXAxisMetricKey": ""},
    }


def read_view(uri: str, experiment_id: str, key: str) -> tuple[str, dict]:
    """(name, state) of saved view ``key`` — the inverse of :func:`save_view`."""
    value = json.loads(MlflowClient(tracking_uri=uri).get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + key])
    state = value["state"]
    return value["name"], json.loads(zlib.decompress(base64.b64decode(state[len("deflate;"):])))


def save_view(uri: str, experiment_id: str, name: str, state: dict) -> str:
    """Save (or refresh) ``state`` as view ``name`` of the experiment; its key is derived from the filter and the
    grouping, so saving again replaces it. Returns the key."""
    group = ",".join(k["groupByData"] for k in state["groupBy"]["groupByKeys"])
    key = "supo" + hashlib.sha1(f"{state['searchFilter']}|{group}".encode()).hexdigest()[:16]
    now = int(time.time() * 1000)
    value = {"name": name, "createdAt": now, "updatedAt": now,
             "state": "deflate;" + base64.b64encode(zlib.compress(json.dumps(state, separators=(",", ":")).encode()))
             .decode()}
    MlflowClient(tracking_uri=uri).set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(value))
    return key


def _runs(uri: str, experiment_id: str, search_filter: str) -> list[Run]:
    """Every run of the experiment matching ``search_filter``."""
    client, runs, token = MlflowClient(tracking_uri=uri), [], None
    while True:
        page = client.search_runs([experiment_id], search_filter, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def one_step(runs: Sequence[Run]) -> bool:
    """True when every run's every metric was logged at step 0 only (MLflow's own rule for a bar chart: no latest
    step ≥ 1)."""
    return all(m.step < 1 for run in runs for m in run.data._metric_objs)


def save_training_view(uri: str, experiment_id: str, env: str, legend: str = "") -> str:
    """The view of ``env``'s training runs: grouped by arm, :data:`TRAINING_CHARTS` first as lines over steps."""
    flt = f"tags.env = '{env}' and tags.stage = 'train'"
    metrics = {m for run in _runs(uri, experiment_id, flt) for m in run.data.metrics}
    ordered = [m for m in TRAINING_CHARTS if m in metrics] + sorted(metrics - set(TRAINING_CHARTS))
    state = view_state(flt, ordered, ["arm"], bars=False, columns=["tags.seed", *(f"metrics.{m}" for m in
                                                                                 TRAINING_CHARTS if m in metrics)])
    return save_view(uri, experiment_id, f"supo: {env} training runs by arm{legend}", state)


def save_eval_view(uri: str, experiment_id: str, env: str, legend: str = "") -> str:
    """The view of ``env``'s evaluations at each arm's own setting (tag ``own_setting``), the warm start's included:
    grouped by arm and S_eval, bar charts of :data:`EVAL_CHARTS` (one bar per seed)."""
    flt = f"tags.env = '{env}' and tags.stage = 'eval' and tags.own_setting = 'true'"
    metrics = {m for run in _runs(uri, experiment_id, flt) for m in run.data.metrics}
    charted = [m for m in EVAL_CHARTS if m in metrics] or list(EVAL_CHARTS[:4])
    state = view_state(flt, charted, ["arm", "s_eval"], bars=True,
                       columns=["tags.seed", "tags.s_eval", *(f"metrics.{m}" for m in charted)])
    return save_view(uri, experiment_id, f"supo: {env} evals at each arm's own setting{legend}", state)


def save_filter_view(uri: str, experiment_id: str, search_filter: str, legend: str = "") -> str:
    """A view of the runs matching ``search_filter`` grouped by arm: bar charts when every matched run has one-step
    metrics (evaluations), else lines over steps; the key metrics first."""
    runs = _runs(uri, experiment_id, search_filter)
    metrics = {m for run in runs for m in run.data.metrics}
    bars = bool(runs) and one_step(runs)
    first = EVAL_CHARTS if bars else TRAINING_CHARTS
    ordered = [m for m in first if m in metrics] + sorted(metrics - set(first))
    state = view_state(search_filter, ordered, ["arm"], bars=bars, columns=["tags.seed"])
    return save_view(uri, experiment_id, f"supo: {search_filter} by arm{legend}", state)


def arm_palette(cfg) -> dict[str, str]:
    """Each arm's colour in the report (by role: warm start grey, GRPO-W blue, GRPO-Weff orange, SUPO green,
    ablations red, purple, …), for the arms the config defines, its pipeline's and the warm-start labels."""
    from supo.layout import warm_start_label
    from supo.report.analysis import roles_from_config
    from supo.report.figures import arm_colours

    arms = list(dict.fromkeys([*cfg.pipeline.arms, *cfg.arms]))
    labels = [*arms, warm_start_label(), *(warm_start_label(a) for a in arms)]
    return arm_colours(roles_from_config(arms, cfg.arms), labels)


def legend(palette: dict[str, str]) -> str:
    """A view-name suffix naming each colour (`` — supo green, grpo-w blue, …``) for the hues of the report's
    palette; colours it does not name are left out."""
    names = {"#1f77b4": "blue", "#ff7f0e": "orange", "#2ca02c": "green", "#7f7f7f": "grey", "#d62728": "red",
             "#9467bd": "purple", "#8c564b": "brown", "#e377c2": "pink"}
    from supo.layout import WARM_START, is_warm_start

    parts = [f"{'warm start' if arm == WARM_START else arm} {names[c]}" for arm, c in palette.items()
             if c in names and (arm == WARM_START or not is_warm_start(arm))]
    return f" — {', '.join(parts)}" if parts else ""


def colour_runs(uri: str, experiment_id: str, palette: dict[str, str]) -> int:
    """Tag every run whose ``arm`` is in ``palette`` with its colour (``mlflow.runColor``) where it differs; returns
    how many runs were changed. matplotlib colour names (``C5``) are turned into hex."""
    from matplotlib.colors import to_hex

    client, changed = MlflowClient(tracking_uri=uri), 0
    hexes = {arm: to_hex(c) for arm, c in palette.items()}
    for run in _runs(uri, experiment_id, ""):
        colour = hexes.get(run.data.tags.get("arm", ""))
        if colour and run.data.tags.get(RUN_COLOUR_TAG) != colour:
            client.set_tag(run.info.run_id, RUN_COLOUR_TAG, colour)
            changed += 1
    return changed
