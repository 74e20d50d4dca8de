"""The MLflow UI server: started in its own process group, announced only once it answers, stopped with its workers.

* ``mlflow ui`` leaves orphaned ``huey_consumer`` processes when only its main process is signalled, so the UI is
  started in its own process group and the whole group is stopped.
* ``mlflow ui`` accepts connections only 40–80 s after it starts on a small machine, so :func:`serve_ui` prints its
  URL only once ``/health`` answers.
* :func:`save_comparison_view` stores a view (filter, runs grouped by arm with a mean line and a band over seeds, the
  charts that compare arms first) in the experiment's tags, where the UI's "Views" menu keeps its own, and
  :func:`experiment_url` links to it (the query parameters MLflow 3.17's experiment page reads).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from types import FrameType

log = logging.getLogger(__name__)


def start_ui(
    uri: str, host: str = "127.0.0.1", port: int = 5000, *, quiet: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``mlflow ui`` for store ``uri`` in a new process group (session) and return it.

    With ``quiet`` its output is discarded; otherwise it goes to this process's stdout/stderr.
    Stop it with :func:`stop_ui`, which signals the whole group.
    """
    cmd = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", uri,
        "--host", host,
        "--port", str(port),
    ]
    output = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, start_new_session=True, stdout=output, stderr=output)


def _group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_stopped(proc: subprocess.Popen[bytes], pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for the leader to exit (reaping it) and the group to empty."""
    deadline = time.monotonic() + timeout
    while True:
        leader_done = proc.poll() is not None
        if leader_done and not _group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop_ui(
    proc: subprocess.Popen[bytes],
    timeouts: tuple[float, float, float] = (10.0, 5.0, 5.0),
) -> int:
    """Stop a UI started by :func:`start_ui` and every process of its group; return its exit code.

    Sends SIGINT to the group, then SIGTERM, then SIGKILL, waiting ``timeouts`` seconds after
    each for the group to empty. Child processes that outlive the main one (mlflow's
    ``huey_consumer`` workers) are signalled too. A negative code means a signal ended it.
    """
    pgid = proc.pid  # start_new_session=True makes the child the leader of its own group
    for sig, timeout in zip((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), timeouts, strict=True):
        if _wait_stopped(proc, pgid, 0):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        if _wait_stopped(proc, pgid, timeout):
            break
    else:
        if _group_alive(pgid):
            log.warning("processes of MLflow UI group %d survived SIGKILL", pgid)
    return proc.wait()


class _Terminated(Exception):
    """Raised in the main thread when SIGTERM arrives during :func:`serve_ui`."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    """Signal handler turning SIGTERM into :class:`_Terminated`."""
    raise _Terminated(f"received signal {signum}")


def experiment_url(base: str, experiment_id: str, search_filter: str = "", charts: bool = False,
                   view: str | None = None) -> str:
    """The UI's URL of one experiment's runs: a saved view (``viewStateShareKey``, see :func:`save_comparison_view`)
    or a filter (``searchFilter``), optionally in chart view (``compareRunsMode=CHART``) — the query parameters
    MLflow 3.17's experiment page reads."""
    query = {}
    if view:
        query["viewStateShareKey"] = view
    elif search_filter:
        query["searchFilter"] = search_filter
    if charts:
        query["compareRunsMode"] = "CHART"
    suffix = f"?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}" if query else ""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs{suffix}"


def wait_for_ui(proc: subprocess.Popen[bytes], base: str, timeout: float = 300.0) -> bool:
    """Poll ``<base>/health`` until the UI answers 200 (True), its process exits or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def serve_ui(uri: str, host: str = "127.0.0.1", port: int = 5000, *, url: str | None = None,
             open_browser: bool = False, timeout: float = 300.0) -> int:
    """Run ``mlflow ui`` in the foreground until it exits, Ctrl-C or SIGTERM; return its exit code.

    The URL (``url``, default the UI's root) is printed only once the server answers HTTP — and opened in a browser
    with ``open_browser``; a UI that exits or does not answer within ``timeout`` s is stopped and reported. On
    interruption the UI's whole process group is stopped (see :func:`stop_ui`).
    """
    base = f"http://{host}:{port}"
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    print(f"starting the MLflow UI over {uri} on {base} ...", flush=True)
    proc = start_ui(uri, host, port)
    try:
        if not wait_for_ui(proc, base, timeout):
            if proc.poll() is None:
                print(f"error: the MLflow UI did not answer on {base} within {timeout:g} s", file=sys.stderr)
                return 1
            print(f"error: the MLflow UI exited with code {proc.returncode} before answering (port {port} in use?)",
                  file=sys.stderr)
            return proc.returncode or 1
        print(f"MLflow UI at {url or base} (Ctrl-C to stop)", flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url or base)
        proc.wait()
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        code = stop_ui(proc)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return code


# --------------------------------------------------------------------------------------------
# A saved comparison view
# --------------------------------------------------------------------------------------------

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
"""Experiment tags under this prefix are the UI's saved views ("Views" menu); ``?viewStateShareKey=<key>`` opens one."""

PINNED_CHARTS = ("success_rate", "mean_reward", "overlong_rate", "mean_summaries")
"""The charts a comparison of arms shows first, in this order; every other metric follows alphabetically."""


def _view_state(search_filter: str, metrics: list[str], group_by_tag: str) -> dict:
    """The experiment page's view state as MLflow 3.17's UI saves it: the filter, the runs grouped by a tag
    (average line, min–max band), one line chart per metric over steps, ``metrics`` in order."""
    section = "supo-model-metrics"
    charts = [{"uuid": f"supo-chart-{i}", "type": "LINE", "runsCountToCompare": 100, "metricSectionId": section,
               "deleted": False, "isGenerated": True, "displayName": key, "metricKey": key, "lineSmoothness": 0,
               "xAxisScaleType": "linear", "scaleType": "linear", "range": {}, "xAxisKey": "step",
               "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False,
               "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True} for i, key in enumerate(metrics)]
    return {
        "searchFilter": search_filter, "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs", "selectedColumns": [],
        "columnOrder": [], "columnWidths": {}, "runsHiddenMode": "SHOWALL", "compareRunCharts": charts,
        "compareRunSections": [
            {"uuid": section, "name": "Model metrics", "display": True, "isReordered": True, "deleted": False,
             "isGenerated": True},
            {"uuid": "supo-system-metrics", "name": "System metrics", "display": False, "isReordered": False,
             "deleted": False, "isGenerated": True}],
        "viewMaximized": False, "runListHidden": False, "isAccordionReordered": False,
        "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": group_by_tag}]},
        "groupsExpanded": {}, "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0,
                                                         "selectedXAxisMetricKey": ""},
    }


def save_comparison_view(uri: str, experiment_id: str, search_filter: str, group_by_tag: str = "arm",
                         name: str | None = None) -> str:
    """Save (or refresh) a view of experiment ``experiment_id`` in its tags, as the UI's "Views" menu does: the runs
    matching ``search_filter`` grouped by ``tags.<group_by_tag>`` (mean line, min–max band over the group, e.g. the
    seeds of an arm), with :data:`PINNED_CHARTS` first. One view per filter (its key is derived from it). Returns the
    key for :func:`experiment_url`'s ``view``."""
    import base64
    import hashlib
    import json
    import zlib

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    metrics: set[str] = set()
    for run in client.search_runs([experiment_id], search_filter, max_results=1000):
        metrics.update(run.data.metrics)
    ordered = [m for m in PINNED_CHARTS if m in metrics] + sorted(metrics - set(PINNED_CHARTS))
    state = json.dumps(_view_state(search_filter, ordered, group_by_tag), separators=(",", ":"))
    now = int(time.time() * 1000)
    key = "supo" + hashlib.sha1(f"{search_filter}|{group_by_tag}".encode()).hexdigest()[:16]
    value = {"name": name or f"supo: {search_filter} by {group_by_tag}", "createdAt": now, "updatedAt": now,
             "state": "deflate;" + base64.b64encode(zlib.compress(state.encode())).decode()}
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(value))
    return key
