"""The CLI end to end on the tiny model: prepare → sft → train → eval → report with the real vLLM engine and a real
MLflow sqlite store; `dvc repro` twice on a miniature params file; and bad input failing early with a clear error.
Each input checked before start-up: tests/test_cli_inputs.py; where results go (issue 18): tests/test_cli_results.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import REPO, cli, write_params


def test_help_lists_every_command():
    out = cli("--help", cwd=REPO).stdout
    for command in ("prepare", "sft", "train", "eval", "report", "ui"):
        assert command in out
    train_help = cli("train", "--help", cwd=REPO).stdout
    assert "--algo" in train_help and "grpo" in train_help
    eval_help = cli("eval", "--help", cwd=REPO).stdout
    for flag in ("--checkpoint", "--max-summaries", "--working-context", "--split"):
        assert flag in eval_help


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--algo", "ppo"], "train.algo"),
        (["train", "-S", "budget.max_summaries=-1"], "budget.max_summaries"),
        (["train", "-S", "train.lrr=1"], "train.lr"),
        (["train", "-S", "budget.trigger_frac=1.5"], "budget.trigger_frac"),
        (["eval", "--checkpoint", "no/such/checkpoint"], "no/such/checkpoint"),
        (["eval", "--checkpoint", ".", "--max-summaries", "-2"], "eval.max_summaries"),
        (["train", "--arm", "supo-no-msk"], "did you mean supo-no-mask"),
        (["train", "--arm", "grpo-weff", "--algo", "supo"], "budget.use_effective_context"),
    ],
)
def test_bad_input_fails_early_naming_what_is_wrong(tmp_path, args, needle):
    write_params(tmp_path)
    proc = cli(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    write_params(folder)
    cli("prepare", cwd=folder)
    return folder


def test_prepare_writes_splits_model_and_demonstrations(prepared):
    import pandas as pd

    from supo.data import read_tasks

    train, test = read_tasks(prepared / "data/train.parquet"), read_tasks(prepared / "data/test.parquet")
    assert len(train) == 60 and len(test) == 8
    mean = lambda ts: sum(len(t.env_config["values"]) for t in ts) / len(ts)  # noqa: E731
    assert mean(test) > mean(train)  # the test split needs more steps
    demos = pd.read_parquet(prepared / "data/demos.parquet")
    assert {"segment", "trigger_action"} <= set(demos["kind"])  # summary segments and R5b samples
    stats = json.loads((prepared / "metrics/prepare.json").read_text())
    assert stats["demo_mean_summaries"] > 0
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (prepared / "models/init" / f).exists()


def test_missing_or_malformed_data_is_named(prepared, tmp_path):
    shutil.copytree(prepared, tmp_path / "run")
    run = tmp_path / "run"
    (run / "data/demos.parquet").write_bytes(b"not a parquet file")
    proc = cli("sft", cwd=run, check=False)
    assert proc.returncode == 2 and "demos.parquet" in proc.stderr and "Traceback" not in proc.stderr
    (run / "data/train.parquet").unlink()
    proc = cli("train", "--init", "models/init", cwd=run, check=False)
    assert proc.returncode == 2 and "train.parquet" in proc.stderr and "supo-cli prepare" in proc.stderr


def test_engine_limit_and_working_context_checked_against_the_tokenizer(prepared):
    from mlflow import MlflowClient

    proc = cli("train", "--init", "models/init", "-S", "engine.max_model_len=150", "-S",
               "model.max_position_embeddings=1024", cwd=prepared, check=False)
    assert proc.returncode == 2 and "engine.max_model_len" in proc.stderr and "derived budget" in proc.stderr
    proc = cli("train", "--init", "models/init", "-S", "budget.working_context=16", cwd=prepared, check=False)
    assert proc.returncode == 2 and "budget.working_context" in proc.stderr and "initial prompt" in proc.stderr
    db = prepared / "mlflow.db"  # failed before any MLflow run was opened
    if db.exists():
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        exp = client.get_experiment_by_name("supo-tiny")
        assert exp is None or not client.search_runs([exp.experiment_id], "attributes.run_name = 'array-train-supo-seed0'")


@pytest.mark.slow
def test_sft_train_eval_report_with_vllm_and_mlflow(prepared):
    from mlflow import MlflowClient

    from supo.config import load_config

    cli("sft", cwd=prepared)
    assert (prepared / "models/sft/model.safetensors").exists()
    cli("train", "--algo", "supo", cwd=prepared)
    ckpt = prepared / "checkpoints/seed0/supo"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "config.json").exists()
    hist = json.loads((ckpt / "train_metrics.json").read_text())["history"]
    assert [h["step"] for h in hist] == [0, 1]
    t = load_config(prepared / "params.yaml").train
    for h in hist:
        assert h["optimizer_steps"] == t.mini_batches * t.ppo_epochs
        assert h["weight_sync_seconds"] > 0 and h["train_tokens"] >= 0
    run_id = json.loads((ckpt / "supo_run.json").read_text())["mlflow_run_id"]
    train_json = json.loads((prepared / "metrics/train.json").read_text())
    assert train_json["wall_seconds"] > 0 and train_json["seed0"]["supo"]["steps"] == 2

    proc = cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--max-summaries", "3", cwd=prepared)
    assert "success_rate" in proc.stdout
    m = json.loads((prepared / "evals/seed0/supo/s3/metrics.json").read_text())
    b = load_config(prepared / "params.yaml").budget
    assert m["s_eval"] == 3 and m["num_rollouts"] == 4 and m["effective_context_tokens"] == b.working_context * 4
    for key in ("success_rate", "mean_summaries", "mean_working_context_tokens", "overlong_rate", "tokens_processed"):
        assert key in m
    # bounded by W (+ one turn and the summary)
    assert m["max_working_context_tokens"] <= b.working_context + 2 * b.max_turn_tokens + b.max_summary_tokens
    assert sum(1 for _ in open(prepared / "evals/seed0/supo/s3/rollouts.jsonl")) == 4

    # the sweep: every S_eval of eval.sweep in one engine, one MLflow run per S_eval linked to the training run
    proc = cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--sweep", cwd=prepared)
    assert "S_eval=0" in proc.stdout and "S_eval=2" in proc.stdout
    sweep = {s: json.loads((prepared / f"evals/seed0/supo/s{s}/metrics.json").read_text()) for s in (0, 2)}
    assert sweep[0]["mean_summaries"] == 0 and sweep[2]["mean_summaries"] <= 2
    assert all(m["num_rollouts"] == 4 and m["arm"] == "supo" and m["seed"] == 0 for m in sweep.values())
    combined = json.loads((prepared / "metrics/eval.json").read_text())
    assert combined["seed0"]["supo"]["s0"]["success_rate"] == sweep[0]["success_rate"] and combined["wall_seconds"] > 0
    assert (prepared / "evals/seed0/supo/s0/outcomes.json").exists()
    assert cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--sweep", "--max-summaries", "1", cwd=prepared,
               check=False).returncode == 2

    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    exp = client.get_experiment_by_name("supo-tiny")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])}
    assert {"array-sft", "array-train-supo-seed0", "array-eval-supo-seed0-s3", "array-eval-supo-seed0-s0",
            "array-eval-supo-seed0-s2"} <= set(runs)
    train_run = client.get_run(run_id)
    assert train_run.info.run_name == "array-train-supo-seed0" and train_run.data.params["train.algo"] == "supo"
    assert train_run.data.tags["env"] == "array" and train_run.data.tags["arm"] == "supo"
    assert train_run.data.tags["seed"] == "0"
    assert train_run.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "mean_reward")) == 2
    assert any(a.path.startswith("rollouts") for a in client.list_artifacts(run_id))
    for s in (3, 0, 2):
        ev = runs[f"array-eval-supo-seed0-s{s}"].data.tags
        assert ev["checkpoint_run_id"] == run_id and ev["s_eval"] == str(s) and ev["arm"] == "supo"
        assert "mlflow.parentRunId" not in ev and f"runs/{run_id})" in ev["mlflow.note.content"]
    assert runs["array-sft"].data.tags["arm"] == "sft"

    cli("report", cwd=prepared)
    report = (prepared / "reports/report.md").read_text()
    assert "supo" in report and (prepared / "reports/summary.json").exists()
    # links both ways: the report run states the headline and links report.html; the training run names its report
    rep = client.search_runs([exp.experiment_id], "tags.stage = 'report'")[0]
    note = rep.data.tags["mlflow.note.content"]
    assert "Which arm is better?" in note and "report.html" in note
    assert client.get_run(run_id).data.tags["report_run_id"] == rep.info.run_id
    assert rep.data.metrics and all("." not in k for k in rep.data.metrics)  # "/"-grouped, e.g. array/C1_held


@pytest.mark.slow
def test_dvc_repro_runs_the_pipeline_then_does_nothing(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", ".dvc", ".gitignore"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / item)
    shutil.copytree(REPO / "supo", repo / "supo", ignore=shutil.ignore_patterns("__pycache__"))
    small_search = {"search.num_train": 40, "search.num_test": 4, "search.num_entities": 60, "expert.num_demos": 40,
                    "sft.steps": 10, "sft.batch_size": 8, "train.steps": 1}
    write_params(repo, {"train": {"steps": 1}, "eval": {"num_tasks": 2, "sweep": [0, 2]},
                        "pipeline": {"envs": ["array", "search"], "arms": ["grpo-weff", "supo"], "seeds": [0]},
                        "envs": {"search": small_search}})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SUPO_PROGRESS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    run = lambda *a: subprocess.run(a, cwd=repo, env=env, capture_output=True, text=True, timeout=1200)  # noqa: E731
    assert run("git", "init", "-q").returncode == 0
    first = run("dvc", "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (repo / "reports/report.md").exists()
    report = (repo / "reports/report.md").read_text()
    assert "Environment `array`" in report and "Environment `search`" in report
    assert "C0 supo" in report and "C0 grpo-weff" in report and "C1" in report and "C4" in report
    assert (repo / "evals/array/seed0/sft/s2/outcomes.json").exists()  # the warm start at the method's setting
    assert (repo / "evals/array/seed0/sft-grpo-weff/s0/metrics.json").exists()  # and at GRPO-Weff's W_eff
    assert (repo / "reports/report.html").exists() and (repo / "reports/figures/array-success_vs_s_eval.png").exists()
    shown = run("dvc", "metrics", "show")
    assert shown.returncode == 0 and "success_rate" in shown.stdout
    plots = run("dvc", "plots", "show", "--json")
    assert plots.returncode == 0 and "success_vs_s_eval.csv" in plots.stdout and "training_curves.csv" in plots.stdout
    times = subprocess.run([sys.executable, str(REPO / "bench" / "stage_times.py")], cwd=repo, capture_output=True,
                           text=True)
    assert times.returncode == 0 and "train@array" in times.stdout and "· seed0 · supo" in times.stdout
    assert "report" in times.stdout
    second = run("dvc", "repro")
    assert second.returncode == 0 and "up to date" in second.stdout.lower()
    assert "Running stage" not in second.stdout


TIMING_KEYS = {"rollout_seconds", "train_seconds", "weight_sync_seconds", "weight_push_seconds", "step_seconds",
               "engine_tokens_per_second"}


def _history(path: Path) -> list[dict]:
    hist = json.loads(path.read_text())["history"]
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in hist]


@pytest.mark.slow
def test_the_same_seed_twice_gives_identical_metrics_and_weights(prepared):
    """On one machine a run is a function of its config and seed: two `train` runs give the same per-step metrics
    (timings aside) and the same weights, bit for bit."""
    from safetensors.torch import load_file

    if not (prepared / "models/sft").exists():
        cli("sft", cwd=prepared)
    for out in ("first", "second"):
        cli("train", "--algo", "supo", "--steps", "2", "--seed", "3", "--out", f"checkpoints/{out}", cwd=prepared)
    a, b = prepared / "checkpoints/first", prepared / "checkpoints/second"
    ha, hb = _history(a / "train_metrics.json"), _history(b / "train_metrics.json")
    assert len(ha) == 2 and ha == hb
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


@pytest.mark.slow
def test_overlap_samples_each_step_from_the_policy_before_the_previous_update(prepared):
    """train.overlap: step 1's rollouts are sampled while step 0's update runs, so from the warm start — the same
    rollouts as a run whose update cannot move the weights (lr 1e-30), and not those of the on-policy run; step 0 and
    the lag each step logs are as stated."""
    if not (prepared / "models/sft").exists():
        cli("sft", cwd=prepared)
    runs = {"overlap": ["-S", "train.overlap=true"], "frozen": ["-S", "train.lr=1e-30"], "on-policy": []}
    # the tiny warm start earns no reward here and never finishes (every advantage 0, every rollout masked): trained
    # unmasked with an entropy bonus, step 0's update moves it
    moving = ["-S", "train.entropy_coef=0.05", "-S", "train.lr=0.01", "-S", "train.overlong=none",
              "-S", "train.kl_to_init_every=1"]  # step 1 reads kl_to_init (the profile measures every third step)
    for name, extra in runs.items():
        cli("train", "--algo", "supo", "--steps", "2", *moving, *extra, "--out", f"checkpoints/{name}", cwd=prepared)
    hist = {n: json.loads((prepared / f"checkpoints/{n}/train_metrics.json").read_text())["history"] for n in runs}
    assert [h["policy_lag"] for h in hist["overlap"]] == [0, 1]
    assert [h["policy_lag"] for h in hist["on-policy"]] == [0, 0]
    step0 = [{k: v for k, v in hist[n][0].items() if k not in TIMING_KEYS} for n in ("overlap", "on-policy")]
    assert step0[0] == step0[1]

    def last_rollouts(name):
        rows = (prepared / f"checkpoints/{name}/last_rollouts.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(r).items() if "seconds" not in k} for r in rows]

    # what the policy that sampled step 1 had moved from the warm start: nothing with overlap, step 0's update without
    assert hist["overlap"][1]["kl_to_init"] < 1e-6 < hist["on-policy"][1]["kl_to_init"]
    assert last_rollouts("overlap") == last_rollouts("frozen")
    assert last_rollouts("overlap") != last_rollouts("on-policy")  # step 0's update did move the policy


@pytest.mark.slow
def test_sigkill_then_resume_ends_like_an_uninterrupted_run(prepared):
    """Kill -9 a training run after its first checkpoint; --resume must finish with the same metrics and weights
    as a run that was never interrupted, and continue the same MLflow run."""
    import signal

    from mlflow import MlflowClient
    from safetensors.torch import load_file

    if not (prepared / "models/sft").exists():
        cli("sft", cwd=prepared)
    common = ["--algo", "supo", "--steps", "3", "-S", "train.checkpoint_every=1"]
    cli("train", *common, "--out", "checkpoints/whole", cwd=prepared)

    env = {**os.environ, "SUPO_PROGRESS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "train", *common, "--out", "checkpoints/cut"],
                            cwd=prepared, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = prepared / "checkpoints/cut/steps/latest"
    deadline = time.time() + 600
    while time.time() < deadline and not (latest.exists() and latest.read_text().strip() >= "step_000001"):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = latest.read_text().strip()
    assert killed_at in ("step_000001", "step_000002")
    assert not (prepared / "checkpoints/cut/train_metrics.json").exists()  # it really died mid-training

    out = cli("train", *common, "--out", "checkpoints/cut", "--resume", cwd=prepared)
    assert "resume" in out.stdout
    whole, cut = prepared / "checkpoints/whole", prepared / "checkpoints/cut"
    assert _history(whole / "train_metrics.json") == _history(cut / "train_metrics.json")
    wa, wb = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)

    run_id = json.loads((cut / "supo_run.json").read_text())["mlflow_run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    steps = sorted({m.step for m in client.get_metric_history(run_id, "mean_reward")})
    assert steps == [0, 1, 2]
    assert client.get_run(run_id).info.status == "FINISHED"


FIXTURES = REPO / "tests" / "fixtures"
ENV_CASES = {
    "search": ["-S", "search.num_train=40", "-S", "search.num_test=4", "-S", "search.num_entities=60"],
    "codegym": ["-S", f"files.codegym_path={FIXTURES / 'codegym' / 'rows.jsonl'}", "-S", "files.test_fraction=0.5",
                "-S", "files.sandbox_seconds=2"],
    "browsecomp": ["-S", f"files.browsecomp_queries={FIXTURES / 'browsecomp' / 'queries.jsonl'}",
                   "-S", f"files.browsecomp_corpus={FIXTURES / 'browsecomp' / 'corpus.jsonl'}",
                   "-S", f"files.browsecomp_qrels={FIXTURES / 'browsecomp' / 'qrel_evidence.txt'}",
                   "-S", "files.test_fraction=0.5"],
    "bfcl": ["-S", "budget.working_context=6144", "-S", "engine.max_model_len=8192",  # long function docs
             "-S", "model.max_position_embeddings=8192"],
}


@pytest.mark.slow
@pytest.mark.parametrize("env_name", list(ENV_CASES))
def test_eval_runs_on_every_environment(tmp_path, env_name):
    """prepare (tokenizer + random tiny model for that env) then eval through the same rollout code."""
    write_params(tmp_path)
    common = ["--env", env_name, "-S", "expert.num_demos=0", "-S", f"files.index_dir={tmp_path}/bm25",
              "-S", "budget.working_context=3072", "-S", "budget.max_obs_tokens=512", "-S", "budget.max_steps=3",
              "-S", "engine.max_model_len=4096", "-S", "model.max_position_embeddings=4096", *ENV_CASES[env_name]]
    cli("prepare", *common, cwd=tmp_path)
    cli("eval", *common, "--checkpoint", f"models/init/{env_name}", "--num-tasks", "2", "--max-summaries", "1",
        cwd=tmp_path)
    m = json.loads((tmp_path / f"evals/{env_name}/seed0/{env_name}/s1/metrics.json").read_text())
    assert m["env"] == env_name and m["num_rollouts"] == 2 and m["mean_tool_calls"] > 0


def test_paper_profiles_load_and_carry_the_papers_settings():
    from supo.config import load_config

    cg = load_config(REPO / "profiles" / "paper-codegym.yaml")
    assert (cg.budget.working_context, cg.budget.max_summaries, cg.budget.max_steps) == (4096, 7, 100)
    bc = load_config(REPO / "profiles" / "paper-browsecomp.yaml")
    assert (bc.budget.working_context, bc.budget.max_summaries) == (65536, 2)
    for c in (cg, bc):
        assert c.rollout.group_size == 8 and c.rollout.tasks_per_step == 128 and c.train.lr == 1e-6
        assert (c.train.clip_low, c.train.clip_high, c.train.kl_coef) == (0.2, 0.28, 0.0)
        assert c.train.overlong == "loss-mask" and c.train.advantage == "rollout" and not c.model.build
        assert c.rollout.temperature == 1.0 and c.budget.trigger_frac == 0.95
