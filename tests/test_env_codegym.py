"""Tests for supo.envs.codegym and supo.envs.sandbox: CodeGym rows → tasks, and untrusted env code in a sandbox.

The fixtures (tests/fixtures/codegym/) are three CodeGym-style environments written for these tests — a normal one
(RunningSumEnv, four unit tests), one whose tool never returns (SpinEnv) and one whose tool allocates without bound
and swallows the MemoryError (HoardEnv) — as rows of the CodeGym schema. No CodeGym environment is shipped.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from supo.config import Config, ConfigError
from supo.data import DataError
from supo.envs import ENVS, get_env_spec
from supo.envs.codegym import (
    CodeGymEnv,
    build_split,
    corpus,
    load_rows,
    make_env,
    make_expert,
    oracle_actions,
    parse_codegym_call,
    split_tasks,
)
from supo.envs.sandbox import Sandbox, SandboxLimits, network_namespace_available
from supo.models import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

FIX = Path(__file__).parent / "fixtures" / "codegym"
ROWS = FIX / "rows.jsonl"
SECONDS = 1.0  # the per-call wall-time limit used here
MEMORY_MB = 160


def _tasks(**kw):
    return load_rows(ROWS, sandbox_seconds=kw.get("seconds", SECONDS), sandbox_memory_mb=kw.get("mb", MEMORY_MB))


def _call(name: str, **params) -> str:
    return f"{TOOL_CALL_OPEN}{json.dumps({'name': name, 'parameters': params})}{TOOL_CALL_CLOSE}"


def _cg_call(name: str, **params) -> str:
    return f"<|FunctionCallBegin|>[{json.dumps({'name': name, 'parameters': params})}]<|FunctionCallEnd|>"


def _rows() -> list[dict]:
    return [json.loads(line) for line in ROWS.read_text().splitlines()]


# A minimal CodeGym-style class; TOOL_BODY is the body of its one tool, Probe().
INLINE = '''
import json, os, socket
import gymnasium
INIT_HOOK
class ProbeEnv(gymnasium.Env):
    def __init__(self, env_str=None):
        self.func_mapping = {"Probe": 0, "Done": 1}
        self._done, self._reward, self.step_count = False, 0, 0
    @staticmethod
    def from_env_str(s):
        return ProbeEnv(s)
    @property
    def finished(self):
        return self._done
    @property
    def reward(self):
        return self._reward
    def step(self, action):
        self.step_count += 1
        call = json.loads(action)
        if call["name"] == "Done":
            self._done, self._reward = True, 1
            return True, "done"
        return True, self.Probe(**call["parameters"])
    def Probe(self, **kw):
TOOL_BODY
'''


def _inline_env(tool_body: str, init_hook: str = "", seconds: float = SECONDS, mb: int = MEMORY_MB) -> CodeGymEnv:
    body = "\n".join("        " + line for line in tool_body.strip().splitlines())
    code = INLINE.replace("TOOL_BODY", body).replace("INIT_HOOK", init_hook)
    env = CodeGymEnv(code, "ProbeEnv", "ProbeEnv@{}", SandboxLimits(seconds=seconds, memory_mb=mb))
    env.reset()
    return env


# ----------------------------------------------------------------------------------------------------------------------
# rows → tasks


def test_fixture_rows_become_tasks():
    tasks = _tasks()
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
    a, b = _tasks(), load_rows(path, sandbox_seconds=SECONDS, sandbox_memory_mb=MEMORY_MB)
    assert [(t.id, t.env_config, t.prompt, t.difficulty) for t in a] == [
        (t.id, t.env_config, t.prompt, t.difficulty) for t in b]


def test_split_is_by_environment_seeded_and_disjoint():
    tasks = _tasks()
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
    for task in _tasks()[:4]:
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
    env = make_env(_tasks()[0])
    env.reset()
    obs, done, reward, _ = env.step(_call("Done", answer=-1))
    assert done and reward == 0.0 and "Incorrect" in obs


HOSTILE = [
    "I think the answer is 15",  # no call at all
    _call("Observe") + _call("Observe"),  # two calls
    f"{TOOL_CALL_OPEN}{{'name': 'Observe'}}{TOOL_CALL_CLOSE}",  # not JSON
    f"{TOOL_CALL_OPEN}[1, 2]{TOOL_CALL_CLOSE}",  # not an object
    f'{TOOL_CALL_OPEN}{{"name": "Observe", "parameters": [1]}}{TOOL_CALL_CLOSE}',
    f'{TOOL_CALL_OPEN}{{"name": "Observe", "parameters": {{}}, "code": "x"}}{TOOL_CALL_CLOSE}',
    _call("GetNumber", index=[[[[[[1]]]]]]),  # too deep
    _call("AddPair", a="x" * 5000, b=1),  # too long
    "<|FunctionCallBegin|>[" + json.dumps({"name": "Observe", "parameters": {}}) + ", {}]<|FunctionCallEnd|>",
    "<|FunctionCallBegin|>not json<|FunctionCallEnd|>",
    _call("__import__('os').system('echo pwned')"),  # unknown tool → the env's own Error
    _call("GetNumber"),  # missing parameter → the env's own Error
    _call("GetNumber", index=99),
    _call("AddPair", a="seven", b=1),  # raises inside the tool; the env catches it
]


def test_hostile_calls_are_error_observations_and_the_episode_goes_on():
    task = _tasks()[0]
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
    a = parse_codegym_call(_cg_call("AddPair", a=1, b=2))
    b = parse_codegym_call(_call("AddPair", a=1, b=2))
    assert a == b and a.parameters == {"a": 1, "b": 2}


class ReplayExpert:
    """Plays a fixed list of actions through the real agent loop."""

    def __init__(self, actions: list[str]) -> None:
        self.actions, self.i = actions, 0

    def act(self) -> str:
        a = self.actions[min(self.i, len(self.actions) - 1)]
        self.i += 1
        return a

    def observe(self, action, observation) -> None:
        pass

    def drop(self) -> None:
        pass

    def summarize(self) -> str:
        return "<summary>nothing</summary>"


def test_sandbox_stops_the_looping_and_the_hoarding_env_while_other_rollouts_carry_on(tiny_tokenizer):
    """Through the real agent loop: four rollouts batched together; two end failed, two are solved."""
    from supo.config import load_config
    from supo.rollout.agent_loop import LoopSettings, run_rollouts
    from supo.rollout.expert_policy import ExpertPolicy
    from supo.rollout.templates import Templates

    tasks = _tasks()
    normal, spin, hoard = tasks[0], tasks[4], tasks[5]
    normal2 = tasks[2]
    plans = {0: [_call("Observe"), _call("Spin"), _call("Done", answer=0)],
             1: oracle_actions(normal),
             2: [_cg_call("Observe"), _cg_call("Hoard"), _cg_call("Done", answer=0)],
             3: oracle_actions(normal2)}
    items = [(spin, "g0", 0), (normal, "g1", 0), (hoard, "g2", 0), (normal2, "g3", 0)]
    cfg = load_config(None)
    templates = Templates.build(tiny_tokenizer, cfg.prompts.summary_instruction, cfg.prompts.continuation)
    policy = ExpertPolicy(tiny_tokenizer, {k: ReplayExpert(p) for k, p in plans.items()}, templates.eos_id)
    st = LoopSettings(trigger=10**6, max_summaries=0, max_steps=64, max_turn_tokens=512, max_summary_tokens=32,
                      max_obs_tokens=256, engine_max_len=10**6, train_trigger_action=False)
    t0 = time.perf_counter()
    rollouts = run_rollouts(items, policy, tiny_tokenizer, templates, st, make_env, keep_transcript=True)
    seconds = time.perf_counter() - t0
    spin_r, normal_r, hoard_r, normal2_r = rollouts
    assert normal_r.reward == 1.0 and normal2_r.reward == 1.0
    assert normal_r.tool_calls == normal.difficulty and normal2_r.tool_calls == normal2.difficulty
    assert spin_r.reward == 0.0 and spin_r.tool_calls == 2
    assert "[obs] Error: the sandboxed environment timed out after 1 s" in spin_r.transcript[-1]
    assert hoard_r.reward == 0.0 and hoard_r.tool_calls == 2
    assert "[obs] Error: the sandboxed environment exceeded its memory limit" in hoard_r.transcript[-1]
    assert seconds < SECONDS + 8


def test_timeout_and_memory_failures_end_the_episode_as_failed():
    tasks = _tasks()
    spin, hoard = make_env(tasks[4]), make_env(tasks[5])
    spin.reset()
    hoard.reset()
    assert spin.step(_call("Observe"))[0] == "spin, then submit 0"
    t0 = time.perf_counter()
    obs, done, reward, info = spin.step(_call("Spin"))
    took = time.perf_counter() - t0
    assert obs.startswith("Error: the sandboxed environment timed out after 1 s") and done and reward == 0.0
    assert info["failed"] and info["sandbox_error"] == "timeout" and spin.failed == "timeout"
    assert SECONDS <= took < SECONDS + 3
    assert not spin.sandbox.alive and not Path(spin.sandbox.workdir).exists()
    obs, done, reward, info = hoard.step(_call("Hoard"))
    assert obs.startswith("Error: the sandboxed environment exceeded its memory limit") and done and reward == 0.0
    assert info["sandbox_error"] == "memory"
    assert spin.step(_call("Done", answer=0)) == ("Error: the episode is over", True, 0.0, {"error": "done"})


def test_uncaught_memory_error_crash_and_bad_start_fail_cleanly():
    env = _inline_env("x = bytearray(1 << 34)\nreturn 'unreachable'")  # raised outside any try: uncaught
    obs, done, reward, info = env.step(_call("Probe"))
    assert done and reward == 0.0 and info["sandbox_error"] == "memory", obs
    env = _inline_env("import os\nos._exit(3)")
    obs, done, reward, info = env.step(_call("Probe"))
    assert done and info["sandbox_error"] == "crash" and "exited with code 3" in obs
    env = _inline_env("raise KeyError('boom')")  # the env's step lets it escape: a tool error, not a crash
    obs, done, reward, info = env.step(_call("Probe"))
    assert obs.startswith("Error: Probe failed inside the environment: KeyError") and not done
    assert env.step(_call("Done"))[1:3] == (True, 1.0)
    env = _inline_env("return 'x'", init_hook="import module_that_does_not_exist")
    obs, done, reward, info = env.step(_call("Probe"))
    assert done and reward == 0.0 and info["sandbox_error"] == "start" and "module_that_does_not_exist" in obs
    env = CodeGymEnv("class Other:\n    pass\n", "ProbeEnv", "ProbeEnv@{}", SandboxLimits(seconds=SECONDS))
    env.reset()
    obs, done, _, info = env.step(_call("Probe"))
    assert done and info["sandbox_error"] == "start" and "defines no class 'ProbeEnv'" in obs


def test_the_child_gets_no_network_no_secrets_no_processes_and_a_throwaway_cwd(monkeypatch):
    monkeypatch.setenv("SUPO_TEST_SECRET", "hunter2")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    body = """
out = {}
def attempt(key, fn):
    try:
        fn()
        out[key] = "ok"
    except Exception as e:
        out[key] = e.__class__.__name__
attempt("socket", lambda: socket.socket())
attempt("connect", lambda: socket.create_connection(("127.0.0.1", 9), timeout=1))
import _socket
attempt("_socket", lambda: _socket.socket())
import urllib.request
attempt("urlopen", lambda: urllib.request.urlopen("http://127.0.0.1:9", timeout=1))
attempt("system", lambda: os.system("true"))
import subprocess
attempt("subprocess", lambda: subprocess.run(["true"]))
out["env"] = sorted(os.environ)
out["secret"] = os.environ.get("SUPO_TEST_SECRET")
out["cwd"] = os.getcwd()
with open("scratch.txt", "w") as f:
    f.write("x")
return json.dumps(out)
"""
    env = _inline_env(body)
    obs, done, _, _ = env.step(_call("Probe"))
    out = json.loads(obs)
    for key in ("socket", "connect", "_socket", "urlopen", "system", "subprocess"):
        assert out[key] != "ok", (key, out)
    assert out["socket"] == "PermissionError" and out["system"] == "PermissionError"
    assert out["secret"] is None and not any("PROXY" in k.upper() for k in out["env"])
    assert set(out["env"]) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "OMP_NUM_THREADS",
                               "OPENBLAS_NUM_THREADS", "LC_CTYPE"}
    workdir = Path(out["cwd"])
    assert (workdir / "scratch.txt").exists() and workdir.resolve() == Path(env.sandbox.workdir).resolve()
    env.step(_call("Done"))
    assert not workdir.exists()


def test_network_namespace_blocks_even_raw_sockets():
    """The in-process patches can be bypassed (the original class is one mro step away); the namespace cannot."""
    if not network_namespace_available():
        pytest.skip("unshare -rn is not available here: only the in-process socket block applies")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        body = f"""
raw = socket.socket.__mro__[1]
s = raw(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(1)
return str(s.connect_ex(("127.0.0.1", {port})))
"""
        env = _inline_env(body)
        obs, *_ = env.step(_call("Probe"))
        assert env.sandbox.uses_netns
        assert obs != "0", "the sandboxed child reached the host's loopback"
    finally:
        server.close()


def test_call_limit_ends_the_episode():
    task = _tasks()[0]
    task.env_config["max_calls"] = 3
    env = make_env(task)
    env.reset()
    assert not env.step(_call("Observe"))[1]
    assert not env.step(_call("Observe"))[1]
    obs, done, reward, info = env.step(_call("Observe"))
    assert done and reward == 0.0 and info["call_limit"] and "call limit of 3" in obs


def test_sandbox_protocol_survives_prints_and_big_outputs():
    env = _inline_env("print('noise on stdout' * 10)\nreturn 'y' * 200000")
    obs, done, _, _ = env.step(_call("Probe"))
    assert not done and obs == "y" * SandboxLimits().max_obs_chars
    sb = Sandbox(SandboxLimits(seconds=SECONDS))
    sb.start()
    workdir = sb.workdir
    assert os.path.isdir(workdir)
    sb.close()
    sb.close()
    assert not os.path.exists(workdir)
