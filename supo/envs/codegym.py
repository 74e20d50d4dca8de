"""CodeGym rows from local files (docs/design.md §5, file-backed; schema in research/benchmarks.md §1).

A row (JSONL or parquet) is one (environment, unit test) pair::

    {"ability": "codegym_v1@<code_id>__<EnvName@{json}>", "code_id": str, "prompt": [system, user messages],
     "plugin_call_max_round": 256, "extra_info": {"gym_env": <python source>, "solve_fc_round": int, ...}, ...}

:func:`~supo.envs.codegym_rows.load_rows` (reading and checking rows is in :mod:`supo.envs.codegym_rows`) turns rows
into :class:`~supo.types.Task` s, raising :class:`~supo.data.DataError` naming the file, row and field of anything
malformed. The environment source is *untrusted*: it is never imported here (only parsed with :mod:`ast` to check that
the class exists) and runs only inside a :class:`~supo.envs.sandbox.Sandbox`, one child process per episode
(:class:`CodeGymEnv`).

The model's call may be written either way — supo's ``<tool_call>{"name", "parameters"}</tool_call>`` or CodeGym's
``<|FunctionCallBegin|>[{"name", "parameters"}]<|FunctionCallEnd|>`` (what the rows' own prompts ask for); both are
parsed strictly with :func:`~supo.envs.base.parse_tool_call`'s rules and handed to the environment's ``step`` as the
JSON ``{"name": ..., "parameters": ...}``. The observation is the environment's string; the episode ends when the
environment is ``finished`` (reward = its ``reward``), or as failed (reward 0, an ``Error:`` observation saying why)
when the sandbox times out, runs out of memory or crashes. Malformed calls are ``Error:`` observations and the episode
goes on. CodeGym ships no scripted expert for supo's summary warm start: :func:`make_expert` raises; the rows' oracle
``solve()`` can still be replayed with :func:`oracle_actions` (tests, sanity checks).

The split is by environment (``code_id``), seeded, ``files.test_fraction`` of the environments held out, so no
environment's code appears in both splits.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from supo.envs.base import MAX_ACTION_CHARS, ToolCall, ToolCallError, format_tool_call, load_json, parse_tool_call
from supo.envs.codegym_rows import DEFAULT_MAX_CALLS, load_rows, split_tasks
from supo.envs.files import FilesEnvConfig
from supo.envs.sandbox import Sandbox, SandboxError, SandboxLimits
from supo.envs.spec import EnvSpec
from supo.errors import DataError, require
from supo.models import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from supo.types import Task

CG_CALL_OPEN, CG_CALL_CLOSE = "<|FunctionCallBegin|>", "<|FunctionCallEnd|>"
_CG_CALL_RE = re.compile(re.escape(CG_CALL_OPEN) + r"(.*?)" + re.escape(CG_CALL_CLOSE), re.S)
_DEF_RE = re.compile(r"^def ([A-Za-z_]\w*)\(", re.M)


def requires(options: FilesEnvConfig) -> None:
    """Selected (``env.name: codegym``): the rows file is named."""
    require(bool(options.codegym_path), "files.codegym_path",
            "env.name codegym needs the CodeGym rows file (JSONL or parquet)")


def files(options: FilesEnvConfig) -> list[tuple[str, str]]:
    return [("files.codegym_path", options.codegym_path)]


def make_split(options: FilesEnvConfig, split: str, seed: int) -> list[Task]:
    """The ``split`` of ``files.codegym_path`` (the rows are read once and split the same way for both splits)."""
    f = options
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected train or test")
    path = Path(f.codegym_path)
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"CodeGym rows file {path} does not exist") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, f.sandbox_seconds, f.sandbox_memory_mb,
           f.sandbox_network_namespace)
    if _LOADED.get("key") != key:  # build_split runs for train then test: read the file once
        _LOADED.clear()
        _LOADED.update(key=key, tasks=load_rows(path, sandbox_seconds=f.sandbox_seconds,
                                                sandbox_memory_mb=f.sandbox_memory_mb,
                                                network_namespace=f.sandbox_network_namespace))
    return split_tasks(_LOADED["tasks"], f.test_fraction, seed)[split]


def build_split(cfg, split: str) -> list[Task]:
    """The ``split`` of a run config (its ``files`` section and ``seed``)."""
    return SPEC.build_split(cfg, split)


_LOADED: dict[str, Any] = {}


# ----------------------------------------------------------------------------------------------------------------------
# the environment


def parse_codegym_call(text: str) -> ToolCall:
    """One call in either syntax (``<tool_call>{...}</tool_call>`` or CodeGym's ``<|FunctionCallBegin|>[{...}]...``)."""
    if CG_CALL_OPEN not in text:
        return parse_tool_call(text)
    if len(text) > MAX_ACTION_CHARS:
        raise ToolCallError(f"action is {len(text)} characters long; the limit is {MAX_ACTION_CHARS}")
    bodies = _CG_CALL_RE.findall(text)
    if not bodies:
        raise ToolCallError(f"no {CG_CALL_OPEN}...{CG_CALL_CLOSE} found in the response")
    if len(bodies) > 1:
        raise ToolCallError(f"{len(bodies)} function calls in one turn; make exactly one")
    obj = load_json(bodies[0], "function call")  # a key given twice is refused, never last-wins
    if isinstance(obj, list):
        if len(obj) != 1:
            raise ToolCallError(f"the call list holds {len(obj)} calls; make exactly one per turn")
        obj = obj[0]
    try:
        body = json.dumps(obj)
    except (ValueError, RecursionError):
        raise ToolCallError("function call nests too deeply") from None
    return parse_tool_call(f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}")


class CodeGymEnv:
    """One episode of one CodeGym row, the environment code running in its own sandboxed child process."""

    def __init__(self, code: str, env_name: str, env_str: str, limits: SandboxLimits,
                 max_calls: int = DEFAULT_MAX_CALLS) -> None:
        self.code, self.env_name, self.env_str = code, env_name, env_str
        self.limits = limits
        self.max_calls = max_calls
        self.sandbox: Sandbox | None = None
        self._pending_init = False
        self._start_error: SandboxError | None = None
        self.done = False
        self.reward = 0.0
        self.steps = 0
        self.failed: str | None = None  # why the sandbox ended the episode (timeout, memory, crash, ...)

    # -- lifecycle -----------------------------------------------------------------------------------------------------

    def reset(self) -> str:
        """Start a fresh child and send it the environment; its start-up overlaps with the caller's next work."""
        self.close()
        self.done, self.reward, self.steps, self.failed = False, 0.0, 0, None
        self._start_error = None
        self.sandbox = Sandbox(self.limits)
        try:
            self.sandbox.start()
            self.sandbox.send({"op": "init", "code": self.code, "env_name": self.env_name, "env_str": self.env_str})
            self._pending_init = True
        except SandboxError as e:
            self._start_error = e
        return "ready"

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
        self._pending_init = False

    def __del__(self) -> None:  # the Sandbox's own finalizer also covers interpreter exit
        try:
            self.close()
        except Exception:
            pass

    def _await_init(self) -> None:
        if self._start_error is not None:
            raise self._start_error
        if self.sandbox is None:
            raise SandboxError("start", "the environment was not reset")
        if self._pending_init:
            self._pending_init = False
            resp = self.sandbox.receive()
            if not resp.get("ok"):
                self.sandbox.close()
                raise SandboxError("start", f"the environment failed to start: {str(resp.get('error'))[:300]}")

    def _fail(self, e: SandboxError) -> tuple[str, bool, float, dict[str, Any]]:
        self.close()
        self.done, self.reward, self.failed = True, 0.0, e.reason
        return f"Error: {e}; the episode ends as failed", True, 0.0, {"failed": True, "sandbox_error": e.reason,
                                                                        "error": str(e)}

    # -- the protocol --------------------------------------------------------------------------------------------------

    def step(self, action_text: str) -> tuple[str, bool, float, dict[str, Any]]:
        """Apply one action. Never raises: call errors and sandbox failures become ``Error:`` observations."""
        if self.done:
            return "Error: the episode is over", True, self.reward, {"error": "done"}
        self.steps += 1
        try:
            self._await_init()
        except SandboxError as e:
            return self._fail(e)
        try:
            call = parse_codegym_call(action_text)
        except ToolCallError as e:
            return self._limit(f"Error: {e}", {"error": str(e)})
        action = json.dumps({"name": call.name, "parameters": call.parameters})
        try:
            resp = self.sandbox.call({"op": "step", "action": action})
        except SandboxError as e:
            return self._fail(e)
        if not resp.get("ok"):
            msg = f"Error: {call.name[:40]} failed inside the environment: {str(resp.get('error'))[:200]}"
            return self._limit(msg, {"tool": call.name, "error": msg})
        obs = resp.get("obs")
        obs = obs if isinstance(obs, str) else str(obs)
        if resp.get("finished") is True:
            reward = resp.get("reward")
            reward = float(reward) if isinstance(reward, (int, float)) and math.isfinite(reward) else 0.0
            self.done, self.reward = True, reward
            self.close()
            return obs, True, reward, {"tool": call.name, "finished": True}
        return self._limit(obs, {"tool": call.name})

    def _limit(self, obs: str, info: dict[str, Any]) -> tuple[str, bool, float, dict[str, Any]]:
        if self.steps >= self.max_calls:
            self.close()
            self.done, self.reward = True, 0.0
            return obs + f"\nError: the call limit of {self.max_calls} is reached", True, 0.0, {**info,
                                                                                             "call_limit": True}
        return obs, False, 0.0, info

    # -- the row's own oracle ------------------------------------------------------------------------------------------

    def oracle_actions(self) -> list[str]:
        """The JSON actions the environment's own ``solve()`` makes (run in a separate sandbox)."""
        sb = Sandbox(self.limits)
        try:
            sb.start()
            init = sb.call({"op": "init", "code": self.code, "env_name": self.env_name, "env_str": self.env_str})
            if not init.get("ok"):
                raise SandboxError("start", f"the environment failed to start: {init.get('error')}")
            resp = sb.call({"op": "oracle"}, seconds=self.limits.seconds * 10)
        finally:
            sb.close()
        if not resp.get("ok"):
            raise RuntimeError(f"the environment's solve() failed: {resp.get('error')}")
        return [str(a) for a in resp.get("actions", [])]


def limits_of(task: Task) -> SandboxLimits:
    c = task.env_config
    return SandboxLimits(seconds=float(c.get("sandbox_seconds", 10.0)), memory_mb=int(c.get("sandbox_memory_mb", 512)),
                         network_namespace=bool(c.get("network_namespace", True)))


def make_env(task: Task) -> CodeGymEnv:
    c = task.env_config
    try:
        return CodeGymEnv(c["code"], c["env_name"], c["env_str"], limits_of(task),
                          int(c.get("max_calls", DEFAULT_MAX_CALLS)))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"task {task.id}: bad env_config for the codegym env ({e})") from None


def oracle_actions(task: Task) -> list[str]:
    """The row's oracle ``solve()`` calls, as supo tool-call texts (replayable through :func:`make_env`)."""
    out = []
    for a in make_env(task).oracle_actions():
        try:
            obj = json.loads(a)
            body = json.dumps({"name": obj["name"], "parameters": obj.get("parameters", {})})
            out.append(f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}")
        except (ValueError, KeyError, TypeError, AttributeError):
            out.append(f"{TOOL_CALL_OPEN}{a}{TOOL_CALL_CLOSE}")
    return out


def make_expert(task: Task, error_rate: float, seed: int):
    raise NotImplementedError(
        "env codegym has no scripted expert (supo's warm start needs act/observe/drop/summarize); the rows carry only "
        "the environment's own solve(). Warm-start from a model that already calls tools (model.build false with a "
        "local model folder), or use the procedural envs for demonstrations; supo.envs.codegym.oracle_actions replays "
        "solve() for checks"
    )


def tool_names(task: Task) -> list[str]:
    """The function names the system prompt documents (``def Name(`` lines of CodeGym's docstring prompt)."""
    names: list[str] = []
    for m in task.prompt:
        names.extend(n for n in _DEF_RE.findall(m["content"]) if n not in names)
    return names


def corpus(tasks: list[Task]) -> list[str]:
    """Prompt texts plus one example call per documented function (no sandbox is started)."""
    texts: list[str] = []
    for t in tasks:
        texts.extend(m["content"] for m in t.prompt)
        texts.extend(format_tool_call(n) for n in tool_names(t))
    return texts


from supo.envs.base import check_env_field, is_int  # noqa: E402  (the env_config check, appended)


def validate_env_config(cfg: dict) -> None:
    """What :func:`make_env`, :func:`limits_of` and :func:`~supo.envs.codegym_rows.split_tasks` read: ``code``,
    ``env_name`` and ``env_str`` (strings; the code non-empty), ``code_id``, and if present ``max_calls`` (≥ 1),
    ``sandbox_seconds`` (> 0), ``sandbox_memory_mb`` (≥ 1) and ``network_namespace`` (a bool). Raises ValueError naming
    the field."""
    check_env_field(cfg, "code", lambda v: isinstance(v, str) and v.strip(), "non-empty Python source")
    for name in ("env_name", "env_str"):
        check_env_field(cfg, name, lambda v: isinstance(v, str), "a string")
    check_env_field(cfg, "code_id", lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
                    "a string or integer id")
    check_env_field(cfg, "max_calls", lambda v: is_int(v) and v >= 1, "an integer ≥ 1", required=False)
    check_env_field(cfg, "sandbox_seconds", lambda v: (is_int(v) or isinstance(v, float)) and v > 0,
                    "a number of seconds > 0", required=False)
    check_env_field(cfg, "sandbox_memory_mb", lambda v: is_int(v) and v >= 1, "an integer ≥ 1", required=False)
    check_env_field(cfg, "network_namespace", lambda v: isinstance(v, bool), "true or false", required=False)


SPEC = EnvSpec(name="codegym", section="files", options=FilesEnvConfig, make_split=make_split, make_env=make_env,
               make_expert=make_expert, corpus=corpus, validate_env_config=validate_env_config, requires=requires,
               files=files)

__all__ = [
    "CG_CALL_CLOSE", "CG_CALL_OPEN", "SPEC", "CodeGymEnv", "build_split", "corpus", "files", "limits_of", "make_env",
    "make_expert", "make_split", "oracle_actions", "parse_codegym_call", "requires", "tool_names", "validate_env_config",
]
