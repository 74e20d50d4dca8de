"""The CLI's inputs, each checked before any start-up (issue 12's table, one test per row, each fault injected into a
real file or a real store), runtime failures with their cause first, and the CLI's help, config and version."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import yaml
from cli_helpers import (
    REPO,
    assert_input_error,
    cli,
    finish_run,
    no_runs,
    run_cli,
    stage_run,
)


@pytest.fixture
def staged(tmp_path, monkeypatch, tiny_model_dir):
    return stage_run(tmp_path, monkeypatch, tiny_model_dir)


@pytest.fixture
def finished_run(staged, tiny_model_dir, tiny_tokenizer):
    return finish_run(staged, tiny_model_dir, tiny_tokenizer)


def test_eval_of_a_truncated_checkpoint_fails_before_the_engine(staged):
    weights = staged / "checkpoints/seed0/supo/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo")
    assert_input_error(result, "--checkpoint checkpoints/seed0/supo", str(weights.relative_to(staged)), "truncated")
    assert no_runs(staged / "mlflow.db")


@pytest.mark.parametrize("file, keep", [("model.safetensors", -64), ("trainer_state.pt", 100), ("state.json", 20)])
def test_a_failed_resume_names_the_file_and_leaves_the_run_finished(staged, finished_run, file, keep):
    from mlflow import MlflowClient

    uri, run_id = finished_run
    damaged = staged / "checkpoints/seed0/supo/steps/step_000001" / file
    damaged.write_bytes(damaged.read_bytes()[:keep])
    result = run_cli("train", "--algo", "supo", "--resume", "--tracking-uri", uri)
    assert_input_error(result, "--resume", file)
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FINISHED"


def test_a_resume_whose_run_is_not_in_the_store_fails_before_reopening(staged, finished_run, tmp_path_factory):
    other = tmp_path_factory.mktemp("other") / "mlflow.db"
    result = run_cli("train", "--algo", "supo", "--resume", "--tracking-uri", f"sqlite:///{other}")
    assert_input_error(result, "--resume", "state.json", f"MLflow run {finished_run[1]} is not in")


def test_a_tracking_server_that_does_not_answer_fails_in_seconds(staged):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo",
                     env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert_input_error(result, f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}", "no tracking server answers")
    assert time.monotonic() - t0 < 30  # was ~260 s of retries


def test_an_unknown_tracking_scheme_is_named(staged):
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo", env={"MLFLOW_TRACKING_URI": "bogus://nowhere"})
    assert_input_error(result, "MLFLOW_TRACKING_URI=bogus://nowhere", "unknown scheme 'bogus'")


def test_a_sqlite_store_in_a_missing_folder_is_refused_not_created(staged):
    missing = staged / "nonexistent_dir"
    result = run_cli("train", "--algo", "supo", "--tracking-uri", f"sqlite:///{missing / 'x.db'}")
    assert_input_error(result, "--tracking-uri=sqlite:///", "nonexistent_dir does not exist")
    assert not missing.exists()


def test_a_task_row_with_a_wrong_env_config_is_named_when_the_split_is_read(staged):
    import pandas as pd

    path = staged / "data/test.parquet"
    df = pd.read_parquet(path)
    cfg = json.loads(df.loc[3, "env_config"])
    df.loc[3, "env_config"] = json.dumps({**cfg, "values": "abc"})
    df.to_parquet(path, index=False)
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo")
    assert_input_error(result, "data/test.parquet, row 3", "test-00003", "env_config.values", "'abc'")
    assert no_runs(staged / "mlflow.db")


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_negative_seed_names_the_flag(staged, command):
    args = ["--algo", "supo"] if command == "train" else ["--checkpoint", "checkpoints/seed0/supo"]
    assert_input_error(run_cli(command, *args, "--seed", "-1"), "--seed: must be in 0..")
    assert_input_error(run_cli(command, *args, "-S", "seed=-1"), "seed: must be in 0..")


@pytest.mark.parametrize("text, needle", [("", "is empty"), ("# only a comment\n", "is empty"),
                                          ("5\n", "expected a mapping of sections"), ("[a, b]\n", "got list")])
def test_an_empty_or_scalar_params_file_is_an_error(staged, text, needle):
    (staged / "params.yaml").write_text(text)
    assert_input_error(run_cli("config"), "params.yaml", needle)
    assert_input_error(run_cli("eval", "--checkpoint", "checkpoints/seed0/supo"), "params.yaml", needle)


def test_num_tasks_beyond_the_split_says_so(staged):
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--num-tasks", "1000")
    assert_input_error(result, "--num-tasks 1000: the split data/test.parquet holds only 8 tasks")


def test_a_runtime_failure_names_the_cause_first_and_logs_the_traceback(staged, monkeypatch):
    import supo.evaluate

    def failing_engine(*args, **kwargs):  # the fault: vLLM refusing the model after start-up began
        try:
            raise ValueError("head size 48 is not supported by the CPU attention backend")
        except ValueError as e:
            raise RuntimeError("Engine core initialization failed. See root cause above.") from e

    monkeypatch.setattr(supo.evaluate, "open_engine", failing_engine)
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo")
    err = result.stderr.strip()
    assert result.exit_code == 1 and len(err.splitlines()) == 1, result.output
    assert err.startswith("error: supo-cli eval failed in the engine's start-up on checkpoints/seed0/supo: "
                          "ValueError: head size 48 is not supported"), err
    log = staged / err.split("full traceback: ")[1].rstrip(")")
    assert log.parent == staged / "logs" and log.name.startswith("supo-eval-")
    assert "Engine core initialization failed" in log.read_text() and "Traceback" in log.read_text()

    debug = run_cli("--debug", "eval", "--checkpoint", "checkpoints/seed0/supo")
    assert debug.exit_code == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "failing_engine" in debug.stderr and len(list((staged / "logs").iterdir())) == 1


def test_eval_runs_are_tagged_and_linked_to_their_training_run_not_nested(staged):
    """The README's filters: `tags.s_eval = '3'` must return the eval runs themselves (a nested run would make the UI
    list its parent instead)."""
    from mlflow import MlflowClient

    from cli.app import tracker as _tracker
    from supo.config import load_config

    cfg = load_config(staged / "params.yaml", env="array")
    with _tracker(cfg, "train-supo-seed0", None, {"stage": "train", "arm": "supo"}) as tr:
        train_id = tr.run_id
    with _tracker(cfg, "eval-supo-seed0-s3", None, {"stage": "eval", "arm": "supo", "s_eval": "3"}, train_id,
                  description="Eval of `checkpoints/seed0/supo` at S_eval = 3") as ev:
        eval_id = ev.run_id
    client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
    exp = client.get_experiment_by_name("supo-tiny").experiment_id
    found = client.search_runs([exp], "tags.s_eval = '3'")
    assert [r.info.run_id for r in found] == [eval_id]
    tags = found[0].data.tags
    assert "mlflow.parentRunId" not in tags and tags["checkpoint_run_id"] == train_id
    assert {k: tags[k] for k in ("env", "arm", "seed", "stage")} == {"env": "array", "arm": "supo", "seed": "0",
                                                                     "stage": "eval"}
    assert f"[array-train-supo-seed0](#/experiments/{exp}/runs/{train_id})" in tags["mlflow.note.content"]
    assert [r.info.run_id for r in client.search_runs([exp], "tags.env = 'array' and tags.stage = 'train'")] == [
        train_id]


def test_help_lists_choices_and_shows_flags_without_a_type():
    train_help = cli("train", "--help", cwd=REPO).stdout
    assert "<bool>" not in train_help
    assert re.search(r"--resume\s+continue from", train_help)
    flat = " ".join(line.strip("│ ") for line in train_help.splitlines())
    assert "grpo-w, grpo-weff, supo, supo-no-mask, supo-eq4" in " ".join(flat.split())
    assert "(one of: array, search, codegym, browsecomp, bfcl, funcall)" in " ".join(flat.split())
    assert "<bool>" not in cli("--help", cwd=REPO).stdout
    assert cli("--version", cwd=REPO).stdout.strip() == "supo-cli 0.1.0"


def test_config_resolves_an_env_and_arm_and_docs_say_where_each_value_comes_from(staged):
    shown = yaml.safe_load(run_cli("config", "--env", "search", "--arm", "grpo-weff").stdout)
    assert shown["train"]["algo"] == "grpo" and shown["budget"]["working_context"] == 512 * 3
    assert shown["paths"]["data"] == "data/search"
    docs = run_cli("config", "--docs", "--env", "search", "--arm", "supo-eq4", "-S", "train.lr=0.5")
    assert docs.exit_code == 0, docs.output
    lines = {line.split()[0]: line for line in docs.stdout.splitlines() if line.strip()}
    assert "[arms.supo-eq4; default 'rollout']" in lines["train.advantage"] and "'segment'" in lines["train.advantage"]
    assert "[envs.search; default " in lines["budget.working_context"] and " 512 " in lines["budget.working_context"]
    assert "[-S; default " in lines["train.lr"] and " 0.5 " in lines["train.lr"]
    assert "[params.yaml]" in lines["seed"] and "[default]" in lines["train.packing"]
    assert "[params.yaml + /search; default 'data']" in lines["paths.data"]
    assert "[--env; default 'array']" in lines["env.name"]
