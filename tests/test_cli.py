"""The CLI end to end on the tiny model: prepare → sft → train → eval → report with the real vLLM engine and a real
MLflow sqlite store; `dvc repro` twice on a miniature params file; and bad input failing early with a clear error."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def write_params(folder: Path, extra: dict | None = None) -> Path:
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), _merge(TINY, extra or {}))
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
    moving = ["-S", "train.entropy_coef=0.05", "-S", "train.lr=0.01", "-S", "train.overlong=none"]
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
    import time

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


# ---------------------------------------------------------------------------------------------------------------------
# Every input checked before any start-up (issue 12's table, one test per row, each fault injected into a real file
# or a real store), runtime failures with their cause first, and the CLI's help, config and version.


def run_cli(*args: str, env: dict | None = None):
    """``supo-cli`` in this process (typer's runner; stdout and stderr apart), without MLFLOW_TRACKING_URI unless
    ``env`` sets it."""
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner(env={"SUPO_PROGRESS": "0", "MLFLOW_TRACKING_URI": None, **(env or {})}).invoke(app, list(args))


@pytest.fixture
def staged(tmp_path, monkeypatch, tiny_model_dir):
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


def test_eval_of_a_truncated_checkpoint_fails_before_the_engine(staged):
    weights = staged / "checkpoints/seed0/supo/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo")
    assert_input_error(result, "--checkpoint checkpoints/seed0/supo", str(weights.relative_to(staged)), "truncated")
    assert no_runs(staged / "mlflow.db")


@pytest.fixture
def finished_run(staged, tiny_model_dir, tiny_tokenizer):
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


def test_ui_with_an_unknown_experiment_names_it_before_starting(staged):
    result = run_cli("ui", "--experiment", "no-such-exp", "--tracking-uri", f"sqlite:///{staged / 'mlflow.db'}")
    assert_input_error(result, "--experiment no-such-exp: no such experiment")


@pytest.mark.slow
def test_ui_prints_its_url_only_once_it_answers(staged):
    """`supo-cli ui --experiment` against a real store: the URL line comes only when /health answers, and opens the
    view it saved (the env's training runs grouped by arm) in the chart view."""
    import signal
    import urllib.request

    from supo.tracking import Tracker

    uri = f"sqlite:///{staged / 'mlflow.db'}"
    with Tracker(uri, "supo-tiny", "array-train-supo-seed0", tags={"stage": "train", "env": "array", "arm": "supo"}):
        pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SUPO_PROGRESS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "ui", "--port", str(port), "--tracking-uri", uri,
                             "--experiment", "supo-tiny"], cwd=staged, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("MLflow UI at"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                    assert resp.status == 200  # answered when the URL was printed
                break
        assert lines and lines[-1].startswith(f"MLflow UI at http://127.0.0.1:{port}/#/experiments/"), lines
        assert "/runs?viewStateShareKey=supo" in lines[-1] and "&compareRunsMode=CHART" in lines[-1]
        assert any("supo: array training runs by arm" in line for line in lines[:-1])
        assert all("http://" not in line for line in lines[:-1] if not line.startswith("starting"))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)


# ---------------------------------------------------------------------------------------------------------------------
# Issue 18: no result lost or silently overwritten; every check before the engine (one test per row of its table)


@pytest.fixture
def fit_budgets(staged):
    """``staged`` with budgets its tokenizer fits (the params file's W leaves no room for a step after a reset with
    the test tokenizer, and its |v_sum| needs an engine limit above 192): what an evaluation that gets past the
    preflight needs."""
    write_params(staged, {"budget": {"working_context": 200}, "engine": {"max_model_len": 512}})


def _pipeline_eval_json(staged: Path) -> Path:
    """The pipeline's metrics/eval.json as an earlier `eval --all-arms` left it (the issue's seed0.supo.s5 cell)."""
    path = staged / "metrics/eval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seed0": {"supo": {"s5": {"success_rate": 0.046875}}}}, indent=2) + "\n")
    return path


def _copy_with_run_info(staged: Path, where: str, arm: str = "supo", seed: int = 0) -> Path:
    """A copy of the pipeline's seed0/supo checkpoint elsewhere, its supo_run.json naming the arm and seed."""
    from supo.results import RunInfo

    copy = staged / where
    shutil.copytree(staged / "checkpoints/seed0/supo", copy)
    (copy / "supo_run.json").write_text(json.dumps(RunInfo(arm=arm, algo="supo", seed=seed, max_summaries=2,
                                                           working_context=None, steps_done=2).to_json()))
    return copy


def test_only_the_pipelines_own_evaluations_merge_into_its_metrics(staged, fit_budgets):
    """Which `eval --checkpoint` is one of the pipeline's evaluations (merged into metrics/eval.json) and which is
    exploratory (its numbers in <out>/eval.json): the planner's answer for each case of the issue."""
    from cli.evaluate import _checkpoint_specs

    _copy_with_run_info(staged, "elsewhere/copy")
    shutil.copytree(staged / "models/sft", staged / "models/sft-copy")

    def pipeline(checkpoint, arm=None, out=None, extra=None, seed=None):
        ((spec, is_pipeline),) = _checkpoint_specs([checkpoint], arm, seed, out, False, extra or {}, "params.yaml",
                                                   None, None)
        return is_pipeline

    assert pipeline("checkpoints/seed0/supo")  # the arm's own checkpoint, default folder and settings
    assert pipeline("models/sft")  # the warm start as --warm-start labels it
    assert not pipeline("elsewhere/copy")  # a copy (labelled supo seed 0 by its run file)
    assert not pipeline("checkpoints/seed0/supo", out="elsewhere/out")  # --out
    assert not pipeline("checkpoints/seed0/supo", arm="nope")  # a label that is not a pipeline arm
    assert not pipeline("checkpoints/seed0/supo", seed=1)  # seed1's arm lives in checkpoints/seed1/supo
    assert not pipeline("checkpoints/seed0/supo", extra={"eval.num_tasks": 2})  # another eval setting
    assert not pipeline("checkpoints/seed0/supo", extra={"eval.working_context": 5000})
    assert not pipeline("models/sft-copy", arm="sft")


def test_an_exploratory_eval_in_the_pipelines_folder_is_refused_before_the_engine(staged, fit_budgets):
    """A copy labelled supo seed 0 by its run file, without --out, would overwrite evals/seed0/supo/s2 (what the
    report reads): refused, naming the folder, before any start-up."""
    _copy_with_run_info(staged, "elsewhere/copy")
    before = _pipeline_eval_json(staged).read_bytes()
    result = run_cli("eval", "--checkpoint", "elsewhere/copy")
    assert_input_error(result, "evals/seed0/supo/s2 is inside evals/seed0/supo", "give --out")
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--num-tasks", "2")
    assert_input_error(result, "evals/seed0/supo/s2 is inside evals/seed0/supo", "another checkpoint, label or eval")
    assert (staged / "metrics/eval.json").read_bytes() == before and not (staged / "evals").exists()
    assert no_runs(staged / "mlflow.db")


@pytest.mark.slow
def test_an_exploratory_eval_writes_its_own_metrics_and_says_where(staged, fit_budgets):
    """Issue 18: `eval --checkpoint <a copy of seed0/supo> --out <elsewhere>` replaced the pipeline's seed0.supo cell
    of metrics/eval.json. Now its numbers go to <out>/eval.json, the output says so, and the pipeline's file is
    untouched byte for byte (a real engine, a real evaluation)."""
    _copy_with_run_info(staged, "elsewhere/copy")
    pipeline_json = _pipeline_eval_json(staged)
    before = pipeline_json.read_bytes()
    result = run_cli("eval", "--checkpoint", "elsewhere/copy", "--out", "elsewhere/out", "--num-tasks", "2")
    assert result.exit_code == 0, result.output
    assert pipeline_json.read_bytes() == before
    own = json.loads((staged / "elsewhere/out/eval.json").read_text())
    metrics = json.loads((staged / "elsewhere/out/metrics.json").read_text())
    assert own["seed0"]["supo"]["s2"]["success_rate"] == metrics["success_rate"] and own["wall_seconds"] > 0
    assert "exploratory evaluation: its numbers are in elsewhere/out/eval.json, not merged into the pipeline's " \
           "metrics/eval.json" in " ".join(result.stdout.split())


def test_a_corrupt_metrics_file_is_named_and_moved_aside_before_any_rollout(staged, fit_budgets):
    """Issue 18: with a corrupt metrics/eval.json, eval ran all its rollouts, then exited 1 with a JSONDecodeError
    naming no file. Now: one line naming it, before the engine; its bytes kept beside it."""
    path = staged / "metrics/eval.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"seed0": {"supo" {"s5": 1}}}')
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo")
    err = assert_input_error(result, "eval metrics file metrics/eval.json: not valid JSON (Expecting ':' delimiter",
                             "moved aside to metrics/eval.json.corrupt-")
    (aside,) = path.parent.glob("eval.json.corrupt-*")
    assert str(aside.relative_to(staged)) in err and aside.read_text() == '{"seed0": {"supo" {"s5": 1}}}'
    assert not (staged / "evals").exists() and no_runs(staged / "mlflow.db")


def test_a_resume_with_an_empty_history_is_refused_and_overwrites_nothing(staged, finished_run):
    """Issue 18: `history: []` passed the preflight; train_metrics.json (6 steps) was overwritten with [] and the run
    died with an IndexError 63 s later."""
    from mlflow import MlflowClient

    uri, run_id = finished_run
    state = staged / "checkpoints/seed0/supo/steps/step_000001/state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "history": []}))
    metrics = staged / "checkpoints/seed0/supo/train_metrics.json"
    metrics.write_text('{"history": [{"step": 0}]}\n')
    result = run_cli("train", "--algo", "supo", "--resume", "--tracking-uri", uri)
    assert_input_error(result, "--resume: checkpoint state", "state.json",
                       "history holds 0 step(s) but the checkpoint is at step 1")
    assert metrics.read_text() == '{"history": [{"step": 0}]}\n'
    assert MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize("args, needle", [
    (["-S", "budget.working_context=5"], "budget.working_context"),
    (["-S", "engine.max_model_len=10"], "engine.max_model_len"),
    (["--working-context", "5"], "eval.working_context"),
])
def test_eval_settings_are_refused_before_the_engine_starts(staged, fit_budgets, args, needle):
    """Issue 18: these were refused only after the vLLM engine had started (30–56 s). A real `supo-cli eval` process,
    the real engine within reach: the error comes first, and nothing of the engine (vLLM logs its start-up) is in the
    output."""
    proc = cli("eval", "--checkpoint", "checkpoints/seed0/supo", *args, cwd=staged, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and needle in errors[0], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "vllm" not in (proc.stdout + proc.stderr).lower()
    assert no_runs(staged / "mlflow.db") and not (staged / "evals").exists()


def test_output_locations_are_checked_before_any_work(staged, fit_budgets):
    """Issue 18: `eval --out <a regular file>` and a read-only checkpoint folder failed only after all rollouts or a
    full training step. Both are refused before start-up; a folder root cannot write in (sysfs) is found by trying."""
    (staged / "results.txt").write_text("not a folder")
    assert_input_error(run_cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--out", "results.txt"),
                       "eval output folder results.txt is not a folder")
    assert_input_error(run_cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--out", "results.txt/run1"),
                       "results.txt/run1 is not a folder: results.txt is a file")
    assert_input_error(run_cli("train", "--algo", "supo", "--out", "results.txt/ckpt"),
                       "--out results.txt/ckpt is not a folder: results.txt is a file")
    if Path("/sys/kernel").is_dir():
        assert_input_error(run_cli("train", "--algo", "supo", "--out", "/sys/supo-checkpoint"),
                           "--out /sys/supo-checkpoint: cannot write in /sys")
    (staged / "metrics").write_text("a file where the metrics folder goes")
    assert_input_error(run_cli("eval", "--checkpoint", "checkpoints/seed0/supo"), "metrics is not a folder")
    assert no_runs(staged / "mlflow.db") and not (staged / "evals").exists()


def test_a_sqlite_uri_naming_a_folder_is_one_line(staged):
    """Issue 18: `sqlite:///evals` (a folder) ended with exit 1 and an IsADirectoryError from the preflight."""
    (staged / "evals").mkdir()
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--tracking-uri", "sqlite:///evals")
    assert_input_error(result, "--tracking-uri=sqlite:///evals: evals is a folder, not a database file")


def test_an_http_server_that_is_not_mlflow_is_refused_before_the_engine(staged):
    """Issue 18: a server answering 404 to everything was accepted; the engine started, then MlflowException 404
    after 53 s. A real local server (loopback only) that is not MLflow: one line, in seconds."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<h1>404 Not Found</h1>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo", env={"MLFLOW_TRACKING_URI": uri})
        assert_input_error(result, f"MLFLOW_TRACKING_URI={uri}: not an MLflow tracking server (GET "
                                   "/api/2.0/mlflow/experiments/get-by-name answered 404")
        assert no_runs(staged / "mlflow.db") and not (staged / "evals").exists()
    finally:
        server.shutdown()
        server.server_close()


def _edit_test_row(staged: Path, row: int, env_config) -> None:
    import pandas as pd

    path = staged / "data/test.parquet"
    df = pd.read_parquet(path)
    df["env_config"] = df["env_config"].astype(object)
    df.at[row, "env_config"] = env_config
    df.to_parquet(path, index=False)


def test_a_null_env_config_row_names_the_field(staged):
    """Issue 18: `env_config: null` exited 2 with "the JSON object must be str…, not float", naming no field."""
    _edit_test_row(staged, 2, None)
    assert_input_error(run_cli("eval", "--checkpoint", "checkpoints/seed0/supo"),
                       "data/test.parquet, row 2 (id 'test-00002'): env_config: missing (null)")


@pytest.mark.parametrize("values, needle", [
    ([1, 10**6], "env_config.values[1]: 1000000 is outside 0..99"),
    ([-5], "env_config.values[0]: -5 is outside 0..99"),
    ([2**70], "env_config.values[0]: 1180591620717411303424 is outside 0..99"),
    ([7] * 100_000, "env_config.values: 100000 values; the array env takes at most 1000"),
])
def test_array_values_outside_the_declared_range_are_row_errors(staged, values, needle):
    """Issue 18: values 10⁶, −5, 2⁷⁰ and 100,000 values were accepted and evaluated."""
    import pandas as pd

    cfg = json.loads(pd.read_parquet(staged / "data/test.parquet").loc[4, "env_config"])
    _edit_test_row(staged, 4, json.dumps({**cfg, "values": values}))
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo")
    assert_input_error(result, "data/test.parquet, row 4 (id 'test-00004')", needle)
    assert no_runs(staged / "mlflow.db")


def test_only_pipeline_training_runs_merge_into_train_json(staged):
    """`train --out`, `--init` or an arm outside pipeline.arms keep their numbers beside their checkpoint."""
    from cli.support import defined_arms, load
    from supo.pipeline import plan_train

    defined = defined_arms("params.yaml")
    (supo,) = plan_train(lambda a, s: load("params.yaml", None, {}, arm=a), ["supo"], [None])
    (grpo,) = plan_train(lambda a, s: load("params.yaml", None, {"train.algo": "grpo"}), [None], [None])
    from cli.train import is_pipeline_run

    assert is_pipeline_run(supo, None, None, defined)
    assert not is_pipeline_run(supo, "checkpoints/first", None, defined)
    assert not is_pipeline_run(supo, None, "models/init", defined)
    assert not is_pipeline_run(grpo, None, None, defined)  # arm "grpo": not one of pipeline.arms


def test_where_each_evaluation_merges_its_numbers(staged, fit_budgets, monkeypatch):
    """The merge rule end to end through `supo-cli eval` (the evaluation itself replaced by a stub: the rule is the
    CLI's): the pipeline's own checkpoint merges into metrics/eval.json; `--arm nope` writes its folder's eval.json;
    `-S paths.metrics=DIR` (an explicit choice) merges into DIR/eval.json; the pipeline's file keeps its cells."""
    import supo.evaluate
    from supo.results import EvalResult

    table = ("success_rate", "mean_tool_calls", "mean_summaries", "summary_format_miss_rate",
             "mean_working_context_tokens", "max_working_context_tokens", "effective_context_tokens", "overlong_rate",
             "error_loop_rate", "segments_per_rollout", "tokens_generated", "rollout_seconds")

    def fake_evaluate(cfg, *, checkpoint, out, arm=None, **kw):
        rate = {"supo": 0.25, "nope": 0.5}.get(arm, 0.75)
        return EvalResult(env=cfg.env.name, arm=arm, seed=cfg.seed, s_eval=cfg.eval.max_summaries,
                          working_context=160, split=cfg.eval.split, metrics={**dict.fromkeys(table, 1.0),
                                                                              "success_rate": rate})

    monkeypatch.setattr(supo.evaluate, "open_engine", lambda *a, **k: object())
    monkeypatch.setattr(supo.evaluate, "evaluate", fake_evaluate)
    pipeline_json = _pipeline_eval_json(staged)
    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo")
    assert result.exit_code == 0, result.output
    assert "merged into metrics/eval.json (seed0.supo)" in result.stdout
    merged = json.loads(pipeline_json.read_text())
    assert merged["seed0"]["supo"] == {"s5": {"success_rate": 0.046875}, "s2": merged["seed0"]["supo"]["s2"]}
    assert merged["seed0"]["supo"]["s2"]["success_rate"] == 0.25
    before = pipeline_json.read_bytes()

    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--arm", "nope")
    assert result.exit_code == 0, result.output
    assert json.loads((staged / "evals/seed0/nope/s2/eval.json").read_text())["seed0"]["nope"]["s2"][
        "success_rate"] == 0.5
    assert "its numbers are in evals/seed0/nope/s2/eval.json, not merged into the pipeline's metrics/eval.json" in \
        " ".join(result.stdout.split())

    result = run_cli("eval", "--checkpoint", "checkpoints/seed0/supo", "--arm", "other", "-S",
                     "paths.metrics=elsewhere")
    assert result.exit_code == 0, result.output
    assert json.loads((staged / "elsewhere/eval.json").read_text())["seed0"]["other"]["s2"]["success_rate"] == 0.75
    assert not (staged / "evals/seed0/other/s2/eval.json").exists()
    assert pipeline_json.read_bytes() == before  # no exploratory cell, and no wall_seconds of theirs
