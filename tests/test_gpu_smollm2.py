"""scripts/gpu_smollm2.sh's CPU miniature (``MINI=1``): the very steps the GPU run takes — the GGUF cut into parts
(scripts/split_smollm2.sh) and joined again (its sha256 checked), SmolLM2 imported, prepare, the base model's eval,
SFT, the warm start's val eval, GRPO-W and SUPO on the transformers engine with the in-process trainer, the sweep, the
report and the summary — in a copy of the repository, with ``ray``, ``mlflow`` and ``vllm`` impossible to import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src, dst = REPO / name.decode(), dest / name.decode()
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())


def test_the_gpu_script_runs_its_cpu_miniature_without_ray_mlflow_or_vllm(tmp_path: Path, smollm2_gguf: Path):
    repo = tmp_path / "repo"
    _copy_repo(repo)
    env = {**os.environ, "PY": sys.executable, "SUPO_SMOLLM2_GGUF": str(smollm2_gguf), "SUPO_PROGRESS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    parts = tmp_path / "parts"
    split = subprocess.run(["bash", "scripts/split_smollm2.sh", str(parts)], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=300)
    assert split.returncode == 0, split.stderr
    pieces = sorted(parts.glob("smollm2.gguf.part-*"))
    assert len(pieces) == 2 and all(p.stat().st_size <= 48 * 2**20 for p in pieces)
    first, second = tmp_path / "call1", tmp_path / "call2"  # the two calls' folders, as on the device
    first.mkdir(), second.mkdir()
    pieces[0].rename(first / pieces[0].name), pieces[1].rename(second / pieces[1].name)
    hidden = {"PYTHONPATH": str(REPO / "tests" / "hidden_modules"), "SUPO_HIDE_MODULES": "ray,mlflow,vllm"}
    out = tmp_path / "out"
    run = subprocess.run(["bash", "scripts/gpu_smollm2.sh"], cwd=repo, capture_output=True, text=True, timeout=1500,
                         env={**env, **hidden, "MINI": "1", "FORCE_PARTS": "1", "OUT": str(out),
                              "GGUF_PARTS": f"{first} {second}"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "SmolLM2-135M-Instruct.Q4_1.gguf: OK" in run.stdout  # the joined parts are the file
    assert "mlflow is not installed" in run.stderr
    stages = [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines()]
    names = [s["stage"] for s in stages]
    assert names[:2] == ["import", "prepare@array"] and "eval_val@array" in names and names[-1] == "report"
    assert all(s["returncode"] == 0 for s in stages)
    summary = json.loads((out / "summary.json").read_text())["envs"]["array"]
    assert {"base", "sft", "grpo-w", "supo"} <= set(summary["cells"])
    for label, by_s in summary["cells"].items():
        for c in by_s.values():
            assert c["n"] == 2 and 0 <= c["low"] <= c["success"] <= c["high"] <= 1
    assert summary["val_warm_start"] and set(summary["train"]) == {"grpo-w", "supo"}
    assert all(t["steps"] == 1 and t["rollout_tokens_per_s"] > 0 for t in summary["train"].values())
    md = (out / "summary.md").read_text()
    assert "Warm start on val" in md and "reward first 3 → last 3" in md
    history = json.loads((repo / "runs/smollm2-gpu/checkpoints/array/seed0/supo/train_metrics.json").read_text())
    assert len(history["history"]) == 1
