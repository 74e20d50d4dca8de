"""scripts/gpu_trainer_check.py: its check mode, run on the CPU (gloo) over a tiny model and random samples, agrees
where the computations are the same and reports a disagreement it is given. Each check runs in a fresh process (it
starts a default process group, as the GPU machine's run does)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from supo.config import TrainConfig
from algo_helpers import PAD_ID, make_sample, tiny_qwen2

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_trainer_check.py"
# the fault: the trainer rank trains on half the samples
HALF = """
import runpy, sys
from supo.distributed.trainer_rank import TrainerRank
update = TrainerRank.update
TrainerRank.update = lambda self, samples: update(self, list(samples)[: len(samples) // 2])
sys.argv = sys.argv[1:]  # python -c CODE SCRIPT ARGS: argv is ["-c", SCRIPT, ARGS]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def dumped(tmp_path_factory) -> Path:
    """The dump mode's layout (samples.pkl + model/) with a tiny float32 Qwen2 and random samples."""
    folder = tmp_path_factory.mktemp("gpucheck")
    tiny_qwen2(seed=1, layers=2, dtype=torch.float32).save_pretrained(str(folder / "model"))
    samples = [make_sample(6 + i % 5, 4 + i % 7, seed=i) for i in range(12)]
    train = TrainConfig(mini_batches=2, micro_batch_size=4, lr=1e-4)
    with open(folder / "samples.pkl", "wb") as f:
        pickle.dump({"steps": [samples], "train": train, "pad_id": PAD_ID, "max_seq_len": 32, "temperature": 1.0,
                     "seed": 0}, f)
    return folder


def run_check(folder: Path, out: Path, device: str = "cpu", prelude: str | None = None):
    args = [str(SCRIPT), "check", "--dir", str(folder), "--out", str(out), "--device", device, "--repeats", "1",
            "--step", "0"]
    cmd = [sys.executable, "-c", prelude, *args] if prelude else [sys.executable, *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_check_on_the_cpu_agrees_with_itself(dumped, tmp_path):
    proc = run_check(dumped, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    res = json.loads((tmp_path / "check.json").read_text())
    assert all(res["agree"].values())
    assert res["backend"] == "gloo" and res["rank"]["world_size"] == 1
    assert res["rel_dev_vs_cpu"] == 0.0  # the same device: the same computation
    assert res["rel_fsdp_vs_plain"] < 1e-6  # FSDP2 at world size 1 is the plain update
    assert 0.0 <= res["rel_unpacked_vs_packed"] < 1e-3  # packing is exact up to summation order
    assert res["forward_tokens_packed"] <= res["forward_tokens_unpacked"]
    assert "| kl_to_init" in (tmp_path / "check.md").read_text()


def test_check_reports_an_update_that_differs(dumped, tmp_path):
    proc = run_check(dumped, tmp_path, prelude=HALF)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    res = json.loads((tmp_path / "check.json").read_text())
    assert res["agree"]["fsdp_vs_plain"] is False and res["rel_fsdp_vs_plain"] > 1e-2
    assert res["agree"]["dev_vs_cpu"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_check_without_cuda_says_so(dumped, tmp_path):
    proc = run_check(dumped, tmp_path, device="cuda")
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stdout
