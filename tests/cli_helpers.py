"""What the CLI tests share (tests/test_cli.py, test_cli_inputs.py, test_cli_results.py): the miniature params, the
CLI run as a subprocess or in process, a staged run folder, a finished training run, and the input-error check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "env": {"num_train": 60, "num_test": 8, "train_min_len": 6, "train_max_len": 12, "test_min_len": 10,
            "test_max_len": 14},
    "expert": {"num_demos": 80},
    "model": {"hidden_size": 64, "num_heads": 1, "num_kv_heads": 1, "num_layers": 2, "intermediate_size": 128},
    "budget": {"max_summaries": 2, "max_steps": 16},  # bounds the near-random miniature models' rollouts
    "rollout": {"group_size": 2, "tasks_per_step": 2},
    "sft": {"steps": 20, "batch_size": 8},
    "train": {"steps": 2, "log_rollouts_every": 1},
    "eval": {"num_tasks": 4, "max_summaries": 2, "sweep": [0, 2]},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def write_params(folder: Path, extra: dict | None = None) -> Path:
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), merge(TINY, extra or {}))
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def cli(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "SUPO_PROGRESS": "0", **(env or {})}
    e.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"supo-cli {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_cli(*args: str, env: dict | None = None):
    """``supo-cli`` in this process (typer's runner; stdout and stderr apart), without MLFLOW_TRACKING_URI unless
    ``env`` sets it."""
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner(env={"SUPO_PROGRESS": "0", "MLFLOW_TRACKING_URI": None, **(env or {})}).invoke(app, list(args))


def stage_run(tmp_path: Path, monkeypatch, tiny_model_dir: Path) -> Path:
    """A run folder as `prepare` and `sft` leave it, built directly: params.yaml, array task splits (60 train, 8
    test), the tiny model as models/sft and as a trained checkpoint; the current folder."""
    from supo.data import write_tasks
    from supo.envs.array import make_tasks

    write_params(tmp_path, {"budget": {"working_context": 200}, "engine": {"max_model_len": 512}})
    write_tasks(make_tasks("train", 60, 6, 12, ["max", "sum"], 99, seed=0), tmp_path / "data/train.parquet")
    write_tasks(make_tasks("test", 8, 10, 14, ["max", "sum"], 99, seed=0), tmp_path / "data/test.parquet")
    shutil.copytree(tiny_model_dir, tmp_path / "models/sft")
    shutil.copytree(tiny_model_dir, tmp_path / "checkpoints/seed0/supo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def finish_run(staged: Path, tiny_model_dir: Path, tiny_tokenizer) -> tuple[str, str]:
    """A FINISHED training run in a real sqlite store and its checkpoint (supo.checkpoint) under
    checkpoints/seed0/supo/steps, as `train` leaves them."""
    from supo.checkpoint import save_checkpoint
    from supo.models import load_policy
    from supo.tracking import Tracker

    uri = f"sqlite:///{staged / 'mlflow.db'}"
    with Tracker(uri, "supo-tiny", "array-train-supo-seed0", tags={"stage": "train"}) as tr:
        tr.log_metrics({"mean_reward": 0.5}, step=0)
        run_id = tr.run_id
    save_checkpoint(staged / "checkpoints/seed0/supo/steps", step=1, model=load_policy(tiny_model_dir),
                    tokenizer=tiny_tokenizer, trainer_state={"updates": 1}, history=[{"step": 0}],
                    mlflow_run_id=run_id)
    return uri, run_id


def assert_input_error(result, *needles: str) -> str:
    """Exit code 2 and one ``error:`` line naming every needle, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and all(" INFO mlflow." in line for line in lines if line not in errors), lines
    assert "Traceback" not in result.output
    err = errors[0]
    for needle in needles:
        assert needle in err, err
    return err


def no_runs(db: Path) -> bool:
    """True when the sqlite store ``db`` holds no MLflow run (or does not exist)."""
    from mlflow import MlflowClient

    if not db.exists():
        return True
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    return not client.search_runs([e.experiment_id for e in client.search_experiments()])
