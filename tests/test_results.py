"""supo.results: the records the stages write are the records the readers get back — written with the real writers
(``supo.evaluate.write_eval``, ``supo.train_loop.write_run_files``, the sft stage's metrics file) at the paths
``supo.layout`` gives, read with the real readers (``supo.report.collect``, the eval CLI's run-info check); the DVC
summaries hold numbers only; versions newer than the code, and malformed fields, are named."""

from __future__ import annotations

import json
import math

import pytest

from supo.config import load_config
from supo.evaluate import write_eval
from supo.layout import RUN_FILE, TRAIN_METRICS_FILE, checkpoint_dir, eval_dir, metrics_file
from supo.metrics import rollout_metrics
from supo.preflight import PreflightError, read_run_info
from supo.report.collect import collect_evals, collect_training
from supo.results import (
    SCHEMA_KEY,
    SCHEMA_VERSION,
    EvalResult,
    Outcomes,
    failure_kind,
    RunInfo,
    SftResult,
    TrainResult,
)
from supo.train_loop import train_result, write_run_files
from supo.types import Rollout


def _rollouts() -> list[Rollout]:
    out = []
    for t in range(6):
        ok = t // 2 == 0 or t == 4  # task 0 both rollouts, task 1 none, task 2 one of two
        out.append(Rollout(task_id=f"test-{t // 2:05d}", group_id=f"test-{t // 2:05d}@eval", index=t % 2,
                           reward=float(ok), finished=ok, overlong=not ok, error_observations=int(t == 3),
                           first_failure="action_error" if t == 3 else None,
                           num_summaries=1, tool_calls=5, context_lengths=[100, 90]))
    return out


def _history(n: int = 3) -> list[dict]:
    return [{"step": k, "mean_reward": 0.1 * k, "success_rate": 0.1 * k, "mean_summaries": 1.0, "mean_tool_calls": 9.0,
             "overlong_rate": 0.2, "step_seconds": 2.0 + k, "rollout_seconds": 1.0, "train_seconds": 0.5,
             "weight_sync_seconds": 0.25, "engine_tokens_per_second": 100.0 * (k + 1)} for k in range(n)]


def test_an_eval_written_by_write_eval_is_read_back_by_the_report(tmp_path):
    rs = _rollouts()
    m = rollout_metrics(rs, working_context=128, max_summaries=2)
    result = EvalResult(env="array", arm="supo", seed=3, s_eval=2, working_context=128, split="test", metrics=m,
                        checkpoint="checkpoints/array/seed3/supo", num_rollouts=len(rs), temperature=1.0,
                        sweep_max_summaries=8)
    folder = eval_dir(tmp_path / "array", 3, "supo", 2)
    write_eval(folder, result, rs)
    assert EvalResult.read(folder) == result
    data = json.loads((folder / "metrics.json").read_text())
    assert data[SCHEMA_KEY] == SCHEMA_VERSION and data["success_rate"] == m["success_rate"]
    (run,) = collect_evals(tmp_path)
    assert (run.env, run.arm, run.seed, run.s_eval, run.working_context) == ("array", "supo", 3, 2, 128)
    assert run.metrics["success_rate"] == pytest.approx(0.5)
    assert run.outcomes == {"test-00000": 1.0, "test-00001": 0.0, "test-00002": 0.5}
    outcomes = Outcomes.read(folder)
    # overlong without an Error: observation: a budget cut; with one: an error loop (no oracle judged: 0 of 0)
    assert outcomes.rows[2] == ("test-00001", 0, 0, 1, 0, 1, 0, 0, "budget_cut")
    assert outcomes.rows[3] == ("test-00001", 1, 0, 1, 1, 1, 0, 0, "action_error")
    assert outcomes.rows[0][-1] == ""
    assert Outcomes.from_json(outcomes.to_json()) == outcomes
    assert outcomes.failure_by_task("budget_cut") == {"test-00000": 0.0, "test-00001": 0.5, "test-00002": 0.5}
    assert outcomes.sums_by_task("summaries") == {"test-00000": 2.0, "test-00001": 2.0, "test-00002": 2.0}
    unjudged = Outcomes.from_rollouts(rs, "test", judged=False)
    assert unjudged.column("summaries_judged") == [-1] * 6 == unjudged.column("summaries_correct")


def test_failure_classes_take_the_first_that_applies():
    """What went wrong first (a wrong summary or an Error: observation), else a wrong answer, else the budget."""
    base = dict(task_id="t", group_id="t@0", index=0)
    assert failure_kind(Rollout(**base, reward=1.0, finished=True)) == ""
    assert failure_kind(Rollout(**base, finished=True, summaries_judged=2, summaries_correct=1,
                                error_observations=3, first_failure="wrong_summary")) == "wrong_summary"
    assert failure_kind(Rollout(**base, overlong=True, summaries_judged=2, summaries_correct=1,
                                error_observations=1, first_failure="action_error")) == "action_error"
    assert failure_kind(Rollout(**base, finished=True, summaries_judged=1, summaries_correct=1)) == "wrong_answer"
    assert failure_kind(Rollout(**base, overlong=True)) == "budget_cut"


def test_outcomes_written_before_the_new_columns_still_read():
    old = {"split": "test", "columns": ["task_id", "index", "success", "overlong", "error_loop"],
           "rollouts": [["a", 0, 1, 0, 0], ["b", 0, 0, 1, 1], ["c", 0, 0]]}
    rows = Outcomes.from_json(old).rows
    assert rows[0] == ("a", 0, 1, 0, 0, 0, -1, -1, "") and rows[2] == ("c", 0, 0, 0, 0, 0, -1, -1, "")
    with pytest.raises(ValueError, match="failure"):
        Outcomes.from_json({"rollouts": [["a", 0, 0, 1, 0, 1, 1, 0, "bad luck"]]})


def test_eval_numbers_are_the_numeric_fields_without_the_version():
    result = EvalResult(env="array", arm="sft", seed=0, s_eval=4, working_context=128, split="val",
                        metrics={"success_rate": 0.25, "rollout_seconds": 3.5}, checkpoint="m", num_rollouts=8,
                        temperature=1.0, sweep_max_summaries=16)
    assert result.numbers() == {"seed": 0, "s_eval": 4, "working_context": 128, "num_rollouts": 8,
                                "temperature": 1.0, "sweep_max_summaries": 16, "success_rate": 0.25,
                                "rollout_seconds": 3.5}
    with pytest.raises(ValueError, match="clash"):
        EvalResult(env="a", arm="b", seed=0, s_eval=0, working_context=1, split="test",
                   metrics={"seed": 1.0}).to_json()


def test_a_training_run_written_by_write_run_files_is_read_back(tmp_path):
    cfg = load_config(None, {"seed": 2, "train.algo": "grpo", "budget.working_context": 128,
                             "engine.max_model_len": 192}, env="array")
    folder = checkpoint_dir(tmp_path / "array", 2, "grpo-w")
    write_run_files(folder, cfg, "grpo-w", _history(), "run-123")
    result = TrainResult.read(folder)
    assert result == train_result(cfg, "grpo-w", _history(), "run-123")
    assert (result.env, result.arm, result.seed, result.algo, result.max_summaries, result.working_context) == \
        ("array", "grpo-w", 2, "grpo", 0, 128)
    assert RunInfo.read(folder) == RunInfo("grpo-w", "grpo", 2, 0, 128, 3, "run-123")
    assert read_run_info(folder) == RunInfo.read(folder)  # the eval CLI's reader
    (run,) = collect_training(tmp_path)
    assert (run.env, run.arm, run.seed, run.algo) == ("array", "grpo-w", 2, "grpo")
    assert [h["step"] for h in run.history] == [0, 1, 2] and run.run_id() == "run-123"


def test_the_train_summary_is_first_last_and_means():
    result = TrainResult(env="array", arm="supo", seed=1, algo="supo", max_summaries=4, working_context=128,
                         history=tuple(_history()))
    s = result.summary(run_seconds=12.5)
    assert s["steps"] == 3 and s["first_mean_reward"] == 0.0 and s["last_mean_reward"] == pytest.approx(0.2)
    assert s["mean_step_seconds"] == 3.0 and s["mean_engine_tokens_per_second"] == 200.0
    assert s["run_seconds"] == 12.5 and SCHEMA_KEY not in s
    assert list(s)[:4] == ["env", "arm", "seed", "steps"]
    with pytest.raises(ValueError, match="no step"):
        TrainResult(env="a", arm="b", seed=0, algo=None, max_summaries=None, working_context=None,
                    history=()).summary(1.0)


def test_the_sft_result_round_trips_through_its_metrics_file(tmp_path):
    result = SftResult(sft_steps=10, sft_rows=40, sft_final_loss_ema=0.5, sft_seconds=1.25)
    path = result.write(metrics_file(tmp_path, "sft"))
    assert SftResult.read(path) == result
    assert result.numbers() == {"sft_steps": 10, "sft_rows": 40, "sft_final_loss_ema": 0.5, "sft_seconds": 1.25}
    empty = SftResult(sft_steps=0, sft_rows=40, sft_final_loss_ema=None, sft_seconds=0.0)
    assert "sft_final_loss_ema" not in empty.numbers() and SftResult.from_json(empty.to_json()) == empty


def test_a_newer_schema_and_malformed_fields_are_named(tmp_path):
    folder = checkpoint_dir(tmp_path / "array", 0, "supo")
    TrainResult(env="array", arm="supo", seed=0, algo="supo", max_summaries=4, working_context=128,
                history=tuple(_history(1))).write(folder)
    path = folder / TRAIN_METRICS_FILE
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, SCHEMA_KEY: SCHEMA_VERSION + 1}))
    with pytest.raises(ValueError, match=f"{TRAIN_METRICS_FILE}.*newer"):
        collect_training(tmp_path)
    path.write_text(json.dumps({**data, "history": [{"step": 0}, {"step": 0}]}))
    with pytest.raises(ValueError, match="distinct integer 'step'"):
        TrainResult.read(folder)
    with pytest.raises(ValueError, match="'s_eval' must be an integer ≥ 0"):
        EvalResult.from_json({"env": "a", "arm": "b", "seed": 0, "s_eval": -1, "success_rate": 0.5})
    with pytest.raises(ValueError, match="metric 'success_rate' must be a number"):
        EvalResult.from_json({"env": "a", "arm": "b", "seed": 0, "s_eval": 1, "success_rate": "high"})
    (folder / RUN_FILE).write_text(json.dumps({"arm": "supo", "seed": "zero"}))
    with pytest.raises(PreflightError, match=f"run info .*{RUN_FILE}: 'seed' must be an integer"):
        read_run_info(folder)


def test_files_written_before_versioning_still_read():
    legacy = {"env": "array", "arm": "supo", "seed": 0, "s_eval": 4, "working_context": 128, "split": "test",
              "success_rate": 0.5, "max_working_context_tokens": math.inf}
    result = EvalResult.from_json(legacy)
    assert result.metrics == {"success_rate": 0.5, "max_working_context_tokens": math.inf}
    assert RunInfo.from_json({"arm": "supo", "algo": "supo", "seed": 1, "max_summaries": 4, "working_context": 128,
                              "steps_done": 6, "mlflow_run_id": None}).steps_done == 6
