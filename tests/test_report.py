"""Tests for supo.report on real metric files written into tmp_path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from supo.report import (
    FIGURE_NAME,
    collect_evals,
    collect_training,
    render_markdown,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
W = 512


def _eval_metrics(arm: str, s_eval: int, success: float) -> dict[str, Any]:
    """A metrics.json payload; numbers derived from the inputs so the test can predict them."""
    return {
        "arm": arm,
        "s_eval": s_eval,
        "working_context": W,
        "split": "test",
        "checkpoint": f"checkpoints/{arm}/final",
        "num_rollouts": 64,
        "success_rate": success,
        "mean_reward": success,
        "mean_tool_calls": 3.0 + s_eval,
        "mean_summaries": 0.5 * s_eval,
        "summary_format_miss_rate": 0.0125,
        "mean_working_context_tokens": 300.4,
        "max_working_context_tokens": 500,
        "effective_context_tokens": W * (s_eval + 1),
        "overlong_rate": 0.25,
        "masked_rollout_frac": 0.1,
        "degenerate_group_frac": 0.2,
        "segments_per_rollout": 1 + 0.5 * s_eval,
        "tokens_generated": 1000,
        "tokens_processed": 12345 + s_eval,
        "rollout_seconds": 12.5,
    }


SUCCESS = {("grpo", 0): 0.2, ("grpo", 1): 0.25, ("grpo", 3): 0.3, ("supo", 0): 0.3, ("supo", 1): 0.45, ("supo", 3): 0.6}


def _write(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload) if not isinstance(payload, str) else payload)


@pytest.fixture()
def evals_dir(tmp_path: Path) -> Path:
    root = tmp_path / "evals"
    # Written in a scrambled order: the report must sort them.
    for arm, s_eval in [("supo", 3), ("grpo", 1), ("supo", 0), ("grpo", 3), ("supo", 1), ("grpo", 0)]:
        payload = _eval_metrics(arm, s_eval, SUCCESS[(arm, s_eval)])
        if (arm, s_eval) == ("grpo", 3):
            del payload["overlong_rate"]  # a missing metric shows as a dash
        _write(root / arm / f"s{s_eval}" / "metrics.json", payload)
    return root


@pytest.fixture()
def checkpoints_dir(tmp_path: Path) -> Path:
    root = tmp_path / "checkpoints"
    for arm, rewards in [("supo", [0.1, 0.3, 0.55]), ("grpo", [0.1, 0.2, 0.25])]:
        # History deliberately out of order: first/last are by step.
        history = [
            {"step": step, "mean_reward": r, "success_rate": r / 2, "mean_summaries": float(step)}
            for step, r in zip([2, 0, 1], [rewards[2], rewards[0], rewards[1]], strict=True)
        ]
        _write(root / arm / "train_metrics.json", {"arm": arm, "history": history})
    return root


def _table_rows(markdown: str, header_start: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and body rows of the first markdown table whose header starts with header_start."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows: list[list[str]] = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return header, rows


def test_collect_evals_sorted_rows(evals_dir: Path) -> None:
    frame = collect_evals(evals_dir)
    assert list(zip(frame["arm"], frame["s_eval"], strict=True)) == [
        ("grpo", 0), ("grpo", 1), ("grpo", 3), ("supo", 0), ("supo", 1), ("supo", 3)
    ]
    assert frame.loc[5, "success_rate"] == pytest.approx(0.6)


def test_markdown_eval_table_rows_and_values(evals_dir: Path, checkpoints_dir: Path) -> None:
    md = render_markdown(collect_evals(evals_dir), collect_training(checkpoints_dir))
    assert md.startswith("# ")
    header, rows = _table_rows(md, "| arm | S_eval |")
    assert header == [
        "arm", "S_eval", "W", "success_rate", "mean_tool_calls", "mean_summaries",
        "mean_working_context_tokens", "max_working_context_tokens", "effective_context_tokens",
        "overlong_rate", "summary_format_miss_rate", "tokens_processed",
    ]
    assert [(r[0], r[1]) for r in rows] == [
        ("grpo", "0"), ("grpo", "1"), ("grpo", "3"), ("supo", "0"), ("supo", "1"), ("supo", "3")
    ]
    by_key = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in rows}
    supo3 = by_key[("supo", "3")]
    assert supo3 == {
        "arm": "supo",
        "S_eval": "3",
        "W": "512",
        "success_rate": "0.600",
        "mean_tool_calls": "6.00",
        "mean_summaries": "1.50",
        "mean_working_context_tokens": "300",
        "max_working_context_tokens": "500",
        "effective_context_tokens": str(512 * 4),
        "overlong_rate": "0.250",
        "summary_format_miss_rate": "0.013",
        "tokens_processed": "12348",
    }
    assert by_key[("grpo", "3")]["overlong_rate"] == "–"
    assert by_key[("grpo", "0")]["success_rate"] == "0.200"


def test_markdown_training_first_last_change(evals_dir: Path, checkpoints_dir: Path) -> None:
    training = collect_training(checkpoints_dir)
    assert [row["step"] for row in training["supo"]] == [0, 1, 2]
    md = render_markdown(collect_evals(evals_dir), training)
    training_md = md[md.index("## Training") :]
    assert training_md.index("### grpo") < training_md.index("### supo")
    supo_md = training_md[training_md.index("### supo") :]
    header, rows = _table_rows(supo_md, "| metric |")
    assert header == ["metric", "step 0", "step 2", "change"]
    assert rows == [
        ["mean_reward", "0.100", "0.550", "+0.450"],
        ["success_rate", "0.050", "0.275", "+0.225"],
        ["mean_summaries", "0.000", "2.000", "+2.000"],
    ]


def test_write_report_outputs(evals_dir: Path, checkpoints_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report"
    md_path = write_report(evals_dir, checkpoints_dir, out)
    assert md_path == out / "report.md"
    md = md_path.read_text()
    assert f"]({FIGURE_NAME})" in md
    png = out / FIGURE_NAME
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 1000

    summary = json.loads((out / "summary.json").read_text())
    assert summary["supo/s3/success_rate"] == pytest.approx(0.6)
    assert summary["grpo/s0/success_rate"] == pytest.approx(0.2)
    assert summary["supo/s1/tokens_processed"] == 12346
    assert "grpo/s3/overlong_rate" not in summary  # missing in that file
    assert "supo/s3/overlong_rate" in summary
    # Meta keys are not metrics.
    assert not any(key.endswith(("/arm", "/s_eval", "/split", "/checkpoint", "/working_context")) for key in summary)
    prefixes = {key.rsplit("/", 1)[0] for key in summary}
    assert prefixes == {f"{arm}/s{s}" for arm, s in SUCCESS}


def test_report_without_training(evals_dir: Path, tmp_path: Path) -> None:
    assert collect_training(tmp_path / "no-such-dir") == {}
    md = write_report(evals_dir, tmp_path / "no-such-dir", tmp_path / "out").read_text()
    assert "No training metrics found." in md


def test_malformed_json_names_file(evals_dir: Path) -> None:
    bad = evals_dir / "supo" / "s7" / "metrics.json"
    _write(bad, "{not json")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        collect_evals(evals_dir)


@pytest.mark.parametrize("drop", ["arm", "s_eval"])
def test_missing_identity_key_names_file(evals_dir: Path, drop: str) -> None:
    payload = _eval_metrics("supo", 7, 0.1)
    del payload[drop]
    bad = evals_dir / "supo" / "s7" / "metrics.json"
    _write(bad, payload)
    with pytest.raises(ValueError, match=f"{re.escape(str(bad))}.*'{drop}'"):
        collect_evals(evals_dir)


def test_duplicate_arm_s_eval_raises(evals_dir: Path) -> None:
    _write(evals_dir / "supo" / "s3_again" / "metrics.json", _eval_metrics("supo", 3, 0.9))
    with pytest.raises(ValueError, match="already comes from"):
        collect_evals(evals_dir)


def test_empty_dir_raises(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no eval metrics"):
        collect_evals(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        collect_evals(tmp_path / "missing")


def test_malformed_training_file_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "ck" / "supo" / "train_metrics.json"
    _write(bad, {"arm": "supo", "history": "nope"})
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        collect_training(tmp_path / "ck")
