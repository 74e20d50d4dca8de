"""Smoke runs of the benchmarks in bench/ (their ``--quick`` settings, models built in a temporary folder): each
prints its side-by-side table with a ratio column holding finite positive numbers."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"^(\d+(?:\.\d+)?)x?$")


def run_bench(script: str, *args: str) -> str:
    # a wide console: rich wraps a cell that does not fit 80 columns onto a second line, which the parser reads as ''
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "240"}
    proc = subprocess.run([sys.executable, f"bench/{script}", "--quick", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


def parse_table(out: str) -> tuple[list[str], list[list[str]]]:
    """The header and body cells of the (single-line-cell) rich table printed in ``out``."""
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    cells = lambda line, sep: [c.strip() for c in line.strip().strip(sep).split(sep)]  # noqa: E731
    rows = [cells(line, "│") for line in lines if line.startswith("│")]
    return cells(header, "┃"), rows


def positive(cell: str) -> float:
    m = NUMBER.match(cell)
    assert m, f"not a number: {cell!r}"
    value = float(m.group(1))
    assert math.isfinite(value) and value > 0, cell
    return value


def test_rollout_throughput_quick(tmp_path):
    out = run_bench("rollout_throughput.py", "--workdir", str(tmp_path))
    header, rows = parse_table(out)
    assert "vLLM/HF" in header and "vLLM/hf" in header
    col = {name: header.index(name) for name in ("metric", "vLLM", "hf", "HF", "vLLM/hf", "vLLM/HF")}
    rates = [r for r in rows if r[col["metric"]].startswith(("generated tok/s", "processed tok/s", "turns/s"))]
    assert len(rates) == 6  # three rates for each of the two models
    for r in rates:
        for name in ("vLLM", "hf", "HF", "vLLM/hf", "vLLM/HF"):
            positive(r[col[name]])
    assert re.search(r"25M \(random\): [\d,]+ parameters", out)


def test_cost_growth_quick(tmp_path):
    png = tmp_path / "plot.png"
    out = run_bench("cost_growth.py", "--workdir", str(tmp_path / "work"), "--out", str(png))
    header, rows = parse_table(out)
    ratios = [i for i, name in enumerate(header) if name.endswith("GRPO/SUPO")]
    assert len(ratios) == 3  # tokens processed, wall time cached, wall time without reuse
    assert rows
    for r in rows:
        for i in ratios:
            positive(r[i])
    assert "crossing, tokens processed: GRPO's cumulative cost exceeds SUPO's from step" in out
    assert png.exists() and png.stat().st_size > 0


def test_seeded_sampling_quick(tmp_path):
    out = run_bench("seeded_sampling.py", "--workdir", str(tmp_path))
    rows = {line.split("  ")[0]: line for line in out.splitlines() if line.startswith(("unseeded", "per-request"))}
    assert len(rows) == 2
    for line in rows.values():
        seconds, tokens, rate = line.split()[-3:]
        assert float(seconds) > 0 and int(tokens) > 0 and float(rate) > 0
    m = re.search(r"relative to the unseeded one: (\d+\.\d+)x", out)
    assert m and float(m.group(1)) > 0
