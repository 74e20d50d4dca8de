"""Tests for supo.data: parquet task splits and demonstrations, and the errors that name the file, row and column."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from supo.data import (
    DEMO_COLUMNS,
    TASK_COLUMNS,
    read_demos,
    read_tasks,
    split_path,
    write_demos,
    write_rollouts_jsonl,
    write_tasks,
)
from supo.envs.array import make_tasks
from supo.errors import DataError
from supo.types import Rollout, Segment


@pytest.fixture
def tasks():
    return make_tasks("train", 12, 2, 6, ["max", "sum"], 99, seed=5)


def _rows(tasks):
    return [t.to_row() for t in tasks]


def _write_rows(path, rows):
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _rollout(task_id: str, vocab: int = 50) -> Rollout:
    s0 = Segment([1, 2, 3], [4, 5, 6, 7], [1, 1, 0, 1], [0.0] * 4, index=0)
    t0 = Segment([1, 2, 3, 4], [8, 9], [1, 1], [0.0, 0.0], index=0, kind="trigger_action")
    s1 = Segment([1, 2, 10], [11, vocab - 1], [1, 1], [0.0, 0.0], index=1, is_last=True)
    return Rollout(task_id=task_id, group_id=f"{task_id}@0", index=0, reward=1.0, finished=True, num_summaries=1,
                   segments=[s0, s1, t0])


def _demo_row(i: int, **kw):
    row = {"task_id": f"t{i}", "segment_index": 0, "kind": "segment", "prompt_ids": [1, 2], "response_ids": [3, 4],
           "response_mask": [1, 0], "reward": 1.0, "num_summaries": 0}
    row.update(kw)
    return row


# ---------------------------------------------------------------------------------------------------------------------
# tasks


def test_tasks_round_trip(tmp_path, tasks):
    path = split_path(tmp_path / "data", "train")
    assert path.name == "train.parquet"
    write_tasks(tasks, path)  # creates the folder
    back = read_tasks(path)
    assert back == tasks
    assert all(isinstance(t.difficulty, int) and isinstance(t.env_config["values"][0], int) for t in back)


def test_missing_tasks_file_points_to_prepare(tmp_path):
    with pytest.raises(DataError) as ei:
        read_tasks(tmp_path / "train.parquet")
    assert "supo-cli prepare" in str(ei.value)
    assert "train.parquet" in str(ei.value)


def test_unreadable_tasks_file(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(DataError, match="parquet"):
        read_tasks(path)


@pytest.mark.parametrize("column", TASK_COLUMNS)
def test_tasks_file_missing_a_column_names_it(tmp_path, tasks, column):
    rows = [{k: v for k, v in r.items() if k != column} for r in _rows(tasks)]
    path = _write_rows(tmp_path / "train.parquet", rows)
    with pytest.raises(DataError) as ei:
        read_tasks(path)
    assert repr(column) in str(ei.value) or column in str(ei.value)
    assert "lacks column" in str(ei.value)


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("prompt", '[{"role": "user", "content": "hi"'),  # truncated JSON
        ("prompt", "not json at all"),
        ("prompt", '{"role": "user"}'),  # JSON, but not a list of messages
        ("prompt", '[{"role": "user"}]'),  # a message without content
        ("env_config", "{family: max}"),
        ("env_config", "[1, 2]"),
        ("difficulty", "hard"),
    ],
)
def test_malformed_row_names_row_index(tmp_path, tasks, column, bad):
    rows = _rows(tasks)
    rows[3][column] = bad
    if column == "difficulty":
        for r in rows:
            r[column] = str(r[column])
        rows[3][column] = bad
    path = _write_rows(tmp_path / "train.parquet", rows)
    with pytest.raises(DataError) as ei:
        read_tasks(path)
    msg = str(ei.value)
    assert "row 3" in msg
    assert tasks[3].id in msg
    assert "train.parquet" in msg


def test_duplicate_task_ids_rejected(tmp_path, tasks):
    rows = _rows(tasks)
    rows[7]["id"] = rows[2]["id"]
    path = _write_rows(tmp_path / "train.parquet", rows)
    with pytest.raises(DataError) as ei:
        read_tasks(path)
    assert "duplicate" in str(ei.value) and "row 7" in str(ei.value) and rows[2]["id"] in str(ei.value)


def test_empty_tasks_file_rejected(tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame({c: pd.Series([], dtype=object) for c in TASK_COLUMNS}).to_parquet(path, index=False)
    with pytest.raises(DataError, match="no rows"):
        read_tasks(path)


# ---------------------------------------------------------------------------------------------------------------------
# demonstrations


def test_demos_round_trip(tmp_path):
    rollouts = [_rollout("a"), _rollout("b")]
    path = tmp_path / "demos" / "demos.parquet"
    n = write_demos(rollouts, path)
    assert n == 6
    segs = read_demos(path, vocab_size=50)
    expected = [s for r in rollouts for s in r.segments]
    assert len(segs) == len(expected)
    for got, want in zip(segs, expected):
        assert (got.prompt_ids, got.response_ids, got.response_mask) == (want.prompt_ids, want.response_ids,
                                                                          want.response_mask)
        assert (got.index, got.kind) == (want.index, want.kind)
        assert got.logprobs == [0.0] * len(want.response_ids)
        assert all(type(t) is int for t in got.prompt_ids + got.response_ids + got.response_mask)


def test_missing_demos_file_points_to_prepare(tmp_path):
    with pytest.raises(DataError, match="supo-cli prepare"):
        read_demos(tmp_path / "demos.parquet")


@pytest.mark.parametrize("column", DEMO_COLUMNS)
def test_demos_file_missing_a_column_names_it(tmp_path, column):
    rows = [{k: v for k, v in _demo_row(i).items() if k != column} for i in range(3)]
    path = _write_rows(tmp_path / "demos.parquet", rows)
    with pytest.raises(DataError) as ei:
        read_demos(path)
    assert column in str(ei.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"response_ids": [3, 50]},  # id == vocab size
        {"prompt_ids": [1, 999]},
        {"prompt_ids": [-1, 2]},
    ],
)
def test_demo_with_out_of_vocab_token_names_row(tmp_path, bad):
    rows = [_demo_row(i) for i in range(5)]
    rows[2].update(bad)
    path = _write_rows(tmp_path / "demos.parquet", rows)
    with pytest.raises(DataError) as ei:
        read_demos(path, vocab_size=50)
    assert "row 2" in str(ei.value) and "'t2'" in str(ei.value)
    assert "vocabulary" in str(ei.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"response_mask": [1]},  # shorter than response_ids
        {"response_mask": [1, 0, 1]},  # longer
        {"response_mask": [1, 2]},  # not 0/1
        {"prompt_ids": []},  # empty prompt
        {"kind": "summary"},  # unknown kind
        {"prompt_ids": None},
    ],
)
def test_malformed_demo_names_row(tmp_path, bad):
    rows = [_demo_row(i) for i in range(5)]
    rows[4].update(bad)
    path = _write_rows(tmp_path / "demos.parquet", rows)
    with pytest.raises(DataError) as ei:
        read_demos(path, vocab_size=50)
    assert "row 4" in str(ei.value) and "'t4'" in str(ei.value)


def test_rollouts_jsonl(tmp_path):
    path = tmp_path / "out" / "rollouts.jsonl"
    write_rollouts_jsonl([_rollout("a"), _rollout("b")], path)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert rec["task_id"] == "a" and rec["num_segments"] == 2 and "segments" not in rec
    write_rollouts_jsonl([_rollout("a")], path, with_tokens=True)
    rec = json.loads(path.read_text())
    assert [s["kind"] for s in rec["segments"]] == ["segment", "segment", "trigger_action"]


def test_update_json_merges_entries_and_names_a_bad_file(tmp_path):
    from supo.data import update_json

    path = tmp_path / "m" / "train.json"
    update_json(path, {"seed0": {"supo": {"steps": 2}}})
    update_json(path, {"seed0": {"grpo-w": {"steps": 3}}, "wall_seconds": 1.5})
    assert update_json(path, {"seed1": {"supo": {"steps": 4}}}) == {
        "seed0": {"supo": {"steps": 2}, "grpo-w": {"steps": 3}}, "wall_seconds": 1.5, "seed1": {"supo": {"steps": 4}}}
    path.write_text("[1]")
    with pytest.raises(DataError, match="train.json"):
        update_json(path, {"x": 1})


def test_a_corrupt_metrics_file_is_moved_aside_never_rewritten(tmp_path):
    """Issue 18: a merge into a corrupt file raised a bare JSONDecodeError naming no file. It is moved aside to
    <name>.corrupt-<timestamp> (its bytes kept), named with both paths, and nothing is merged over it."""
    from supo.data import update_json

    path = tmp_path / "eval.json"
    garbled = '{"seed0": {"supo": {"s5": 0.04}}}\n{"extra": 1}\n'  # what two unlocked writers left
    path.write_text(garbled)
    with pytest.raises(DataError) as e:
        update_json(path, {"seed1": {"supo": {"s5": 0.5}}})
    (aside,) = tmp_path.glob("eval.json.corrupt-*")
    assert aside.read_text() == garbled and not path.exists()
    assert str(e.value).startswith(f"metrics file {path}: not valid JSON (Extra data at line 2); moved aside to {aside}")
    path.write_text("{")
    with pytest.raises(DataError):
        update_json(path, {"x": 1})
    assert len(list(tmp_path.glob("eval.json.corrupt-*"))) == 2  # a second one gets its own name
    assert update_json(path, {"x": 1}) == {"x": 1}  # the next run starts a new file
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("eval.json.corrupt-")) == [
        ".eval.json.lock", "eval.json"]  # no temporary file left behind


MERGER = """
import sys, time
from pathlib import Path
from supo.data import update_json
path, k, n, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
(folder / f"ready-{k}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
for i in range(n):
    update_json(path, {"seed0": {f"proc{k}": {f"s{i}": {"i": i}}}, f"last{k}": i})
"""


def test_two_processes_merging_300_times_each_lose_nothing(tmp_path):
    """Issue 18's stress case with real processes: 2 × 300 merges into one file under the lock, each written to a
    temporary file and renamed — valid JSON holding all 600 entries at the end (unlocked, one trial left invalid JSON
    and another kept 35 and 147 of 300)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    path, n = tmp_path / "metrics" / "eval.json", 300
    repo = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", MERGER, str(path), str(k), str(n), str(tmp_path)], cwd=repo)
             for k in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{k}").exists() for k in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start merging at once
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    data = json.loads(path.read_text())
    for k in range(2):
        assert data["seed0"][f"proc{k}"] == {f"s{i}": {"i": i} for i in range(n)}
        assert data[f"last{k}"] == n - 1
    assert sum(len(v) for v in data["seed0"].values()) == 2 * n
    assert not list(path.parent.glob("*.tmp")) and not list(path.parent.glob("eval.json.corrupt-*"))


# ---------------------------------------------------------------------------------------------------------------------
# env_config checked by the row's environment when a split is read


def test_a_wrong_env_config_is_named_with_file_row_and_field(tmp_path, tasks):
    rows = _rows(tasks)
    cfg = json.loads(rows[4]["env_config"])
    rows[4]["env_config"] = json.dumps({**cfg, "values": "abc"})  # valid JSON, wrong content
    path = _write_rows(tmp_path / "train.parquet", rows)
    with pytest.raises(DataError) as e:
        read_tasks(path)
    assert str(e.value).startswith(f"{path}, row 4 (id 'train-00004'): env_config.values: expected a non-empty list "
                                   "of integers, got 'abc'")


def test_an_unknown_env_in_a_row_is_named(tmp_path, tasks):
    rows = _rows(tasks)
    rows[2]["env"] = "arrray"
    with pytest.raises(DataError, match=r"row 2 .*unknown environment 'arrray'"):
        read_tasks(_write_rows(tmp_path / "train.parquet", rows))


def test_check_parquet_reads_the_footer_only_and_names_what_is_wrong(tmp_path):
    from supo.data import check_parquet

    path = tmp_path / "demos.parquet"
    rows = write_demos([_rollout("t0"), _rollout("t1")], path)
    assert check_parquet(path, DEMO_COLUMNS, "demonstrations") == rows == 6  # list columns found by their names
    with pytest.raises(DataError, match="lacks column\\(s\\) \\['advantage'\\]"):
        check_parquet(path, [*DEMO_COLUMNS, "advantage"], "demonstrations")
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=f"demonstrations file {path} is not a readable parquet file"):
        check_parquet(path, DEMO_COLUMNS, "demonstrations")
    with pytest.raises(DataError, match="run `supo-cli prepare` first"):
        check_parquet(tmp_path / "none.parquet", DEMO_COLUMNS, "demonstrations")


# ---------------------------------------------------------------------------------------------------------------------
# issue 18: null cells and out-of-range array rows


@pytest.mark.parametrize("null", [None, float("nan")])
def test_a_null_env_config_names_the_field(tmp_path, tasks, null):
    """Issue 18: `env_config: null` failed with "the JSON object must be str…, not float", naming no field."""
    rows = _rows(tasks)
    rows[5]["env_config"] = null
    path = _write_rows(tmp_path / "train.parquet", rows)
    with pytest.raises(DataError) as e:
        read_tasks(path)
    assert str(e.value) == f"{path}, row 5 (id 'train-00005'): env_config: missing (null)"


@pytest.mark.parametrize("text, needle", [
    ("null", "env_config: expected a JSON object, got null"),
    ("5", "env_config: expected a JSON object, got int"),
    ("{}", "env_config.family: missing"),
])
def test_an_env_config_that_is_not_an_object_names_the_field(tmp_path, tasks, text, needle):
    rows = _rows(tasks)
    rows[2]["env_config"] = text
    with pytest.raises(DataError, match=f"row 2 \\(id 'train-00002'\\): {needle}"):
        read_tasks(_write_rows(tmp_path / "train.parquet", rows))


@pytest.mark.parametrize("change, needle", [
    ({"values": [3, 10**6, 4]}, "env_config.values\\[1\\]: 1000000 is outside 0..99 \\(its value_max\\)"),
    ({"values": [-5]}, "env_config.values\\[0\\]: -5 is outside 0..99"),
    ({"values": [2**70]}, "env_config.values\\[0\\]: 1180591620717411303424 is outside 0..99"),
    ({"values": [0] * 100_000}, "env_config.values: 100000 values; the array env takes at most 1000"),
    ({"value_max": 2**70}, "env_config.value_max: expected an integer in 1..10000"),
    ({"value_max": None, "values": [150]}, "env_config.values\\[0\\]: 150 is outside 0..99 \\(the default: the "
                                           "row gives no value_max\\)"),
])
def test_array_rows_outside_the_envs_declared_ranges_are_row_errors(tmp_path, tasks, change, needle):
    """Issue 18: values 10⁶, −5, 2⁷⁰ and 100,000 values were accepted and evaluated."""
    rows = _rows(tasks)
    cfg = {**json.loads(rows[6]["env_config"]), **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    rows[6]["env_config"] = json.dumps(cfg)
    path = _write_rows(tmp_path / "train.parquet", rows)
    with pytest.raises(DataError, match=f"^{path}, row 6 \\(id 'train-00006'\\): {needle}"):
        read_tasks(path)


def test_array_rows_inside_the_declared_ranges_pass():
    from supo.envs.array import ROW_MAX_VALUES, ROW_VALUE_MAX, validate_env_config

    validate_env_config({"family": "sum", "values": [0, 99]})
    validate_env_config({"family": "sum", "values": [ROW_VALUE_MAX] * ROW_MAX_VALUES, "value_max": ROW_VALUE_MAX})
