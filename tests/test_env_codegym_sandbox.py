"""Tests for supo.envs.sandbox through supo.envs.codegym: untrusted env code that loops, hoards memory, crashes, reaches
for the network, secrets or processes is stopped or refused, and other rollouts carry on.

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
from codegym_fixtures import MEMORY_MB, SECONDS, cg_call, codegym_tasks

from supo.envs.base import format_tool_call as call
from supo.envs.codegym import CodeGymEnv, make_env, oracle_actions
from supo.envs.sandbox import Sandbox, SandboxLimits, network_namespace_available

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
# the sandbox


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

    tasks = codegym_tasks()
    normal, spin, hoard = tasks[0], tasks[4], tasks[5]
    normal2 = tasks[2]
    plans = {0: [call("Observe"), call("Spin"), call("Done", answer=0)],
             1: oracle_actions(normal),
             2: [cg_call("Observe"), cg_call("Hoard"), cg_call("Done", answer=0)],
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
    tasks = codegym_tasks()
    spin, hoard = make_env(tasks[4]), make_env(tasks[5])
    spin.reset()
    hoard.reset()
    assert spin.step(call("Observe"))[0] == "spin, then submit 0"
    t0 = time.perf_counter()
    obs, done, reward, info = spin.step(call("Spin"))
    took = time.perf_counter() - t0
    assert obs.startswith("Error: the sandboxed environment timed out after 1 s") and done and reward == 0.0
    assert info["failed"] and info["sandbox_error"] == "timeout" and spin.failed == "timeout"
    assert SECONDS <= took < SECONDS + 3
    assert not spin.sandbox.alive and not Path(spin.sandbox.workdir).exists()
    obs, done, reward, info = hoard.step(call("Hoard"))
    assert obs.startswith("Error: the sandboxed environment exceeded its memory limit") and done and reward == 0.0
    assert info["sandbox_error"] == "memory"
    assert spin.step(call("Done", answer=0)) == ("Error: the episode is over", True, 0.0, {"error": "done"})


def test_uncaught_memory_error_crash_and_bad_start_fail_cleanly():
    env = _inline_env("x = bytearray(1 << 34)\nreturn 'unreachable'")  # raised outside any try: uncaught
    obs, done, reward, info = env.step(call("Probe"))
    assert done and reward == 0.0 and info["sandbox_error"] == "memory", obs
    env = _inline_env("import os\nos._exit(3)")
    obs, done, reward, info = env.step(call("Probe"))
    assert done and info["sandbox_error"] == "crash" and "exited with code 3" in obs
    env = _inline_env("raise KeyError('boom')")  # the env's step lets it escape: a tool error, not a crash
    obs, done, reward, info = env.step(call("Probe"))
    assert obs.startswith("Error: Probe failed inside the environment: KeyError") and not done
    assert env.step(call("Done"))[1:3] == (True, 1.0)
    env = _inline_env("return 'x'", init_hook="import module_that_does_not_exist")
    obs, done, reward, info = env.step(call("Probe"))
    assert done and reward == 0.0 and info["sandbox_error"] == "start" and "module_that_does_not_exist" in obs
    env = CodeGymEnv("class Other:\n    pass\n", "ProbeEnv", "ProbeEnv@{}", SandboxLimits(seconds=SECONDS))
    env.reset()
    obs, done, _, info = env.step(call("Probe"))
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
    obs, done, _, _ = env.step(call("Probe"))
    out = json.loads(obs)
    for key in ("socket", "connect", "_socket", "urlopen", "system", "subprocess"):
        assert out[key] != "ok", (key, out)
    assert out["socket"] == "PermissionError" and out["system"] == "PermissionError"
    assert out["secret"] is None and not any("PROXY" in k.upper() for k in out["env"])
    assert set(out["env"]) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "OMP_NUM_THREADS",
                               "OPENBLAS_NUM_THREADS", "LC_CTYPE"}
    workdir = Path(out["cwd"])
    assert (workdir / "scratch.txt").exists() and workdir.resolve() == Path(env.sandbox.workdir).resolve()
    env.step(call("Done"))
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
        obs, *_ = env.step(call("Probe"))
        assert env.sandbox.uses_netns
        assert obs != "0", "the sandboxed child reached the host's loopback"
    finally:
        server.close()


def test_sandbox_protocol_survives_prints_and_big_outputs():
    env = _inline_env("print('noise on stdout' * 10)\nreturn 'y' * 200000")
    obs, done, _, _ = env.step(call("Probe"))
    assert not done and obs == "y" * SandboxLimits().max_obs_chars
    sb = Sandbox(SandboxLimits(seconds=SECONDS))
    sb.start()
    workdir = sb.workdir
    assert os.path.isdir(workdir)
    sb.close()
    sb.close()
    assert not os.path.exists(workdir)
