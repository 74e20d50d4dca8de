"""Tests for supo.report on synthetic eval / training files written into tmp_path (no engine, no model).

Two environments are built with known numbers: in ``array`` (S = 3, W = 224) every claim holds, in ``search``
(S = 2, W = 512) every claim fails (C2 on the working context, C4 on one ablation). Each seed's success is the arm's
base value −0.02 (seed 0) or +0.02 (seed 1), so every mean is the base value and every std is 0.04 / √2.
"""

from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from supo.report import (
    DEFAULT_ROLES,
    NOT_EVALUATED,
    ArmRoles,
    Bullets,
    Heading,
    Image,
    Para,
    Stat,
    Table,
    claim_c1,
    claim_c2,
    claim_c3,
    claim_c4,
    collect_evals,
    collect_training,
    compare,
    log_report,
    render_html,
    render_markdown,
    roles_from_config,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1)
SPREAD = 0.02
STD = 2 * SPREAD / math.sqrt(2)  # sample std of (m − 0.02, m + 0.02)
ARMS = ("grpo-w", "grpo-weff", "supo", "supo-no-mask", "supo-eq4")

ENVS: dict[str, dict[str, Any]] = {
    "array": {
        "S": 3, "W": 224,
        "success": {  # base success by arm and S_eval (grid 0, 1, 3, 6, 12)
            "sft": {0: 0.10, 1: 0.20, 3: 0.30, 6: 0.30, 12: 0.28},
            "grpo-w": {0: 0.30, 1: 0.32, 3: 0.33, 6: 0.33, 12: 0.33},
            "grpo-weff": {0: 0.62, 1: 0.60, 3: 0.58, 6: 0.55, 12: 0.50},
            "supo": {0: 0.20, 1: 0.40, 3: 0.60, 6: 0.70, 12: 0.65},
            "supo-no-mask": {0: 0.15, 1: 0.35, 3: 0.50, 6: 0.52, 12: 0.50},
            "supo-eq4": {0: 0.18, 1: 0.38, 3: 0.55, 6: 0.56, 12: 0.55},
        },
        "supo_max_wc": 220,  # ≤ W
    },
    "search": {
        "S": 2, "W": 512,
        "success": {  # grid 0, 1, 2, 4, 8
            "sft": {0: 0.05, 1: 0.10, 2: 0.15, 4: 0.15, 8: 0.15},
            "grpo-w": {0: 0.40, 1: 0.40, 2: 0.40, 4: 0.40, 8: 0.40},
            "grpo-weff": {0: 0.30, 1: 0.30, 2: 0.30, 4: 0.30, 8: 0.30},
            "supo": {0: 0.20, 1: 0.25, 2: 0.30, 4: 0.28, 8: 0.26},
            "supo-no-mask": {0: 0.10, 1: 0.20, 2: 0.25, 4: 0.25, 8: 0.25},
            "supo-eq4": {0: 0.20, 1: 0.30, 2: 0.35, 4: 0.30, 8: 0.30},
        },
        "supo_max_wc": 600,  # > W: C2 fails on the working context although success matches GRPO-Weff
    },
}


def _s_train(env: str, arm: str) -> int:
    return 0 if arm.startswith("grpo") else ENVS[env]["S"]


def _w_train(env: str, arm: str) -> int:
    W = ENVS[env]["W"]
    return W * (ENVS[env]["S"] + 1) if arm == "grpo-weff" else W


def _success(env: str, arm: str, s: int, seed: int) -> float:
    return round(ENVS[env]["success"][arm][s] + (SPREAD if seed == 1 else -SPREAD), 10)


def _max_wc(env: str, arm: str, s: int, seed: int) -> int:
    """The supo arm at its S has the env's designed peak on seed 1 (seed 0 a bit lower); other runs stay ≤ W. Where the peak
    passes W the mean working context does too (peak − 40); elsewhere it is 150 (+10 on seed 1)."""
    if arm == "supo" and s == ENVS[env]["S"]:
        return ENVS[env]["supo_max_wc"] - (10 if seed == 0 else 0)
    return _w_train(env, arm) - 4


def _write(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def _eval_payload(env: str, arm: str, seed: int, s: int) -> dict[str, Any]:
    W = _w_train(env, arm)
    return {
        "env": env, "arm": arm, "seed": seed, "s_eval": s, "working_context": W, "split": "test",
        "checkpoint": f"checkpoints/{env}/{arm}/seed{seed}", "num_rollouts": 64, "temperature": 1.0,
        "success_rate": _success(env, arm, s, seed),
        "mean_reward": _success(env, arm, s, seed),
        "mean_tool_calls": 10.0 + seed,  # mean 10.5, std 1/√2
        "mean_summaries": min(s, 2) * 0.5,
        "summary_format_miss_rate": 0.0,
        "mean_working_context_tokens": (_max_wc(env, arm, s, seed) - 40.0 if _max_wc(env, arm, s, seed) > W
                                        else 150.0 + 10 * seed),  # mean 155 where the peak stays ≤ W
        "max_working_context_tokens": _max_wc(env, arm, s, seed),
        "effective_context_tokens": W * (s + 1),
        "overlong_rate": 0.1, "degenerate_group_frac": 0.0, "segments_per_rollout": 1 + min(s, 2) * 0.5,
        "tokens_generated": 1000, "tokens_processed": 5000, "rollout_seconds": 3.0, "engine_tokens_per_second": 300.0,
    }


def _history(arm: str, seed: int, steps: int = 12) -> list[dict[str, Any]]:
    """Reward rises linearly by 0.01 a step from 0.1 (+0.1 for supo arms, +0.02 for seed 1); written out of order."""
    base = 0.1 + (0.1 if arm.startswith("supo") else 0.0) + 0.02 * seed
    rows = [{"step": k, "mean_reward": round(base + 0.01 * k, 10), "success_rate": round((base + 0.01 * k) / 2, 10),
             "mean_summaries": 1.0, "overlong_rate": 0.0, "mean_tool_calls": 5.0, "step_seconds": 1.0}
            for k in range(steps)]
    return rows[::-1]


def build_pipeline(root: Path, envs: tuple[str, ...] = ("array", "search"), skip: tuple[tuple, ...] = (),
                   run_ids: dict[tuple[str, str, int], str] | None = None) -> tuple[Path, Path]:
    """Write evals/ and checkpoints/ as the pipeline would; ``skip`` holds (env, arm) or (env, arm, seed) to leave out."""
    evals, ckpts = root / "evals", root / "checkpoints"
    for env in envs:
        grid = sorted(ENVS[env]["success"]["supo"])
        for arm in ("sft", *ARMS):
            for seed in ((0,) if arm == "sft" else SEEDS):
                if (env, arm) in skip or (env, arm, seed) in skip:
                    continue
                for s in grid:
                    _write(evals / env / arm / f"seed{seed}" / f"s{s}" / "metrics.json", _eval_payload(env, arm, seed, s))
                if arm == "sft":
                    continue
                folder = ckpts / env / arm / f"seed{seed}"
                _write(folder / "train_metrics.json", {
                    "env": env, "arm": arm, "seed": seed, "algo": "grpo" if arm.startswith("grpo") else "supo",
                    "max_summaries": _s_train(env, arm), "working_context": _w_train(env, arm),
                    "history": _history(arm, seed)})
                run_id = (run_ids or {}).get((env, arm, seed))
                _write(folder / "supo_run.json", {"arm": arm, "seed": seed, "mlflow_run_id": run_id})
    return evals, ckpts


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    """The report of both environments, written once for the tests that only read it."""
    root = tmp_path_factory.mktemp("pipeline")
    evals, ckpts = build_pipeline(root)
    return write_report(evals, ckpts, root / "reports", envs=["array", "search"], arms=ARMS, seeds=SEEDS)


def _claims(files, env: str) -> dict[str, Any]:
    return {c.key: c for c in files.claims[env]}


# ------------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------------


def test_collect_reads_every_run_with_labels(tmp_path: Path) -> None:
    evals, ckpts = build_pipeline(tmp_path)
    runs = collect_evals(evals)
    assert len(runs) == 2 * (1 + 5 * 2) * 5  # envs × (sft + arms × seeds) × S_eval grid
    assert {(r.env, r.arm) for r in runs} >= {("array", "sft"), ("search", "supo-eq4")}
    r = next(r for r in runs if (r.env, r.arm, r.seed, r.s_eval) == ("array", "supo", 1, 6))
    assert r.metrics["success_rate"] == pytest.approx(0.72) and r.working_context == 224
    training = collect_training(ckpts)
    assert len(training) == 2 * 5 * 2
    t = next(t for t in training if (t.env, t.arm, t.seed) == ("array", "grpo-weff", 0))
    assert t.algo == "grpo" and t.max_summaries == 0 and t.working_context == 224 * 4
    assert [row["step"] for row in t.history] == list(range(12))  # sorted by step
    assert t.checkpoint == ckpts / "array" / "grpo-weff" / "seed0"


def test_labels_fall_back_to_folder_names(tmp_path: Path) -> None:
    payload = _eval_payload("array", "supo", 1, 3)
    for key in ("env", "arm", "seed"):
        del payload[key]
    _write(tmp_path / "evals" / "array" / "supo" / "seed1" / "s3" / "metrics.json", payload)
    (run,) = collect_evals(tmp_path / "evals")
    assert (run.env, run.arm, run.seed, run.s_eval) == ("array", "supo", 1, 3)


def test_no_eval_files_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no eval metrics"):
        collect_evals(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "empty", tmp_path / "ckpts", tmp_path / "out")
    assert collect_training(tmp_path / "nothing") == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"env": "array", "arm": "supo", "seed": 0, "s_eval": 3}, "missing the metric 'success_rate'"),
        ({"env": "array", "arm": "supo", "seed": 0, "s_eval": 3, "success_rate": "high"}, "'success_rate' must be"),
        ({"env": "array", "arm": "supo", "seed": 0, "s_eval": 3, "success_rate": 1.5}, r"lie in \[0, 1\]"),
        ({"env": "array", "arm": "supo", "seed": "zero", "s_eval": 3, "success_rate": 0.5}, "invalid 'seed'"),
        ({"env": "array", "arm": "supo", "seed": 0, "s_eval": 4, "success_rate": 0.5}, "folder s3"),
        ({"env": "array", "arm": 7, "seed": 0, "s_eval": 3, "success_rate": 0.5}, "invalid 'arm'"),
    ],
)
def test_malformed_eval_file_names_the_file(tmp_path: Path, content: Any, message: str) -> None:
    path = _write(tmp_path / "evals" / "array" / "supo" / "seed0" / "s3" / "metrics.json", content)
    with pytest.raises(ValueError, match=message) as err:
        write_report(tmp_path / "evals", tmp_path / "ckpts", tmp_path / "out")
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("nope", "not valid JSON"),
        ({"env": "array", "arm": "supo", "seed": 0, "history": {"step": 0}}, "'history' must be a list"),
        ({"env": "array", "arm": "supo", "seed": 0, "history": [{"mean_reward": 0.1}]}, "integer 'step'"),
        ({"env": "array", "arm": "supo", "seed": 0, "history": [{"step": 0}, {"step": 0}]}, "appears twice"),
        ({"env": "array", "arm": "supo", "seed": 0, "history": [{"step": 0, "mean_reward": "x"}]}, "'mean_reward'"),
        ({"env": "array", "arm": "supo", "seed": 0, "max_summaries": -1, "history": []}, "'max_summaries'"),
    ],
)
def test_malformed_training_file_names_the_file(tmp_path: Path, content: Any, message: str) -> None:
    _write(tmp_path / "evals" / "array" / "supo" / "seed0" / "s3" / "metrics.json",
           _eval_payload("array", "supo", 0, 3))
    path = _write(tmp_path / "ckpts" / "array" / "supo" / "seed0" / "train_metrics.json", content)
    with pytest.raises(ValueError, match=message) as err:
        write_report(tmp_path / "evals", tmp_path / "ckpts", tmp_path / "out")
    assert str(path) in str(err.value)


def test_duplicate_eval_run_is_an_error(tmp_path: Path) -> None:
    payload = _eval_payload("array", "supo", 0, 3)
    _write(tmp_path / "evals" / "array" / "supo" / "seed0" / "s3" / "metrics.json", payload)
    _write(tmp_path / "evals" / "copy" / "array" / "supo" / "seed0" / "s3" / "metrics.json", payload)
    with pytest.raises(ValueError, match="already comes from"):
        collect_evals(tmp_path / "evals")


# ------------------------------------------------------------------------------------------------------------------
# Statistics and the claim rules (pure functions)
# ------------------------------------------------------------------------------------------------------------------


def test_stat_and_comparison() -> None:
    s = Stat.of([0.5, 0.7])
    assert s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.2 / math.sqrt(2)) and s.n == 2
    assert str(s) == "0.600 ± 0.141 (n=2)"
    assert Stat.of([0.4]).std == 0.0
    c = compare(Stat(0.6, 0.03, 2), Stat(0.3, 0.04, 2))
    assert c.diff == pytest.approx(0.3) and c.pooled_std == pytest.approx(math.sqrt((0.03**2 + 0.04**2) / 2))
    assert c.beyond_noise and "exceeds the pooled seed std" in c.note()
    close = compare(Stat(0.61, 0.05, 2), Stat(0.60, 0.05, 2))
    assert close.beyond_noise is False and "margin within noise" in close.note()
    single = compare(Stat(0.6, 0.0, 1), Stat(0.5, 0.0, 1))
    assert single.pooled_std is None and single.beyond_noise is None and "no seed noise estimate" in single.note()


def _table(**cells: float) -> dict[tuple[str, int], Stat]:
    """``supo_3=0.6`` → {("supo", 3): Stat(0.6, 0.02, 2)}; arm names use _ for -."""
    out = {}
    for key, mean in cells.items():
        arm, s = key.rsplit("_", 1)
        out[(arm.replace("_", "-"), int(s))] = Stat(mean, 0.02, 2)
    return out


def test_claim_c1_both_ways_and_not_evaluated() -> None:
    held = claim_c1(_table(supo_3=0.6, grpo_w_0=0.3), 3)
    assert held.status == "held" and held.held is True
    assert held.rule == "mean success(supo @ S_eval=3) > mean success(grpo-w @ S_eval=0)"
    assert held.numbers["diff"] == pytest.approx(0.3)
    assert any("exceeds the pooled seed std 0.020" in e for e in held.evidence)
    assert claim_c1(_table(supo_3=0.3, grpo_w_0=0.3), 3).status == "not held"  # equal is not "beats"
    assert claim_c1(_table(supo_3=0.2, grpo_w_0=0.3), 3).held is False
    missing = claim_c1(_table(supo_3=0.6), 3)
    assert missing.status == NOT_EVALUATED and missing.label == "not evaluated (missing grpo-w @ S_eval=0)"
    assert claim_c1(_table(supo_3=0.6, grpo_w_0=0.3), None).label == "not evaluated (S_train unknown)"


def test_claim_c1_uses_the_roles_given() -> None:
    roles = ArmRoles(grpo_w="base", supo="mine")
    claim = claim_c1(_table(mine_2=0.5, base_0=0.4), 2, roles)
    assert claim.held is True and "mine @ S_eval=2" in claim.rule and "base @ S_eval=0" in claim.rule


def test_claim_c2_tolerance_and_working_context() -> None:
    success = {("supo", 3): Stat(0.60, 0.01, 2), ("grpo-weff", 0): Stat(0.62, 0.03, 2)}
    held = claim_c2(success, 3, supo_mean_working_context=200, supo_working_context=224,
                    supo_max_working_context=262)
    assert held.held is True and held.numbers["tolerance"] == pytest.approx(0.03)  # the larger std
    assert any("tolerance = max(0.010, 0.030) = 0.030" in e for e in held.evidence)
    assert any("margin within noise" in e for e in held.evidence)
    assert any("≤ W = 224: yes" in e and "max 262 (trigger turn included)" in e for e in held.evidence)
    too_low = {("supo", 3): Stat(0.58, 0.01, 2), ("grpo-weff", 0): Stat(0.62, 0.03, 2)}  # 0.58 < 0.62 − 0.03
    assert claim_c2(too_low, 3, 220, 224).held is False
    over = claim_c2(success, 3, supo_mean_working_context=230, supo_working_context=224)
    assert over.held is False and over.numbers["success_ok"] == 1.0 and over.numbers["context_ok"] == 0.0
    assert claim_c2(success, 3, 224, 224).held is True  # ≤ W, not < W
    assert "missing mean_working_context_tokens" in claim_c2(success, 3, None, 224).label
    assert claim_c2({("supo", 3): Stat(0.6, 0.0, 1)}, 3, 220, 224).label == \
        "not evaluated (missing grpo-weff @ S_eval=0)"


def test_claim_c3_both_ways() -> None:
    held = claim_c3(_table(supo_3=0.6, supo_6=0.7, supo_12=0.65), 3)
    assert held.held is True and held.numbers["best_s_eval"] == 6 and held.numbers["diff"] == pytest.approx(0.1)
    assert held.rule == ("max(mean success(supo @ S_eval=6), mean success(supo @ S_eval=12)) > "
                         "mean success(supo @ S_eval=3)")
    assert claim_c3(_table(supo_3=0.6, supo_12=0.61), 3).held is True  # only 4S evaluated: that one is used
    assert claim_c3(_table(supo_3=0.6, supo_6=0.6, supo_12=0.5), 3).held is False
    assert claim_c3(_table(supo_3=0.6, supo_1=0.9), 3).label == \
        "not evaluated (missing supo @ S_eval=6, supo @ S_eval=12)"
    assert claim_c3(_table(supo_0=0.6), 0).status == NOT_EVALUATED


def test_claim_c4_each_ablation_separately() -> None:
    held = claim_c4(_table(supo_3=0.6, supo_no_mask_3=0.5, supo_eq4_3=0.55), 3)
    assert held.held is True and held.numbers["supo-no-mask_held"] == 1.0 and held.numbers["supo-eq4_held"] == 1.0
    one_fails = claim_c4(_table(supo_3=0.6, supo_no_mask_3=0.5, supo_eq4_3=0.65), 3)
    assert one_fails.held is False and one_fails.numbers["supo-no-mask_held"] == 1.0
    assert one_fails.numbers["supo-eq4_held"] == 0.0 and one_fails.numbers["supo-eq4_diff"] == pytest.approx(-0.05)
    partial = claim_c4(_table(supo_3=0.6, supo_no_mask_3=0.5), 3)
    assert partial.label == "not evaluated (missing supo-eq4 @ S_eval=3)"
    assert any("supo-no-mask @ S_eval=3" in e and ": yes" in e for e in partial.evidence)
    # a failing ablation decides even when another is missing
    assert claim_c4(_table(supo_3=0.6, supo_no_mask_3=0.7), 3).held is False
    assert claim_c4(_table(supo_3=0.6), 3, ArmRoles(ablations=())).label == \
        "not evaluated (no ablation arms configured)"


def test_roles_from_config() -> None:
    overrides = {"grpo-w": {"train.algo": "grpo"}, "grpo-weff": {"train.algo": "grpo",
                                                                "budget.use_effective_context": True},
                 "supo": {"train.algo": "supo"}, "supo-no-mask": {"train.algo": "supo", "train.overlong": "none"},
                 "supo-eq4": {"train.algo": "supo", "train.advantage": "segment"}}
    assert roles_from_config(list(overrides), overrides) == DEFAULT_ROLES
    renamed = {"base": {"train": {"algo": "grpo"}}, "wide": {"train.algo": "grpo", "budget.use_effective_context": True},
               "abl": {"train.algo": "supo", "train.ppo_epochs": 2}, "ours": {"train.algo": "supo"}}
    roles = roles_from_config(list(renamed), renamed)
    assert (roles.grpo_w, roles.grpo_weff, roles.supo, roles.ablations) == ("base", "wide", "ours", ("abl",))
    assert roles_from_config(["grpo-w", "supo"]).grpo_weff == "grpo-weff"  # unfilled role keeps its default


# ------------------------------------------------------------------------------------------------------------------
# The report end to end
# ------------------------------------------------------------------------------------------------------------------


def test_claims_hold_in_array_and_fail_in_search(report) -> None:
    array, search = _claims(report, "array"), _claims(report, "search")
    assert {k: c.status for k, c in array.items()} == {"C1": "held", "C2": "held", "C3": "held", "C4": "held"}
    assert {k: c.status for k, c in search.items()} == \
        {"C1": "not held", "C2": "not held", "C3": "not held", "C4": "not held"}
    assert array["C1"].numbers["supo_success"] == pytest.approx(0.60)
    assert array["C1"].numbers["baseline_success"] == pytest.approx(0.30)
    assert array["C1"].numbers["pooled_std"] == pytest.approx(STD)
    assert array["C2"].numbers["tolerance"] == pytest.approx(STD)
    assert array["C2"].numbers["max_working_context"] == 220 and array["C2"].numbers["working_context"] == 224
    assert array["C3"].numbers["best_s_eval"] == 6
    assert search["C2"].numbers["success_ok"] == 1.0 and search["C2"].numbers["max_working_context"] == 600
    assert search["C4"].numbers["supo-no-mask_held"] == 1.0 and search["C4"].numbers["supo-eq4_held"] == 0.0


def test_markdown_tables_carry_mean_and_std(report) -> None:
    md = report.markdown.read_text()
    std = f"{STD:.3f}"
    assert std == "0.028"
    # Table 1: supo in array at its own S_eval = 3, W = 224, effective context 224 × 4.
    row = next(line for line in md.splitlines() if line.startswith("| supo |") and f"0.600 ± {std}" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:6] == ["supo", "3", "3", "224", f"0.600 ± {std}", "2"]
    assert cells[6] == "155.0 ± 7.1" and cells[7] == "220" and cells[8] == "896"
    assert cells[9] == "10.50 ± 0.71"
    # GRPO-Weff at its own S_eval = 0 with its own W = 4 × 224.
    assert any(line.startswith("| grpo-weff | 0 | 0 | 896 | 0.620 ± 0.028 | 2 |") for line in md.splitlines())
    # The warm start row at S with a note (one seed: seed 0, base − 0.02).
    assert any(line.startswith("| sft | – | 3 | 224 | 0.280 ± 0.000 | 1 |") and "warm start" in line
               for line in md.splitlines())
    # Table 3: columns per S_eval, the arm's own setting in bold.
    assert "| arm | S_eval=0 | S_eval=1 | S_eval=3 | S_eval=6 | S_eval=12 |" in md
    assert f"| supo | 0.200 ± {std} (n=2) | 0.400 ± {std} (n=2) | **0.600 ± {std} (n=2)** | " \
           f"0.700 ± {std} (n=2) | 0.650 ± {std} (n=2) |" in md
    assert "| arm | S_eval=0 | S_eval=1 | S_eval=2 | S_eval=4 | S_eval=8 |" in md
    # Training table: first 5 steps mean 0.2 + 0.02 (+0.01 seed 1) vs last 5 steps (+0.07 over the first).
    supo_train = next(line for line in md.splitlines() if line.startswith("| supo | supo | 3 | 224 | 0, 1 | 12 |"))
    assert "0.230 ± 0.014" in supo_train and "0.300 ± 0.014" in supo_train and "0.070 ± 0.000" in supo_train


def test_report_states_rules_verdicts_and_summary(report) -> None:
    md = report.markdown.read_text()
    assert "| array | C1 | SUPO beats GRPO-W at the same working context | **held** |" in md
    assert "| search | C2 | SUPO matches or beats GRPO-Weff while its working context stays ≤ W | **not held** |" in md
    assert "**C1: SUPO beats GRPO-W at the same working context: held.**" in md
    assert "Rule: mean success(supo @ S_eval=3) > mean success(grpo-w @ S_eval=0)." in md
    assert "Rule: mean success(supo @ S_eval=2) > mean success(grpo-w @ S_eval=0)." in md
    assert f"supo @ S_eval=3: 0.600 ± {STD:.3f} (n=2)" in md
    assert "margin within noise" in md  # array C2: supo 0.60 vs grpo-weff 0.62, pooled std 0.028
    assert "supo working context 555 tokens (mean over 2 seeds; max 600 (trigger turn included)) ≤ W = 512: no" in md
    assert "array/supo: evaluated seeds 0, 1; trained seeds 0, 1" in md
    assert "search/sft: evaluated seeds 0" in md
    assert "Run count: 110 eval runs, 20 training runs." in md
    assert "Missing: nothing." in md
    assert "SUPO's training S = 3 (max_summaries of supo's train_metrics.json)" in md
    assert "![array: success rate against S_eval" in md and "(figures/array-success_vs_s_eval.png)" in md


def test_html_is_self_contained_with_valid_pngs(report) -> None:
    page = report.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert page.count('src="data:image/png;base64,') == 4
    assert 'src="figures/' not in page and "<link" not in page and "<script" not in page
    assert "<table>" in page and "<strong>held</strong>" in page and "0.600 ± 0.028 (n=2)" in page
    names = sorted(p.name for p in (report.out_dir / "figures").iterdir())
    assert names == ["array-success_vs_s_eval.png", "array-training_curves.png", "search-success_vs_s_eval.png",
                     "search-training_curves.png"]
    for name in names:
        data = (report.out_dir / "figures" / name).read_bytes()
        assert data[:8] == PNG_MAGIC
        width, height = struct.unpack(">II", data[16:24])
        assert width > 300 and height > 200


def test_summary_json(report) -> None:
    summary = json.loads(report.summary_json.read_text())
    assert summary == report.summary
    assert summary["eval_runs"] == 110 and summary["train_runs"] == 20
    assert summary["array.supo.s3.success_mean"] == pytest.approx(0.6)
    assert summary["array.supo.s3.success_std"] == pytest.approx(STD, abs=1e-6)
    assert summary["array.supo.s3.n_seeds"] == 2 and summary["array.sft.s3.n_seeds"] == 1
    assert summary["search.grpo-weff.s8.success_mean"] == pytest.approx(0.3)
    assert summary["array.supo.s3.max_working_context_tokens"] == 220
    assert summary["array.grpo-weff.s0.effective_context_tokens"] == 896
    assert summary["array.supo.s3.mean_tool_calls"] == pytest.approx(10.5)
    for claim in ("C1", "C2", "C3", "C4"):
        assert summary[f"array.{claim}_held"] == 1 and summary[f"search.{claim}_held"] == 0
        assert summary[f"array.{claim}_evaluated"] == 1
    assert summary["array.C1_diff"] == pytest.approx(0.3)
    assert summary["search.C4_supo-eq4_held"] == 0.0
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in summary.values())


def test_plot_csvs(report) -> None:
    with (report.out_dir / "plots" / "success_vs_s_eval.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["env", "arm", "s_eval", "success_rate", "success_std", "n_seeds"]
    assert len(rows) == 2 * 6 * 5
    row = next(r for r in rows if (r["env"], r["arm"], r["s_eval"]) == ("search", "supo", "4"))
    assert float(row["success_rate"]) == pytest.approx(0.28) and float(row["success_std"]) == pytest.approx(STD, abs=1e-6)
    assert row["n_seeds"] == "2"
    with (report.out_dir / "plots" / "training_curves.csv").open() as f:
        curves = list(csv.DictReader(f))
    assert list(curves[0]) == ["env", "arm", "step", "mean_reward", "success_rate"]
    assert len(curves) == 2 * 5 * 12
    point = next(r for r in curves if (r["env"], r["arm"], r["step"]) == ("array", "grpo-w", "10"))
    assert float(point["mean_reward"]) == pytest.approx(0.1 + 0.01 + 0.1)  # seeds 0 and 1 average to +0.01
    assert float(point["success_rate"]) == pytest.approx((0.1 + 0.01 + 0.1) / 2)


def test_missing_arm_and_seed_are_reported(tmp_path: Path) -> None:
    evals, ckpts = build_pipeline(tmp_path, envs=("array",), skip=(("array", "supo-eq4"), ("array", "grpo-w", 1)))
    files = write_report(evals, ckpts, tmp_path / "reports", envs=["array", "search"], arms=ARMS, seeds=SEEDS)
    claims = _claims(files, "array")
    assert claims["C4"].label == "not evaluated (missing supo-eq4 @ S_eval=3)"
    assert claims["C1"].held is True  # grpo-w from seed 0 only
    md = files.markdown.read_text()
    assert "array/supo-eq4 seed 0: no eval files" in md and "array/supo-eq4 seed 1: no train_metrics.json" in md
    assert "array/grpo-w seed 1: no eval files" in md and "search: no eval and no training files" in md
    assert "| array | C4 | each ablation scores lower than SUPO | **not evaluated (missing supo-eq4 @ S_eval=3)** |" in md
    assert "| search | C1 | SUPO beats GRPO-W at the same working context | **not evaluated (S_train unknown)** |" in md
    assert f"| grpo-w | 0 | 0 | 224 | {0.28:.3f} ± 0.000 | 1 |" in md
    assert files.summary["array.C4_evaluated"] == 0 and files.summary["array.C4_held"] == 0
    assert files.summary["array.grpo-w.s0.n_seeds"] == 1


def test_supo_s_is_inferred_from_the_grid_without_training_files(tmp_path: Path) -> None:
    evals, _ = build_pipeline(tmp_path, envs=("search",))
    files = write_report(evals, tmp_path / "no-checkpoints", tmp_path / "reports")
    (res,) = files.results
    assert res.s_train == 2 and "inferred from the S_eval grid" in res.s_train_source
    assert _claims(files, "search")["C1"].held is False
    assert not (files.out_dir / "figures" / "search-training_curves.png").exists()
    assert "No training files for this environment." in files.markdown.read_text()


def test_rendering_one_block_list_to_both_formats(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "f.png", format="png")
    blocks = [Heading("Title <1>", 1), Para("a **bold** `code|x` & more"), Bullets(("one", "two")),
              Table(("h1", "h|2"), (("a|b", "**c**"),)), Image("f.png", "a figure")]
    md = render_markdown(blocks)
    assert md.splitlines()[:3] == ["# Title <1>", "", "a **bold** `code|x` & more"]
    assert "| h1 | h\\|2 |" in md and "| a\\|b | **c** |" in md and "![a figure](f.png)" in md
    page = render_html(blocks, tmp_path, "t")
    assert "<h1>Title &lt;1&gt;</h1>" in page and "<strong>bold</strong> <code>code|x</code> &amp; more" in page
    assert "<li>one</li><li>two</li>" in page and "<td><strong>c</strong></td>" in page
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page


# ------------------------------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------------------------------


def test_log_report_to_a_real_sqlite_store(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from supo.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    with Tracker(uri, "supo-test", "array-train-supo-seed0", tags={"stage": "train"}) as tr:
        train_run_id = tr.run_id
    evals, ckpts = build_pipeline(tmp_path, envs=("array",),
                                  run_ids={("array", "supo", 0): train_run_id,
                                           ("array", "supo", 1): "0123456789abcdef0123456789abcdef"})  # not in store
    files = write_report(evals, ckpts, tmp_path / "reports")
    run_id, attached = log_report(files, uri, "supo-test", profile="tiny")
    assert attached == [train_run_id]

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "report" and run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "report" and run.data.tags["profile"] == "tiny"
    assert run.data.metrics["array.supo.s3.success_mean"] == pytest.approx(0.6)
    assert run.data.metrics["array.C1_held"] == 1.0
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.md", "report.html", "summary.json", "figures", "plots"} <= top
    assert {a.path for a in client.list_artifacts(run_id, "figures")} == \
        {"figures/array-success_vs_s_eval.png", "figures/array-training_curves.png"}
    assert {a.path for a in client.list_artifacts(train_run_id, "report")} == \
        {"report/array-success_vs_s_eval.png", "report/array-training_curves.png"}
    exp = client.get_experiment_by_name("supo-test")
    assert len(client.search_runs([exp.experiment_id])) == 2  # the training run and the report run
