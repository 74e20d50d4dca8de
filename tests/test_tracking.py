"""Tests for supo.tracking against a real sqlite MLflow store in tmp_path (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from supo.tracking import (
    DEFAULT_TRACKING_URI,
    Tracker,
    find_runs,
    log_figures,
    resolve_tracking_uri,
    run_link,
    tracking_uri_source,
)


@pytest.fixture()
def store_uri(tmp_path: Path) -> str:
    """A fresh sqlite tracking store inside tmp_path."""
    (tmp_path / "store").mkdir()
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


def test_params_metrics_artifacts_round_trip(store_uri: str, tmp_path: Path) -> None:
    params = {"train.lr": 1e-6, "train.group_size": 8, "model.name": "tiny", "env.tools": ["search"]}
    local = tmp_path / "note.txt"
    local.write_text("hello artifact\n")

    with Tracker(store_uri, "exp-a", "train-supo", params=params, tags={"arm": "supo"}) as tracker:
        run_id = tracker.run_id
        for step in range(3):
            tracker.log_metrics({"mean_reward": 0.1 * step, "success_rate": 0.5, "skipped": None}, step=step)
        tracker.log_metrics({"nan_metric": float("nan"), "inf_metric": float("inf")}, step=3)
        tracker.log_dict({"a": 1, "b": [1, 2]}, "config/resolved.json")
        tracker.log_text("some text", "notes/readme.txt")
        tracker.log_artifact(local, "files")

    client = _client(store_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train-supo"
    assert run.data.params == {
        "train.lr": "1e-06",
        "train.group_size": "8",
        "model.name": "tiny",
        "env.tools": "['search']",
    }
    assert run.data.tags["arm"] == "supo"
    history = client.get_metric_history(run_id, "mean_reward")
    assert [(m.step, round(m.value, 6)) for m in history] == [(0, 0.0), (1, 0.1), (2, 0.2)]
    # None and non-finite values are skipped, not logged.
    assert "skipped" not in run.data.metrics
    assert "nan_metric" not in run.data.metrics and "inf_metric" not in run.data.metrics

    top = {a.path for a in client.list_artifacts(run_id)}
    assert top == {"config", "notes", "files"}
    loaded = json.loads(Path(client.download_artifacts(run_id, "config/resolved.json", str(tmp_path / "dl"))).read_text())
    assert loaded == {"a": 1, "b": [1, 2]}
    text = Path(client.download_artifacts(run_id, "notes/readme.txt", str(tmp_path / "dl"))).read_text()
    assert text == "some text"
    copied = Path(client.download_artifacts(run_id, "files/note.txt", str(tmp_path / "dl"))).read_text()
    assert copied == "hello artifact\n"
    # Artifacts live next to the sqlite database, not in the current directory.
    assert (tmp_path / "store" / "mlartifacts").is_dir()

    runs = find_runs(store_uri, "exp-a", "tags.arm = 'supo'")
    assert [r.info.run_id for r in runs] == [run_id]
    assert find_runs(store_uri, "exp-a", "tags.arm = 'grpo'") == []
    assert find_runs(store_uri, "no-such-experiment") == []


def test_many_params_are_logged_in_chunks(store_uri: str) -> None:
    params = {f"group.key_{i:03d}": i for i in range(250)}
    with Tracker(store_uri, "exp-many", "run", params=params) as tracker:
        run_id = tracker.run_id
    logged = _client(store_uri).get_run(run_id).data.params
    assert len(logged) == 250
    assert logged["group.key_249"] == "249"


def test_nested_params_are_flattened(store_uri: str) -> None:
    with Tracker(store_uri, "exp-nested", "run", params={"train": {"lr": 0.5, "opt": {"beta": 2}}}) as tracker:
        run_id = tracker.run_id
    assert _client(store_uri).get_run(run_id).data.params == {"train.lr": "0.5", "train.opt.beta": "2"}


def test_resume_continues_same_run_and_metric_history(store_uri: str) -> None:
    with Tracker(store_uri, "exp-r", "train", params={"train.lr": 0.1}) as first:
        run_id = first.run_id
        first.log_metrics({"loss": 3.0}, step=0)
        first.log_metrics({"loss": 2.0}, step=1)
    client = _client(store_uri)
    assert client.get_run(run_id).info.status == "FINISHED"

    resumed = Tracker(
        store_uri, "exp-r", "train", params={"train.lr": 0.1, "train.steps": 4}, resume_run_id=run_id
    )
    assert resumed.run_id == run_id
    assert client.get_run(run_id).info.status == "RUNNING"
    with resumed:
        resumed.log_metrics({"loss": 1.0}, step=2)

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"train.lr": "0.1", "train.steps": "4"}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    # Resuming did not create a second run.
    assert len(find_runs(store_uri, "exp-r")) == 1


def test_resume_unknown_run_raises(store_uri: str) -> None:
    with pytest.raises(ValueError, match="resume_run_id='0123456789abcdef'"):
        Tracker(store_uri, "exp-x", "r", resume_run_id="0123456789abcdef")


def test_nested_run_carries_parent_tag(store_uri: str) -> None:
    with Tracker(store_uri, "exp-n", "train-supo") as parent:
        with Tracker(store_uri, "exp-n", "eval-s3", parent_run_id=parent.run_id) as child:
            child_id = child.run_id
        parent_id = parent.run_id
    tags = _client(store_uri).get_run(child_id).data.tags
    assert tags["mlflow.parentRunId"] == parent_id
    children = find_runs(store_uri, "exp-n", f"tags.mlflow.parentRunId = '{parent_id}'")
    assert [r.info.run_id for r in children] == [child_id]


def test_exception_inside_with_ends_failed(store_uri: str) -> None:
    run_id = ""
    with pytest.raises(RuntimeError, match="boom"):
        with Tracker(store_uri, "exp-f", "crashing") as tracker:
            run_id = tracker.run_id
            raise RuntimeError("boom")
    assert _client(store_uri).get_run(run_id).info.status == "FAILED"


def test_end_is_idempotent_and_validates_status(store_uri: str) -> None:
    tracker = Tracker(store_uri, "exp-e", "r")
    with pytest.raises(ValueError, match="DONE"):
        tracker.end("DONE")
    tracker.end("KILLED")
    tracker.end("FINISHED")  # ignored: already ended
    assert _client(store_uri).get_run(tracker.run_id).info.status == "KILLED"


def test_long_param_value_is_truncated(store_uri: str) -> None:
    long_value = "x" * (MAX_PARAM_VAL_LENGTH + 500)
    with Tracker(store_uri, "exp-l", "r", params={"prompt.system": long_value, "short": "y"}) as tracker:
        run_id = tracker.run_id
    params = _client(store_uri).get_run(run_id).data.params
    assert params["prompt.system"] == "x" * MAX_PARAM_VAL_LENGTH
    assert params["short"] == "y"


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    flag_uri = f"sqlite:///{tmp_path / 'flag' / 'a.db'}"
    env_uri = f"sqlite:///{tmp_path / 'env' / 'b.db'}"
    config_uri = "sqlite:///config_dir/nested/c.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    assert resolve_tracking_uri(flag_uri, config_uri) == flag_uri
    assert tracking_uri_source(flag_uri, config_uri) == (flag_uri, "--tracking-uri")
    assert resolve_tracking_uri(None, config_uri) == env_uri
    assert resolve_tracking_uri("", config_uri) == env_uri
    assert tracking_uri_source(None, config_uri) == (env_uri, "MLFLOW_TRACKING_URI")

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri_source(None, config_uri) == (config_uri, "tracking.uri")
    assert resolve_tracking_uri(None, "") == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    # Nothing is created on the way: a missing folder is for supo.preflight to refuse, not to make silently.
    assert not any((tmp_path / d).exists() for d in ("flag", "env", "config_dir"))
    # Non-sqlite URIs are passed through untouched.
    assert resolve_tracking_uri("http://127.0.0.1:5000", config_uri) == "http://127.0.0.1:5000"


def _finished_run(uri: str) -> str:
    with Tracker(uri, "exp-resume", "train") as first:
        first.log_metrics({"loss": 1.0}, step=0)
        return first.run_id


def test_a_resume_that_fails_before_logging_keeps_the_runs_status(store_uri: str) -> None:
    run_id = _finished_run(store_uri)
    client = _client(store_uri)
    end_time = client.get_run(run_id).info.end_time
    with pytest.raises(FileNotFoundError):
        with Tracker(store_uri, "exp-resume", "train", resume_run_id=run_id):
            raise FileNotFoundError("trainer_state.pt")  # e.g. the checkpoint turned out unreadable
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time == end_time


def test_a_resume_that_fails_after_logging_ends_failed(store_uri: str) -> None:
    run_id = _finished_run(store_uri)
    with pytest.raises(RuntimeError):
        with Tracker(store_uri, "exp-resume", "train", resume_run_id=run_id) as tr:
            tr.log_metrics({"loss": 0.5}, step=1)
            raise RuntimeError("the engine died at step 1")
    assert _client(store_uri).get_run(run_id).info.status == "FAILED"


def test_description_and_run_link(store_uri: str) -> None:
    with Tracker(store_uri, "exp-link", "array-train-supo-seed0") as train:
        pass
    link = run_link(store_uri, train.run_id)
    assert link == f"[array-train-supo-seed0](#/experiments/{train.experiment_id}/runs/{train.run_id})"
    assert run_link(store_uri, "0123456789abcdef") is None
    with Tracker(store_uri, "exp-link", "eval", description=f"trained in {link}") as ev:
        pass
    assert _client(store_uri).get_run(ev.run_id).data.tags["mlflow.note.content"] == f"trained in {link}"


def test_log_figures_stores_matplotlib_figures(store_uri: str, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0.1, 0.4, 0.3], label="supo")
    with Tracker(store_uri, "exp-fig", "report") as tr:
        paths = log_figures(store_uri, tr.run_id, {"array-success_vs_s_eval": fig, "curves.svg": fig})
    plt.close(fig)
    assert paths == ["figures/array-success_vs_s_eval.png", "figures/curves.svg"]
    listed = {a.path for a in _client(store_uri).list_artifacts(tr.run_id, "figures")}
    assert listed == set(paths)
    local = _client(store_uri).download_artifacts(tr.run_id, paths[0], str(tmp_path))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
