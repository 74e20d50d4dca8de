"""The MLflow UI server: started in its own process group, announced only once it answers, stopped with its workers.

* ``mlflow ui`` leaves orphaned ``huey_consumer`` processes when only its main process is signalled, so the UI is
  started in its own process group and the whole group is stopped.
* ``mlflow ui`` accepts connections only 40–80 s after it starts on a small machine, so :func:`serve_ui` prints its
  URL only once ``/health`` answers.
* :func:`experiment_url` builds the link to one experiment's runs with a search filter and the chart view (the query
  parameters MLflow 3.17's experiment page reads).
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


def experiment_url(base: str, experiment_id: str, search_filter: str = "", charts: bool = False) -> str:
    """The UI's URL of one experiment's runs, optionally filtered (``searchFilter``) and in chart view
    (``compareRunsMode=CHART``) — the query parameters MLflow 3.17's experiment page reads."""
    query = {}
    if search_filter:
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
