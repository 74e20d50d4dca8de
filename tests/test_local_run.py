"""A whole run without Ray, MLflow or vLLM: ``supo-cli prepare``, ``sft``, ``train`` (``trainer.backend: local``, one
in-process rank) and ``eval`` with ``engine.backend: hf``, in a process where ``ray``, ``mlflow`` and ``vllm`` cannot
be imported (``tests/hidden_modules/sitecustomize.py``), on the CLI tests' miniature params. Tracking degrades to JSON
files and says so in one line. Also: the local backend's conflicts are named at load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import REPO, cli, write_params

HIDDEN = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "hidden_modules"), os.environ.get("PYTHONPATH", "")]),
          "SUPO_HIDE_MODULES": "ray,mlflow,vllm"}
LOCAL = ["-S", "trainer.backend=local", "-S", "engine.backend=hf"]


@pytest.mark.slow
def test_prepare_sft_train_eval_without_ray_mlflow_or_vllm(tmp_path: Path):
    write_params(tmp_path)
    probe = cli("prepare", "--help", cwd=tmp_path, env=HIDDEN)  # the CLI answers with the three hidden
    assert probe.returncode == 0
    hidden = subprocess.run([sys.executable, "-c", "import ray"], env={**os.environ, **HIDDEN}, capture_output=True,
                            text=True)
    assert hidden.returncode != 0 and "hidden by SUPO_HIDE_MODULES" in hidden.stderr  # the hiding is real
    cli("prepare", *LOCAL, cwd=tmp_path, env=HIDDEN)
    sft = cli("sft", *LOCAL, cwd=tmp_path, env=HIDDEN)
    assert sft.stderr.count("mlflow is not installed") == 1, sft.stderr
    train = cli("train", "--arm", "supo", *LOCAL, cwd=tmp_path, env=HIDDEN)
    assert "local actors up" in train.stdout and "no Ray" in train.stdout
    history = json.loads((tmp_path / "checkpoints/seed0/supo/train_metrics.json").read_text())
    rows = history["history"] if isinstance(history, dict) else history
    assert len(rows) == 2 and all(r["train_samples"] > 0 for r in rows)
    assert (tmp_path / "checkpoints/seed0/supo/model.safetensors").exists()
    ev = cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--arm", "supo", *LOCAL, "--out", "evals/supo",
             cwd=tmp_path, env=HIDDEN)
    assert ev.returncode == 0
    outcomes = json.loads((tmp_path / "evals/supo/outcomes.json").read_text())
    assert outcomes  # one outcome per task (and S_eval view)
    runs = list((tmp_path / "tracking_runs").glob("*/*/run.json"))
    tags = [json.loads(p.read_text())["tags"] for p in runs]
    assert {"sft", "train", "eval"} <= {t.get("stage") for t in tags}
    assert all(t.get("own_setting") == "true" for t in tags if t.get("stage") == "eval")  # supo at its own S, W
    metrics = [json.loads(line) for p in (tmp_path / "tracking_runs").glob("*/*/metrics.jsonl")
               for line in p.read_text().splitlines()]
    assert any(m["key"] == "mean_reward" for m in metrics)


@pytest.mark.parametrize("override, needle", [
    ("trainer.world_size=2", "trainer.world_size: trainer.backend local runs one rank"),
    ("rollout.num_workers=2", "rollout.num_workers: trainer.backend local runs one engine"),
    ("train.overlap=true", "train.overlap: trainer.backend local runs rollouts and updates in turn"),
    ("trainer.weight_sync=nccl", "trainer.weight_sync: trainer.backend local passes the weights in process"),
])
def test_the_local_backends_conflicts_are_named(override, needle):
    from supo.config import load_config
    from supo.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        load_config(str(REPO / "params.yaml"), {"trainer.backend": "local", override.split("=")[0]:
                                                yaml_value(override.split("=")[1])})


def yaml_value(text: str):
    import yaml

    return yaml.safe_load(text)


def test_unknown_backends_are_named():
    from supo.config import load_config
    from supo.errors import ConfigError

    with pytest.raises(ConfigError, match="engine.backend: unknown backend 'sglang'; choose one of vllm, hf"):
        load_config(str(REPO / "params.yaml"), {"engine.backend": "sglang"})
    with pytest.raises(ConfigError, match="trainer.backend: unknown backend 'k8s'; choose one of ray, local"):
        load_config(str(REPO / "params.yaml"), {"trainer.backend": "k8s"})
