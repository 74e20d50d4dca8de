"""supo.preflight's check of the tracking store, on real sqlite stores and HTTP servers: each URI scheme, a server
that does not answer or is not MLflow, a sqlite URI naming a folder or a non-database, a run id not in the store.
The other preflight checks: tests/test_preflight.py."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest

from supo.preflight import (
    PreflightError,
    check_run_exists,
    check_tracking_uri,
)

# ---------------------------------------------------------------------------------------------------------------------
# tracking URI


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(status: int, body: bytes, content_type: str = "application/json"):
    """A real HTTP server on 127.0.0.1 answering every GET with ``status`` and ``body``; yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


MLFLOW_404 = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST",
                         "message": "Could not find experiment with name 'supo-preflight-probe'"}).encode()


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 answering the MLflow API route the check asks the way MLflow does (404 with
    error_code RESOURCE_DOES_NOT_EXIST: no such experiment)."""
    yield from _serve(404, MLFLOW_404)


def test_tracking_uri_schemes(tmp_path, http_server, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(PreflightError, match="^MLFLOW_TRACKING_URI=bogus://nowhere: unknown scheme 'bogus'"):
        check_tracking_uri("bogus://nowhere", "MLFLOW_TRACKING_URI")
    with pytest.raises(PreflightError, match="file store"):
        check_tracking_uri(str(tmp_path / "mlruns"), "--tracking-uri")
    check_tracking_uri(http_server, "--tracking-uri")  # answers
    check_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_server_that_does_not_answer_fails_within_seconds():
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(PreflightError, match=f"^MLFLOW_TRACKING_URI={uri}: no tracking server answers"):
        check_tracking_uri(uri, "MLFLOW_TRACKING_URI", timeout=3.0)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("status, body, content_type", [
    (404, b"<html><body>Not Found</body></html>", "text/html"),  # a web server that is not MLflow
    (404, b'{"detail": "Not Found"}', "application/json"),  # another JSON API
    (200, b"OK", "text/plain"),  # a server answering everything
])
def test_an_http_server_that_is_not_mlflow_is_named(status, body, content_type):
    """Issue 18: a server that answers but is not an MLflow tracking server was accepted; the engine started and the
    run failed 53 s later with MlflowException 404. Its answer to an MLflow API route gives it away."""
    server = _serve(status, body, content_type)
    uri = next(server)
    try:
        with pytest.raises(PreflightError, match=f"^--tracking-uri={uri}: not an MLflow tracking server \\(GET "
                                                 f"/api/2.0/mlflow/experiments/get-by-name answered {status}"):
            check_tracking_uri(uri, "--tracking-uri")
    finally:
        server.close()


def test_an_mlflow_error_or_an_existing_experiment_is_told_apart():
    ok = _serve(200, json.dumps({"experiment": {"experiment_id": "1", "name": "supo-preflight-probe"}}).encode())
    uri = next(ok)
    try:
        check_tracking_uri(uri)  # the experiment exists: an MLflow server
    finally:
        ok.close()
    broken = _serve(500, json.dumps({"error_code": "INTERNAL_ERROR", "message": "database is locked"}).encode())
    uri = next(broken)
    try:
        with pytest.raises(PreflightError, match="answers GET .* with 500 INTERNAL_ERROR: database is locked"):
            check_tracking_uri(uri)
    finally:
        broken.close()


def test_a_sqlite_uri_naming_a_folder_is_named(tmp_path):
    """Issue 18: ``sqlite:///evals`` (a folder) ended in IsADirectoryError from the preflight itself (exit 1)."""
    (tmp_path / "evals").mkdir()
    uri = f"sqlite:///{tmp_path / 'evals'}"
    with pytest.raises(PreflightError, match=f"^tracking.uri={uri}: {tmp_path / 'evals'} is a folder, not a database "
                                             "file"):
        check_tracking_uri(uri)


def test_a_sqlite_folder_is_never_created_and_a_non_database_is_named(tmp_path):
    missing = tmp_path / "nonexistent_dir"
    with pytest.raises(PreflightError, match="nonexistent_dir does not exist"):
        check_tracking_uri(f"sqlite:///{missing / 'x.db'}", "tracking.uri")
    assert not missing.exists()
    (tmp_path / "notes.db").write_text("not a database")
    with pytest.raises(PreflightError, match="is not an SQLite database"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'notes.db'}")


def test_a_run_id_not_in_the_store_is_named(tmp_path):
    from supo.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with Tracker(uri, "exp", "run") as tr:
        run_id = tr.run_id
    check_run_exists(uri, run_id, "state.json")
    with pytest.raises(PreflightError, match="^ckpt/state.json: MLflow run 0123456789abcdef is not in"):
        check_run_exists(uri, "0123456789abcdef", "ckpt/state.json")
