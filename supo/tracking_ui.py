"""The MLflow UI server: lean, in its own process group, announced only once its API answers, stopped with every child.

* ``mlflow ui`` starts, by default, four uvicorn workers and MLflow 3's job runner (a ``huey`` consumer with about
  ten worker processes) for features supo does not use: on a loaded 2-core machine that took minutes to answer and
  kept a quarter of a core busy while idle. :func:`start_ui` runs one worker and no job runner
  (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``, read by ``mlflow.server._run_server``): two processes.
* The UI is started in its own session (process group) and the whole group is stopped (:func:`stop_ui`).
* :func:`serve_ui` prints the URL only once an API call answers (``/health`` answers before the API does), and stops
  the group on Ctrl-C or SIGTERM at any point of start-up: a signal that arrives while the server is being spawned is
  held until its process is known.
* :func:`experiment_url` links an experiment's runs, a filter or a saved view (:mod:`supo.tracking_views`).
"""

from __future__ import annotations

import json
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

LEAN_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""Environment of the UI server: no job runner (no ``huey`` workers)."""
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def start_ui(uri: str, host: str = "127.0.0.1", port: int = 5000, *, quiet: bool = False,
             workers: int = 1) -> subprocess.Popen[bytes]:
    """Start ``mlflow ui`` for store ``uri`` in a new session (process group) and return it: ``workers`` uvicorn
    workers, no job runner. With ``quiet`` its output is discarded. Stop it with :func:`stop_ui`."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", str(workers), "--uvicorn-opts", "--no-access-log"]
    output = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, start_new_session=True, stdout=output, stderr=output, env={**os.environ, **LEAN_ENV})


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
        if proc.poll() is not None and not _group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_ui(proc: subprocess.Popen[bytes], timeouts: tuple[float, float] = (1.0, 3.0)) -> int:
    """Stop a UI started by :func:`start_ui` and every process of its group; return its exit code.

    SIGTERM to the group (uvicorn and mlflow stop gracefully on it; the UI has nothing to save), then SIGKILL, waiting ``timeouts`` seconds after
    each for the group to empty. Ctrl-C and SIGTERM to this process are held back meanwhile, so a second Ctrl-C cannot
    cut the stop short. A negative code means a signal ended it.
    """
    pgid = proc.pid  # start_new_session=True makes the child the leader of its own group
    in_main = threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) if in_main else None
    try:
        for sig, timeout in zip((signal.SIGTERM, signal.SIGKILL), timeouts, strict=True):
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
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Stop(Exception):
    """Raised in the main thread when Ctrl-C or SIGTERM arrives during :func:`serve_ui`."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received signal {signum}")
        self.signum = signum


_HELD: dict[str, int | None] = {"holding": 0, "signal": None}
"""While ``holding``, a stop signal is recorded here instead of raised (see :func:`_raise_stop`)."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    """Signal handler turning SIGINT and SIGTERM into :class:`_Stop` — or recording it while the server is spawned."""
    if _HELD["holding"]:
        _HELD["signal"] = signum
        return
    raise _Stop(signum)


def experiment_url(base: str, experiment_id: str, search_filter: str = "", charts: bool = False,
                   view: str | None = None) -> str:
    """The UI's URL of one experiment's runs: a saved view (``viewStateShareKey``) or a filter (``searchFilter``),
    optionally in chart view (``compareRunsMode=CHART``) — the query parameters MLflow 3.17's experiment page
    reads."""
    query = {}
    if view:
        query["viewStateShareKey"] = view
    elif search_filter:
        query["searchFilter"] = search_filter
    if charts:
        query["compareRunsMode"] = "CHART"
    suffix = f"?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}" if query else ""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs{suffix}"


def _answers(url: str, body: dict | None = None) -> bool:
    """True when ``url`` answers 200 (a POST of JSON ``body`` when given) within 5 s."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_for_ui(proc: subprocess.Popen[bytes], base: str, timeout: float = 300.0,
                experiment: str | None = None) -> bool:
    """Poll until the UI's API answers (True), its process exits or ``timeout`` s pass (False): ``/health`` first,
    then the call the experiment page makes first — the experiment lookup by name (``experiment``), else an
    experiment search."""
    if experiment is not None:
        api, body = (f"{base}/ajax-api/2.0/mlflow/experiments/get-by-name?"
                     f"{urllib.parse.urlencode({'experiment_name': experiment})}"), None
    else:
        api, body = f"{base}/ajax-api/2.0/mlflow/experiments/search", {"max_results": 1}
    deadline, healthy = time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        healthy = healthy or _answers(f"{base}/health")
        if healthy and _answers(api, body):
            return True
        time.sleep(0.25)
    return False


def serve_ui(uri: str, host: str = "127.0.0.1", port: int = 5000, *, url: str | None = None,
             open_browser: bool = False, timeout: float = 300.0, experiment: str | None = None) -> int:
    """Run ``mlflow ui`` in the foreground until it exits, Ctrl-C or SIGTERM; return its exit code (128 + the signal
    when stopped by one).

    The URL (``url``, default the UI's root) is printed only once the API answers (see :func:`wait_for_ui`) — and
    opened in a browser with ``open_browser``; a UI that exits or does not answer within ``timeout`` s is stopped and
    reported. Whenever it ends, the UI's whole process group is stopped (:func:`stop_ui`).
    """
    base = f"http://{host}:{port}"
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _raise_stop) for s in _STOP_SIGNALS} if in_main else {}
    proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"starting the MLflow UI over {uri} on {base} ...", flush=True)
        _HELD.update(holding=1, signal=None)
        try:
            proc = start_ui(uri, host, port)
        finally:
            _HELD["holding"] = 0
        if _HELD["signal"] is not None:  # it came while the server was being spawned
            raise _Stop(_HELD["signal"])
        started = time.monotonic()
        if not wait_for_ui(proc, base, timeout, experiment):
            return _start_failed(proc, base, port, timeout)
        print(f"MLflow UI at {url or base} (answered after {time.monotonic() - started:.0f} s; Ctrl-C to stop)",
              flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url or base)
        return proc.wait()
    except (KeyboardInterrupt, _Stop) as stop:
        signum = stop.signum if isinstance(stop, _Stop) else int(signal.SIGINT)
        print(f"stopping the MLflow UI ({signal.Signals(signum).name})", file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        _clean_up(proc, previous)


def _clean_up(proc: subprocess.Popen[bytes] | None, previous: dict) -> None:
    """Stop the UI's group whatever arrives meanwhile (a signal raised before the stop signals are blocked retries
    the stop), then drop signals that came during it and restore the handlers ``previous``."""
    while True:
        try:
            if previous:
                signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            if proc is not None:
                stop_ui(proc)
            break
        except (KeyboardInterrupt, _Stop):
            continue
    for sig, handler in previous.items():
        signal.signal(sig, signal.SIG_IGN)  # discards a pending one (POSIX)
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if previous:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _start_failed(proc: subprocess.Popen[bytes], base: str, port: int, timeout: float) -> int:
    """Report a UI that did not answer (still running: it is stopped by the caller) or exited; the exit code."""
    if proc.poll() is None:
        print(f"error: the MLflow UI did not answer on {base} within {timeout:g} s", file=sys.stderr)
        return 1
    print(f"error: the MLflow UI exited with code {proc.returncode} before answering (port {port} in use?)",
          file=sys.stderr)
    return proc.returncode or 1
