"""supo.preflight on real files with faults injected into them: safetensors written by the package's model builder and
then truncated, checkpoints written by supo.checkpoint and then damaged, seeds, task counts, output folders and metrics
files; and the runtime-failure report of cli/errors.py. The tracking-store checks (real sqlite stores and HTTP
servers): tests/test_preflight_tracking.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from supo.preflight import (
    PreflightError,
    check_metrics_file,
    check_model_dir,
    check_num_tasks,
    check_resume,
    check_safetensors,
    check_seed,
    check_state_json,
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
