"""Tests for supo.envs.codegym: CodeGym rows → tasks, and episodes (oracle replays, wrong answers, hostile calls in
either call syntax, the call limit). The sandbox that runs the untrusted env code: tests/test_env_codegym_sandbox.py.

The fixtures (tests/fixtures/codegym/) are three CodeGym-style environments written for these tests — a normal one
(RunningSumEnv, four unit tests), one whose tool never returns (SpinEnv) and one whose tool allocates without bound
and swallows the MemoryError (HoardEnv) — as rows of the CodeGym schema. No CodeGym environment is shipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from codegym_fixtures import MEMORY_MB, ROWS, SECONDS, cg_call, codegym_tasks

from supo.config import Config, ConfigError
from supo.envs import ENVS, get_env_spec
from supo.envs.base import format_tool_call as call
from supo.envs.codegym import (
    build_split,
    corpus,
    make_env,
    make_expert,
    oracle_actions,
    parse_codegym_call,
)
from supo.envs.codegym_rows import load_rows, split_tasks
from supo.errors import DataError
from supo.models import TOOL_CALL_CLOSE, TOOL_CALL_OPEN


def _rows() -> list[dict]:
    return [json.loads(line) for line in ROWS.read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------------------------
# rows → tasks


def test_fixture_rows_become_tasks():
    tasks = codegym_tasks()
    assert [t.id for t in tasks] == ["fixture_sum_001#0", "fixture_sum_001#1", "fixture_sum_001#2",
                                     "fixture_sum_001#3", "fixture_spin_002#4", "fixture_hoard_003#5"]
    t = tasks[1]
    assert t.env == "codegym" and t.difficulty == 11
    assert t.env_config["env_name"] == "RunningSumEnv"
    assert t.env_config["env_str"] == 'RunningSumEnv@{"numbers": [1, 5, 3, 8, 2]}'
    assert t.env_config["sandbox_seconds"] == SECONDS and t.env_config["max_calls"] == 256
    assert [m["role"] for m in t.prompt] == ["system", "user"] and all(set(m) == {"role", "content"} for m in t.prompt)
    assert "def GetNumber(index)" in t.prompt[0]["content"]
    assert json.loads(json.dumps(t.to_row()))  # serialisable as a task row


def test_parquet_rows_read_the_same(tmp_path):
    import pandas as pd

    path = tmp_path / "rows.parquet"
    pd.DataFrame(_rows()).to_parquet(path, index=False)
    a, b = codegym_tasks(), load_rows(path, sandbox_seconds=SECONDS, sandbox_memory_mb=MEMORY_MB)
    assert [(t.id, t.env_config, t.prompt, t.difficulty) for t in a] == [
        (t.id, t.env_config, t.prompt, t.difficulty) for t in b]


def test_split_is_by_environment_seeded_and_disjoint():
    tasks = codegym_tasks()
    s1, s2 = split_tasks(tasks, 0.34, seed=0), split_tasks(tasks, 0.34, seed=0)
    assert [t.id for t in s1["test"]] == [t.id for t in s2["test"]]
    train_envs = {t.env_config["code_id"] for t in s1["train"]}
    test_envs = {t.env_config["code_id"] for t in s1["test"]}
    assert train_envs and test_envs and not train_envs & test_envs
    assert len(s1["train"]) + len(s1["test"]) == 6
    assert {t.split for t in s1["test"]} == {"test"}


def test_build_split_from_config_and_registry():
    assert ENVS["codegym"] is get_env_spec("codegym")
    cfg = Config()
    with pytest.raises(ConfigError, match="files.codegym_path"):
        build_split(cfg, "train")
    cfg.files.codegym_path = str(ROWS)
    cfg.files.test_fraction = 0.34
    train, test = build_split(cfg, "train"), build_split(cfg, "test")
    assert len(train) + len(test) == 6 and {t.split for t in train} == {"train"}
    with pytest.raises(NotImplementedError, match="no scripted expert"):
        make_expert(train[0], 0.0, 0)
    texts = corpus(train)
    assert any("Observe" in x and TOOL_CALL_OPEN in x for x in texts)


BAD_ROWS = [
    (lambda r: r.pop("ability"), "field ability"),
    (lambda r: r.update(ability="codegym_v1@fixture_sum_001__not an env"), "field ability"),
    (lambda r: r.update(ability='codegym_v1@fixture_sum_001__RunningSumEnv@{nope'), "neither JSON nor a Python"),
    (lambda r: r.update(code_id="other_id"), "field code_id"),
    (lambda r: r.update(prompt="hello"), "field prompt"),
    (lambda r: r["prompt"][1].pop("content"), r"field prompt\[1\]"),
    (lambda r: r.pop("extra_info"), "field extra_info"),
    (lambda r: r["extra_info"].pop("gym_env"), "extra_info.gym_env"),
    (lambda r: r["extra_info"].update(gym_env="class RunningSumEnv(:\n"), "not valid Python"),
    (lambda r: r["extra_info"].update(gym_env="class Other:\n    pass\n"), "no top-level class 'RunningSumEnv'"),
    (lambda r: r["extra_info"].update(solve_fc_round="many"), "extra_info.solve_fc_round"),
    (lambda r: r.update(plugin_call_max_round=0), "plugin_call_max_round"),
]


@pytest.mark.parametrize("mutate,match", BAD_ROWS)
def test_malformed_rows_name_file_row_and_field(tmp_path, mutate, match):
    rows = _rows()
    mutate(rows[2])
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=rf"rows\.jsonl, row 2.*{match}"):
        load_rows(path)


def test_unreadable_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_rows(tmp_path / "missing.jsonl")
    bad = tmp_path / "rows.jsonl"
    bad.write_text(ROWS.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_rows(bad)
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="expected a .jsonl or .parquet"):
        load_rows(tmp_path / "rows.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no rows"):
        load_rows(tmp_path / "empty.jsonl")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable parquet"):
        load_rows(tmp_path / "broken.parquet")


# ----------------------------------------------------------------------------------------------------------------------
# episodes in the sandbox


def test_oracle_calls_replayed_solve_the_normal_env():
    for task in codegym_tasks()[:4]:
        actions = oracle_actions(task)
        assert len(actions) == task.difficulty  # the oracle's step count is the row's solve_fc_round
        env = make_env(task)
        env.reset()
        for k, a in enumerate(actions):
            if k % 2:  # the model may write either call syntax
                body = a[len(TOOL_CALL_OPEN):-len(TOOL_CALL_CLOSE)]
                a = f"<|FunctionCallBegin|>[{body}]<|FunctionCallEnd|>"
            obs, done, reward, info = env.step(a)
            assert not obs.startswith("Error"), obs
            assert done == (k == len(actions) - 1)
        assert reward == 1.0 and "Result: Correct" in obs and info["finished"]
        assert env.sandbox is not None and not env.sandbox.alive and not Path(env.sandbox.workdir).exists()
        assert env.step(actions[-1])[0] == "Error: the episode is over"


def test_wrong_answer_scores_zero():
    env = make_env(codegym_tasks()[0])
    env.reset()
    obs, done, reward, _ = env.step(call("Done", answer=-1))
    assert done and reward == 0.0 and "Incorrect" in obs


HOSTILE = [
    "I think the answer is 15",  # no call at all
    call("Observe") + call("Observe"),  # two calls
    f"{TOOL_CALL_OPEN}{{'name': 'Observe'}}{TOOL_CALL_CLOSE}",  # not JSON
    f"{TOOL_CALL_OPEN}[1, 2]{TOOL_CALL_CLOSE}",  # not an object
    f'{TOOL_CALL_OPEN}{{"name": "Observe", "parameters": [1]}}{TOOL_CALL_CLOSE}',
    f'{TOOL_CALL_OPEN}{{"name": "Observe", "parameters": {{}}, "code": "x"}}{TOOL_CALL_CLOSE}',
    call("GetNumber", index=[[[[[[1]]]]]]),  # too deep
    call("AddPair", a="x" * 5000, b=1),  # too long
    "<|FunctionCallBegin|>[" + json.dumps({"name": "Observe", "parameters": {}}) + ", {}]<|FunctionCallEnd|>",
    "<|FunctionCallBegin|>not json<|FunctionCallEnd|>",
    call("__import__('os').system('echo pwned')"),  # unknown tool → the env's own Error
    call("GetNumber"),  # missing parameter → the env's own Error
    call("GetNumber", index=99),
    call("AddPair", a="seven", b=1),  # raises inside the tool; the env catches it
]


def test_hostile_calls_are_error_observations_and_the_episode_goes_on():
    task = codegym_tasks()[0]
    env = make_env(task)
    env.reset()
    for action in HOSTILE:
        obs, done, reward, _ = env.step(action)
        assert obs.startswith("Error"), (action[:60], obs)
        assert not done and reward == 0.0
    for a in oracle_actions(task):
        obs, done, reward, _ = env.step(a)
    assert done and reward == 1.0


def test_parse_codegym_call_syntaxes():
    a = parse_codegym_call(cg_call("AddPair", a=1, b=2))
    b = parse_codegym_call(call("AddPair", a=1, b=2))
    assert a == b and a.parameters == {"a": 1, "b": 2}


def test_call_limit_ends_the_episode():
    task = codegym_tasks()[0]
    task.env_config["max_calls"] = 3
    env = make_env(task)
    env.reset()
    assert not env.step(call("Observe"))[1]
    assert not env.step(call("Observe"))[1]
    obs, done, reward, info = env.step(call("Observe"))
    assert done and reward == 0.0 and info["call_limit"] and "call limit of 3" in obs
