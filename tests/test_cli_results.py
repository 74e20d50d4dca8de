"""Issue 18's table, one test per row: no result lost or silently overwritten (only the pipeline's own runs merge into
its metrics files), and every check before the engine starts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import (
    assert_input_error,
    cli,
    finish_run,
    no_runs,
    run_cli,
    stage_run,
    write_params,
)


@pytest.fixture
def staged(tmp_path, monkeypatch, tiny_model_dir):
    return stage_run(tmp_path, monkeypatch, tiny_model_dir)


@pytest.fixture
def finished_run(staged, tiny_model_dir, tiny_tokenizer):
    return finish_run(staged, tiny_model_dir, tiny_tokenizer)


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
