"""Tracking without MLflow: :class:`supo.tracking_json.JsonTracker` writes its files, and the CLI's tracker falls back to
it (with its one-line note) in a process where MLflow is hidden by ``tests/hidden_modules/sitecustomize.py``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from supo.tracking_json import JsonTracker, announce_fallback, fallback_note, mlflow_available, run_folder

REPO = Path(__file__).resolve().parents[1]
HIDDEN = REPO / "tests" / "hidden_modules"


def _run(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------------------------------
# JsonTracker


def test_params_tags_metrics_artifacts_land_in_files(tmp_path: Path) -> None:
    local = tmp_path / "note.txt"
    local.write_text("hello artifact\n")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "a.csv").write_text("x,y\n1,2\n")
    with JsonTracker("supo tiny/exp", "train-supo", params={"train": {"lr": 1e-6}, "env.tools": ["search"]},
                     tags={"arm": "supo", "seed": 3}, description="a run", root=tmp_path / "runs") as tr:
        folder = tr.folder
        assert folder == run_folder("supo tiny/exp", tr.run_id, tmp_path / "runs")
        assert folder.parent.name == "supo_tiny_exp" and len(tr.run_id) == 32 and int(tr.run_id, 16) >= 0
        assert _run(folder)["status"] == "RUNNING" and _run(folder)["end_time"] is None
        for step in range(3):
            tr.log_metrics({"mean_reward": 0.1 * step, "skipped": None, "flag": True}, step=step)
        tr.log_metrics({"nan": float("nan"), "inf": float("inf"), "text": "x"}, step=3)  # nothing to write
        tr.log_params({"model": {"name": "tiny"}, "train.lr": 5.0})  # train.lr is kept
        tr.set_tags({"overlong_warning": "yes"})
        tr.log_dict({"a": 1, "b": [1, 2]}, "config/resolved.json")
        tr.log_dict({"a": 1}, "config/resolved.yaml")
        tr.log_text("some text", "notes/readme.txt")
        tr.log_artifact(local, "files")
        tr.log_artifact(plots, "plots")
        tr.log_artifact(local)

    run = _run(folder)
    assert run["status"] == "FINISHED" and run["end_time"] >= run["start_time"]
    assert run["run_name"] == "train-supo" and run["experiment"] == "supo tiny/exp" and run["description"] == "a run"
    assert run["params"] == {"train.lr": "1e-06", "env.tools": "['search']", "model.name": "tiny"}
    assert run["tags"] == {"arm": "supo", "seed": "3", "overlong_warning": "yes"}
    rows = _metrics(folder)
    assert [(m["key"], m["step"], round(m["value"], 6)) for m in rows] == [("mean_reward", s, 0.1 * s) for s in range(3)]
    assert all(isinstance(m["timestamp"], int) for m in rows)
    art = folder / "artifacts"
    assert json.loads((art / "config/resolved.json").read_text()) == {"a": 1, "b": [1, 2]}
    assert (art / "config/resolved.yaml").read_text() == "a: 1\n"
    assert (art / "notes/readme.txt").read_text() == "some text"
    assert (art / "files/note.txt").read_text() == "hello artifact\n" and (art / "note.txt").exists()
    assert (art / "plots/a.csv").read_text() == "x,y\n1,2\n"
    assert not list(folder.rglob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        tr.log_artifact(tmp_path / "missing.txt")


def test_exception_ends_failed_and_end_is_final(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), JsonTracker("e", "r", root=tmp_path) as tr:
        raise RuntimeError("boom")
    assert _run(tr.folder)["status"] == "FAILED"
    tr.end("FINISHED")  # later calls do nothing
    assert _run(tr.folder)["status"] == "FAILED"
    with pytest.raises(ValueError, match="FINISHED, FAILED or KILLED"):
        JsonTracker("e", "r2", root=tmp_path).end("DONE")


def test_resume_appends_to_the_same_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with JsonTracker("e", "train", params={"lr": 1}, tags={"a": "1"}, root=tmp_path) as first:
        first.log_metrics({"loss": 2.0}, step=0)
    with caplog.at_level(logging.WARNING), \
            JsonTracker("e", "ignored", params={"lr": 2, "steps": 4}, tags={"b": "2"}, resume_run_id=first.run_id,
                        root=tmp_path) as again:
        assert again.folder == first.folder and again.run_name == "train"
        assert _run(again.folder)["status"] == "RUNNING" and _run(again.folder)["end_time"] is None
        again.log_metrics({"loss": 1.0}, step=1)
    assert "already has param 'lr'" in caplog.text
    run = _run(first.folder)
    assert run["status"] == "FINISHED" and run["params"] == {"lr": "1", "steps": "4"}
    assert run["tags"] == {"a": "1", "b": "2"}
    assert [(m["step"], m["value"]) for m in _metrics(first.folder)] == [(0, 2.0), (1, 1.0)]
    assert len(list((tmp_path / "e").iterdir())) == 1


def test_resume_failing_before_logging_keeps_the_previous_status(tmp_path: Path) -> None:
    with JsonTracker("e", "train", root=tmp_path) as first:
        pass
    before = _run(first.folder)
    with pytest.raises(RuntimeError), JsonTracker("e", "train", resume_run_id=first.run_id, root=tmp_path):
        raise RuntimeError("failed before logging")
    after = _run(first.folder)
    assert (after["status"], after["end_time"]) == ("FINISHED", before["end_time"])


def test_resume_of_an_unknown_run_names_its_folder(tmp_path: Path) -> None:
    missing = run_folder("e", "0" * 32, tmp_path)
    with pytest.raises(FileNotFoundError, match=f"'{'0' * 32}'.*{missing}"):
        JsonTracker("e", "train", resume_run_id="0" * 32, root=tmp_path)
    assert not missing.exists()


def test_note_and_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mlflow_available()  # the test environment has MLflow
    assert fallback_note("tracking_runs") == ("tracking: mlflow is not installed — runs are logged as JSON files "
                                              "under tracking_runs (pip install mlflow for the UI)")
    assert "nothing is logged" in fallback_note(None)
    monkeypatch.setattr("supo.tracking_json._ANNOUNCED", [])
    lines: list[str] = []
    announce_fallback(lines.append)
    announce_fallback(lines.append, None)
    assert lines == [fallback_note()]


# --------------------------------------------------------------------------------------------------------------------
# the CLI's tracker in a process without MLflow


def _hidden_python(code: str, cwd: Path, hide: str = "mlflow") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HIDDEN), str(REPO)]), "SUPO_HIDE_MODULES": hide,
           "SUPO_PROGRESS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_hidden_mlflow_cannot_be_imported(tmp_path: Path) -> None:
    proc = _hidden_python("import mlflow", tmp_path)
    assert proc.returncode != 0
    assert "No module named 'mlflow' (hidden by SUPO_HIDE_MODULES)" in proc.stderr
    proc = _hidden_python("""
        import importlib.util, sys
        from supo.tracking_json import mlflow_available
        assert importlib.util.find_spec("mlflow") is None and not mlflow_available()
        for name in ("mlflow", "mlflow.entities"):  # the package and its submodules
            try:
                sys.meta_path[0].find_spec(name, None)
            except ModuleNotFoundError as e:
                assert str(e) == f"No module named '{name}' (hidden by SUPO_HIDE_MODULES)" and e.name == name, e
            else:
                raise AssertionError(f"{name} not hidden")
        assert sys.meta_path[0].find_spec("mlflow_other", None) is None
        import yaml  # other packages are untouched
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_cli_tracker_falls_back_to_json_files(tmp_path: Path) -> None:
    proc = _hidden_python("""
        import json, sys
        import cli.main  # every command module imports without MLflow
        from cli.app import tracker
        from cli.support import check_tracked_run, load, tracking_uri
        from supo.preflight import PreflightError

        cfg = load("params.yaml", None)
        tracking_uri(cfg, None)
        with tracker(cfg, "sft", None, {"stage": "sft", "arm": "sft"}) as tr:
            tr.log_metrics({"loss": 1.5, "skipped": float("nan")}, step=3)
        check_tracked_run("sqlite:///mlflow.db", cfg.tracking.experiment, tr.run_id, "--resume")
        try:
            check_tracked_run("sqlite:///mlflow.db", cfg.tracking.experiment, "f" * 32, "--resume")
        except PreflightError as e:
            print("refused:", e)
        with tracker(cfg, "eval-supo-seed0-s2", None, {"stage": "eval", "arm": "supo", "s_eval": "2"}, tr.run_id,
                     description="Eval of `ckpt`") as ev:
            pass
        with tracker(cfg, "sft", None, {"stage": "sft", "arm": "sft"}, resume_run_id=tr.run_id) as again:
            again.log_metrics({"loss": 1.0}, step=4)
        assert not any(m == "mlflow" or m.startswith(("mlflow.", "supo.tracking.")) or m == "supo.tracking"
                       for m in sys.modules), sorted(m for m in sys.modules if "mlflow" in m or "tracking" in m)
        print(json.dumps({"sft": tr.run_id, "eval": ev.run_id, "experiment": cfg.tracking.experiment,
                          "env": cfg.env.name}))
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    ids = json.loads(proc.stdout.splitlines()[-1])
    note = fallback_note()
    assert proc.stderr.count("mlflow is not installed") == 1 and note in proc.stderr.splitlines()
    assert f"refused: --resume: run {'f' * 32} is not in" in proc.stdout
    sft = run_folder(ids["experiment"], ids["sft"], tmp_path / "tracking_runs")
    run = _run(sft)
    assert run["run_name"] == f"{ids['env']}-sft" and run["status"] == "FINISHED"
    assert {"stage": "sft", "arm": "sft", "env": ids["env"]}.items() <= run["tags"].items()
    assert run["params"]["tracking.experiment"] == ids["experiment"]
    assert [(m["key"], m["value"], m["step"]) for m in _metrics(sft)] == [("loss", 1.5, 3), ("loss", 1.0, 4)]
    ev = _run(run_folder(ids["experiment"], ids["eval"], tmp_path / "tracking_runs"))
    assert ev["tags"]["checkpoint_run_id"] == ids["sft"] and ev["tags"]["s_eval"] == "2"
    assert ev["description"] == f"Eval of `ckpt`; trained in run {ids['sft']}"


def _cli_hidden(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return _hidden_python(f"""
        import sys
        sys.argv = ["supo-cli", *{list(args)!r}]
        from cli.main import app
        app()
        """, cwd)


def test_cli_ui_needs_mlflow(tmp_path: Path) -> None:
    proc = _cli_hidden(tmp_path, "ui")
    assert proc.returncode == 2, proc.stderr
    assert "supo-cli ui needs mlflow, which is not installed" in proc.stderr


def test_cli_report_writes_its_files_without_mlflow(tmp_path: Path) -> None:
    from test_report import RATES, _write_eval, _write_train

    for seed in (0, 1):
        for arm in ("sft", "grpo-w", "supo"):
            for s_eval in (0, 4):
                _write_eval(tmp_path / "evals", arm, seed, s_eval, RATES[arm][s_eval])
            if arm != "sft":
                _write_train(tmp_path / "checkpoints", arm, seed)
    proc = _cli_hidden(tmp_path, "report", "-S", "pipeline.arms=[grpo-w,supo]", "-S", "pipeline.seeds=[0,1]",
                       "-S", "pipeline.envs=[array]")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines().count(fallback_note(None)) == 1
    assert "report -> reports/report.md" in proc.stdout and "MLflow run" not in proc.stdout
    assert (tmp_path / "reports/summary.json").exists() and not (tmp_path / "mlflow.db").exists()
