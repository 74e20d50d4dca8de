"""scripts/gpu_trainer_check.py: its check mode, run on the CPU (gloo) over a tiny model and random samples, agrees
where the computations are the same and reports a disagreement it is given."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import pytest
import torch

from supo.config import TrainConfig
from algo_helpers import PAD_ID, make_sample, tiny_qwen2

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_trainer_check.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gpu_trainer_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_check_on_the_cpu_agrees_with_itself(script, dumped, tmp_path):
    rc = script.check(dumped, tmp_path, "cpu", repeats=1, step=0)
    res = json.loads((tmp_path / "check.json").read_text())
    assert rc == 0 and all(res["agree"].values())
    assert res["backend"] == "gloo" and res["rank"]["world_size"] == 1
    assert res["rel_dev_vs_cpu"] == 0.0  # the same device: the same computation
    assert res["rel_fsdp_vs_plain"] < 1e-6  # FSDP2 at world size 1 is the plain update
    assert 0.0 <= res["rel_unpacked_vs_packed"] < 1e-3  # packing is exact up to summation order
    assert res["forward_tokens_packed"] <= res["forward_tokens_unpacked"]
    assert "| kl_to_init" in (tmp_path / "check.md").read_text()


def test_check_reports_an_update_that_differs(script, dumped, tmp_path, monkeypatch):
    from supo.distributed.trainer_rank import TrainerRank

    update = TrainerRank.update
    monkeypatch.setattr(TrainerRank, "update", lambda self, samples: update(self, list(samples)[: len(samples) // 2]))
    rc = script.check(dumped, tmp_path, "cpu", repeats=1, step=0)
    res = json.loads((tmp_path / "check.json").read_text())
    assert rc == 1
    assert res["agree"]["fsdp_vs_plain"] is False and res["rel_fsdp_vs_plain"] > 1e-2
    assert res["agree"]["dev_vs_cpu"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_check_without_cuda_says_so(script, dumped, tmp_path, capsys):
    assert script.check(dumped, tmp_path, "cuda", repeats=1, step=0) == 2
    assert "no CUDA device" in capsys.readouterr().out
