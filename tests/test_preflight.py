"""supo.preflight on real files with faults injected into them: safetensors written by the package's model builder and
then truncated, checkpoints written by supo.checkpoint and then damaged, real sqlite stores and HTTP servers; and the
runtime-failure report of cli/errors.py."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from supo.preflight import (
    PreflightError,
    check_metrics_file,
    check_model_dir,
    check_num_tasks,
    check_resume,
    check_run_exists,
    check_safetensors,
    check_seed,
    check_state_json,
    check_tracking_uri,
    check_weights,
    check_writable_dir,
)


def truncate(path: Path, keep: int) -> None:
    """Cut ``path`` to its first ``keep`` bytes (a negative ``keep`` drops that many from the end)."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.fixture
def model_dir(tmp_path, tiny_model_dir) -> Path:
    """A writable copy of the tiny model folder (built by supo.models.build_model)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture
def steps_dir(tmp_path, tiny_model_dir, tiny_tokenizer) -> Path:
    """A real training checkpoint (supo.checkpoint.save_checkpoint) of the tiny model, with an optimizer state."""
    import torch

    from supo.checkpoint import save_checkpoint
    from supo.models import load_policy

    model = load_policy(tiny_model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    out = tmp_path / "ckpt" / "steps"
    save_checkpoint(out, step=1, model=model, tokenizer=tiny_tokenizer,
                    trainer_state={"optimizer": opt.state_dict(), "updates": 1}, history=[{"step": 0}],
                    mlflow_run_id="abc")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# model folders and weights


def test_a_real_model_folder_passes(model_dir):
    check_model_dir(model_dir, "--checkpoint")
    assert check_safetensors(model_dir / "model.safetensors") > 0


@pytest.mark.parametrize("keep", [-1, -4096, 100, 6])
def test_a_truncated_safetensors_file_is_named(model_dir, keep):
    weights = model_dir / "model.safetensors"
    truncate(weights, keep)
    with pytest.raises(PreflightError) as e:
        check_model_dir(model_dir, "--checkpoint")
    msg = str(e.value)
    assert msg.startswith(f"--checkpoint {model_dir}") and str(weights) in msg
    assert "truncated" in msg


def test_trailing_bytes_and_a_garbled_header_are_named(model_dir):
    weights = model_dir / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original + b"\0" * 8)
    with pytest.raises(PreflightError, match="trailing bytes"):
        check_safetensors(weights)
    weights.write_bytes(original[:8] + b"x" + original[9:])  # the header's JSON no longer parses
    with pytest.raises(PreflightError, match="not valid JSON"):
        check_safetensors(weights)


def test_a_declared_size_that_does_not_match_the_shape_is_named(model_dir):
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [d + 1 for d in header[name]["shape"]]
    raw = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(raw) == n
    weights.write_bytes(data[:8] + raw + data[8 + n:])
    with pytest.raises(PreflightError, match=f"tensor '{name}'.*needed"):
        check_safetensors(weights)


@pytest.mark.parametrize("fault, needle", [
    ("no config", "config.json does not exist"),
    ("bad config", "config.json is not valid JSON"),
    ("no model_type", "lacks a string model_type"),
    ("no tokenizer", "holds no tokenizer"),
    ("bad tokenizer", "tokenizer.json is not valid JSON"),
    ("no weights", "holds no weights"),
])
def test_each_part_of_a_model_folder_is_checked(model_dir, fault, needle):
    if fault == "no config":
        (model_dir / "config.json").unlink()
    elif fault == "bad config":
        truncate(model_dir / "config.json", 20)
    elif fault == "no model_type":
        cfg = json.loads((model_dir / "config.json").read_text())
        del cfg["model_type"]
        (model_dir / "config.json").write_text(json.dumps(cfg))
    elif fault == "no tokenizer":
        (model_dir / "tokenizer.json").unlink()
    elif fault == "bad tokenizer":
        truncate(model_dir / "tokenizer.json", 100)
    else:
        (model_dir / "model.safetensors").unlink()
    with pytest.raises(PreflightError, match=needle):
        check_model_dir(model_dir, "--init")


def test_a_missing_folder_or_shard_is_named(model_dir, tmp_path):
    with pytest.raises(PreflightError, match="--checkpoint .*nope does not exist"):
        check_model_dir(tmp_path / "nope", "--checkpoint")
    (model_dir / "model.safetensors").rename(model_dir / "model-00001-of-00002.safetensors")
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(PreflightError, match="model-00002-of-00002.safetensors .*does not exist"):
        check_weights(model_dir)


# ---------------------------------------------------------------------------------------------------------------------
# --resume


def test_a_real_checkpoint_passes(steps_dir):
    assert check_resume(steps_dir).name == "step_000001"


@pytest.mark.parametrize("file, keep, needle", [
    ("trainer_state.pt", -200, "trainer state .*trainer_state.pt is not a complete torch.save archive"),
    ("trainer_state.pt", 10, "trainer state .*trainer_state.pt"),
    ("state.json", 30, "checkpoint state .*state.json is not valid JSON"),
    ("model.safetensors", -10, "model.safetensors.*truncated"),
])
def test_a_truncated_resume_file_is_named(steps_dir, file, keep, needle):
    truncate(steps_dir / "step_000001" / file, keep)
    with pytest.raises(PreflightError, match=f"^--resume: .*{needle}"):
        check_resume(steps_dir)


def test_state_json_needs_the_fields_the_loader_reads(steps_dir):
    state_file = steps_dir / "step_000001" / "state.json"
    state = json.loads(state_file.read_text())
    for field, bad, needle in (("step", "1", "step must be int"), ("history", None, "history must be list"),
                               ("mlflow_run_id", 7, "mlflow_run_id must be a string or null")):
        state_file.write_text(json.dumps({**state, field: bad}))
        with pytest.raises(PreflightError, match=needle):
            check_state_json(state_file)
    state_file.write_text(json.dumps({k: v for k, v in state.items() if k != "step"}))
    with pytest.raises(PreflightError, match="missing field 'step'"):
        check_state_json(state_file)


def test_trainer_state_without_rng_or_a_dangling_pointer_is_named(steps_dir):
    import torch

    torch.save({"trainer": {}}, steps_dir / "step_000001" / "trainer_state.pt")
    with pytest.raises(PreflightError, match="keys \\['trainer', 'rng'\\]"):
        check_resume(steps_dir)
    (steps_dir / "latest").write_text("step_000009\n")
    with pytest.raises(PreflightError, match="names 'step_000009', which is not a checkpoint folder"):
        check_resume(steps_dir)
    (steps_dir / "latest").unlink()
    with pytest.raises(PreflightError, match="no 'latest' pointer"):
        check_resume(steps_dir)


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


# ---------------------------------------------------------------------------------------------------------------------
# seeds, task counts


@pytest.mark.parametrize("value", [-1, 2**31, True, 1.5, "3"])
def test_a_bad_seed_names_the_flag(value):
    with pytest.raises(PreflightError, match="^--seed: must be"):
        check_seed(value, "--seed")


def test_good_seeds_and_task_counts_pass():
    for value in (0, 1, 2**31 - 1):
        check_seed(value)
    check_num_tasks(8, 8, "data/test.parquet")
    with pytest.raises(PreflightError, match="^--num-tasks 1000: the split data/test.parquet holds only 8 tasks"):
        check_num_tasks(1000, 8, "data/test.parquet")


# ---------------------------------------------------------------------------------------------------------------------
# runtime failures: the cause first, the traceback in a log


def _chained() -> Exception:
    try:
        try:
            raise OSError(2, "No such file or directory", "models/x/model.safetensors")
        except OSError as inner:
            raise RuntimeError("Engine core initialization failed. See root cause above.") from inner
    except RuntimeError as outer:
        outer.add_note("checkpoint models/x")
        return outer


def test_the_innermost_error_and_where_it_happened_come_first(tmp_path, monkeypatch):
    from cli.errors import report_runtime_failure, summary_line

    exc = _chained()
    line = summary_line("eval", exc)
    assert line.startswith("supo-cli eval failed in checkpoint models/x, models/x/model.safetensors: "
                           "FileNotFoundError: [Errno 2] No such file or directory")
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    assert report_runtime_failure("eval", exc, debug=False, echo=lines.append) == 1
    assert len(lines) == 1 and "full traceback: logs/supo-eval-" in lines[0]
    log = tmp_path / lines[0].split("full traceback: ")[1].rstrip(")")
    text = log.read_text()
    assert "Engine core initialization failed" in text and "Traceback" in text and line in text
    lines.clear()
    report_runtime_failure("eval", exc, debug=True, echo=lines.append)
    assert "Traceback" in lines[0] and lines[-1].startswith("error: supo-cli eval failed")


def test_a_ray_actor_error_names_the_actor_and_the_remote_cause():
    from ray.exceptions import RayTaskError

    from cli.errors import summary_line

    cause = ValueError("task train-00003: bad env_config for the array env")
    err = RayTaskError("RolloutWorker.run", "Traceback (most recent call last):\nValueError: bad", cause,
                       proctitle="ray::RolloutWorker.run", pid=1, ip="127.0.0.1",
                       actor_repr="RolloutWorker(worker=0)")
    expected = ("supo-cli train failed in Ray actor RolloutWorker(worker=0) (RolloutWorker.run): ValueError: "
                "task train-00003: bad env_config for the array env")
    assert summary_line("train", err) == expected
    assert summary_line("train", err.as_instanceof_cause()) == expected  # what ray.get raises


# ---------------------------------------------------------------------------------------------------------------------
# issue 18: resume history, output folders, metrics files


@pytest.mark.parametrize("history, needle", [
    ([], "history holds 0 step\\(s\\) but the checkpoint is at step 1"),
    ([{"step": 0}, {"step": 1}], "history holds 2 step\\(s\\) but the checkpoint is at step 1"),
    ([{"step": 3}], "history\\[0\\] must be step 0's metrics, got step 3"),
    ([{"mean_reward": 0.5}], "history\\[0\\] must be step 0's metrics, got step None"),
])
def test_a_resume_whose_history_does_not_match_its_step_is_refused(steps_dir, history, needle):
    """Issue 18: `history: []` passed the preflight; the actors started, train_metrics.json was overwritten with [] and
    the run died with an IndexError 63 s later."""
    state_file = steps_dir / "step_000001" / "state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "history": history}))
    with pytest.raises(PreflightError, match=f"^--resume: checkpoint state .*state.json: {needle}"):
        check_resume(steps_dir)


def test_load_checkpoint_refuses_a_history_that_cannot_continue(steps_dir):
    from supo.checkpoint import load_checkpoint

    folder = steps_dir / "step_000001"
    assert load_checkpoint(folder, trainer_state=False).history == [{"step": 0}]
    (folder / "state.json").write_text(json.dumps({**json.loads((folder / "state.json").read_text()), "history": []}))
    with pytest.raises(ValueError, match="history holds 0 step"):
        load_checkpoint(folder, trainer_state=False)


def test_output_folders_are_probed_not_read_off_permission_bits(tmp_path):
    check_writable_dir(tmp_path / "new" / "deeper", "--out")  # creatable: its nearest existing parent is writable
    assert not (tmp_path / "new").exists() and not list(tmp_path.iterdir())  # nothing created, no probe left
    (tmp_path / "plain").write_text("x")
    with pytest.raises(PreflightError, match=f"^--out {tmp_path / 'plain'} is not a folder$"):
        check_writable_dir(tmp_path / "plain", "--out")
    with pytest.raises(PreflightError, match=f"^--out {tmp_path / 'plain' / 's3'} is not a folder: "
                                             f"{tmp_path / 'plain'} is a file"):
        check_writable_dir(tmp_path / "plain" / "s3", "--out")
    if Path("/sys/kernel").is_dir():  # Linux's sysfs refuses new files even to root, whatever its permission bits say
        with pytest.raises(PreflightError, match="^--out /sys/supo-out: cannot write in /sys"):
            check_writable_dir("/sys/supo-out", "--out")


def test_a_read_only_folder_is_refused(tmp_path):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK) and os.geteuid() == 0:
            check_writable_dir(ro, "--out")  # root may write there: the probe says so instead of guessing
        else:
            with pytest.raises(PreflightError, match=f"^--out {ro}: cannot write in {ro}"):
                check_writable_dir(ro, "--out")
    finally:
        ro.chmod(0o755)


def test_a_corrupt_metrics_file_is_moved_aside_and_named_before_any_work(tmp_path):
    """Issue 18: with a corrupt metrics/<env>/eval.json, eval ran every rollout and then died with a JSONDecodeError
    naming no file."""
    path = tmp_path / "metrics" / "eval.json"
    check_metrics_file(path)  # absent: fine, nothing created
    assert not path.exists()
    path.parent.mkdir()
    path.write_text('{"seed0": {"supo": {"s5": {"success_rate": 0.5}}}}')
    check_metrics_file(path)  # a JSON object: fine, left as it is
    corrupt = '{"seed0": {"supo" {"s5": 1}}}'
    path.write_text(corrupt)
    with pytest.raises(PreflightError) as e:
        check_metrics_file(path, "eval metrics file")
    aside = list(path.parent.glob("eval.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == corrupt and not path.exists()  # kept, not rewritten
    assert str(e.value).startswith(f"eval metrics file {path}: not valid JSON (Expecting ':' delimiter at line 1); "
                                   f"moved aside to {aside[0]}")
    path.mkdir()
    with pytest.raises(PreflightError, match="is a folder, not a JSON file"):
        check_metrics_file(path)
