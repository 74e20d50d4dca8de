"""What every environment test needs once: the fuzz settings and strategies, the tool-call text helper, the check of a
``step`` result, a few sample tasks of each registered environment and an action sequence that wins each of them.

``tests/test_env_contract.py`` runs the contract (reset / step / hostile and fuzzed actions / expert or oracle solves /
row checks) over every environment in :data:`supo.envs.ENVS` from the :data:`CASES` here; the per-env test files
import the helpers for what only their env does. An environment registered without a case here fails the contract
test, so a new env cannot skip it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from supo.envs import ENVS
from supo.envs.base import format_tool_call
from supo.models import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from supo.types import Task

FIXTURES = Path(__file__).parent / "fixtures"


def fuzz_settings(max_examples: int = 300, *also_suppress: HealthCheck) -> settings:
    """The hypothesis settings of the fuzz tests: no deadline (the machine is shared), slow data generation allowed."""
    return settings(max_examples=max_examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, *also_suppress])


FUZZ = fuzz_settings()

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
json_values = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                          st.dictionaries(st.text(max_size=5), c, max_size=4)),
                           max_leaves=20)
"""Any JSON value (no NaN), nested a few levels: what a fuzzed tool name or parameter may be."""


def tagged(body: str) -> str:
    """``body`` between the tool-call tags, as it is (valid JSON or not)."""
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


def check_step_result(result: Any) -> tuple[str, bool, float, dict]:
    """``env.step``'s contract: a 4-tuple (str observation, bool done, float reward, dict info); returned as is."""
    assert isinstance(result, tuple) and len(result) == 4, result
    obs, done, reward, info = result
    assert isinstance(obs, str) and isinstance(done, bool) and isinstance(reward, float) and isinstance(info, dict)
    return result


def parse_call_text(action: str) -> tuple[str, dict] | None:
    """The (name, parameters) of the first supo tool call in ``action``; None when it holds none."""
    m = re.search(re.escape(TOOL_CALL_OPEN) + "(.*?)" + re.escape(TOOL_CALL_CLOSE), action, re.DOTALL)
    if m is None:
        return None
    body = json.loads(m.group(1))
    return body["name"], body["parameters"]


def close(env: Any) -> None:
    """Release what an env holds (a sandbox child) where it has a ``close``."""
    if hasattr(env, "close"):
        env.close()


# ---------------------------------------------------------------------------------------------------------------------
# the sample tasks and their winning actions, one case per registered environment


@dataclass(frozen=True)
class EnvCase:
    """How the contract test gets at one environment."""

    tasks: Callable[[Path], list[Task]]
    """A few sample tasks (a scratch folder for an env that caches an index); cheap."""
    oracle: Callable[[Task], list[str]] | None = None
    """The actions that win a task, for an env with no scripted expert (its ``make_expert`` raises)."""
    broken_field: tuple[str, Any] = ("", None)
    """A field of the env's task rows and a value of the wrong kind for it."""
    text_ends_turn: bool = False
    """A message without a tool call is not an error but ends the user's turn (bfcl)."""
    parallel_calls: bool = False
    """Several tool calls in one message are allowed (bfcl)."""
    unknown_tool: str = "unknown tool"
    """What the observation says for a tool the env does not have."""
    fuzz_examples: int = 300


def _array_tasks(_: Path) -> list[Task]:
    from supo.envs.array import make_tasks

    return make_tasks("train", 3, 3, 5, ["max", "sum"], 99, seed=0) + \
        make_tasks("test", 1, 3, 4, ["diff"], 99, seed=0, api="fold-index")


def _search_tasks(_: Path) -> list[Task]:
    from supo.envs.search import make_tasks

    return make_tasks("train", 2, 1, 2, seed=0) + make_tasks("test", 2, 2, 3, seed=0)


def _funcall_tasks(_: Path) -> list[Task]:
    from supo.envs.funcall import make_tasks
    from supo.synth.families import FAMILIES

    return make_tasks("train", 4, 4, 6, sorted(FAMILIES), seed=0)


def _codegym_tasks(_: Path) -> list[Task]:
    from supo.envs.codegym_rows import load_rows

    return load_rows(FIXTURES / "codegym" / "rows.jsonl", sandbox_seconds=2.0, sandbox_memory_mb=160)[:2]


def _codegym_oracle(task: Task) -> list[str]:
    from supo.envs.codegym import oracle_actions

    return oracle_actions(task)


def _bfcl_tasks(_: Path) -> list[Task]:
    import pytest

    pytest.importorskip("bfcl_eval", reason="bfcl-eval is not installed (scripts/setup.sh installs it with --no-deps)")
    from supo.envs.bfcl import make_tasks

    return make_tasks(["multi_turn_base"])[:2]


def _bfcl_oracle(task: Task) -> list[str]:
    from supo.envs.bfcl_calls import ground_truth_actions

    return [a for turn in ground_truth_actions(task) for a in turn]


def _browsecomp_tasks(scratch: Path) -> list[Task]:
    from supo.envs.browsecomp import make_tasks
    from supo.envs.files import FilesEnvConfig

    fix = FIXTURES / "browsecomp"
    options = FilesEnvConfig(browsecomp_queries=str(fix / "queries.jsonl"), browsecomp_corpus=str(fix / "corpus.jsonl"),
                             browsecomp_qrels=str(fix / "qrel_evidence.txt"), index_dir=str(scratch / "bm25"))
    return make_tasks(options)[:3]


def _browsecomp_oracle(task: Task) -> list[str]:
    """Search for the question's first words, then give the reference answer."""
    query = " ".join(task.prompt[-1]["content"].split()[:8])
    return [format_tool_call("search", query=query), format_tool_call("finish", answer=task.reference)]


CASES: dict[str, EnvCase] = {
    "array": EnvCase(_array_tasks, broken_field=("family", "min")),
    "search": EnvCase(_search_tasks, broken_field=("chain", []), fuzz_examples=200),
    "funcall": EnvCase(_funcall_tasks, broken_field=("state", "{}")),
    "codegym": EnvCase(_codegym_tasks, _codegym_oracle, broken_field=("code", "  "), unknown_tool="Invalid action",
                       fuzz_examples=20),  # each example starts a sandboxed child (~0.1 s)
    "browsecomp": EnvCase(_browsecomp_tasks, _browsecomp_oracle, broken_field=("corpus", 5)),
    "bfcl": EnvCase(_bfcl_tasks, _bfcl_oracle, broken_field=("category", "single_turn"), text_ends_turn=True,
                    parallel_calls=True, unknown_tool="unknown function"),
}


def env_names() -> list[str]:
    """The registered environments, for parametrizing."""
    return sorted(ENVS)


# ---------------------------------------------------------------------------------------------------------------------
# driving an episode


def play(env: Any, actions: list[str]) -> tuple[str, bool, float, dict]:
    """Step ``actions`` through ``env`` (no error allowed, stopping when the episode ends); the last step's result."""
    result: tuple = ("", False, 0.0, {})
    for action in actions:
        result = check_step_result(env.step(action))
        assert not result[0].startswith("Error"), (action[:120], result[0][:200])
        if result[1]:
            break
    return result


def expert_actions(env: Any, expert: Any, max_actions: int = 500) -> tuple[list[str], tuple]:
    """Let ``expert`` act through ``env.step`` until the episode ends: (its actions, the last step's result)."""
    actions: list[str] = []
    result: tuple = ("", False, 0.0, {})
    for _ in range(max_actions):
        action = expert.act()
        result = check_step_result(env.step(action))
        assert not result[0].startswith("Error"), (action[:120], result[0][:200])
        actions.append(action)
        if result[1]:
            break
        expert.observe(action, result[0])
    return actions, result


def winning_actions(name: str, task: Task) -> list[str]:
    """Actions that win ``task`` from a fresh episode: the oracle's, or those the env's expert takes (error rate 0)."""
    case = CASES[name]
    if case.oracle is not None:
        return case.oracle(task)
    spec = ENVS[name]
    env = spec.make_env(task)
    env.reset()
    actions, (_, done, reward, _) = expert_actions(env, spec.make_expert(task, 0.0, 0))
    assert done and reward == 1.0, (task.id, reward)
    return actions


def hostile_actions(tool: str, param: str) -> dict[str, tuple[str, str | None]]:
    """Malformed and hostile messages, built around a real ``tool`` and one of its parameters ``param``, each with
    what the ``Error:`` observation says (None: any error)."""
    huge = "a" * (1 << 20)
    good = json.dumps({"name": tool, "parameters": {param: "x"}})
    return {
        "no_tags": (good, "no <tool_call>"),
        "plain_text": ("The answer is 9.", "no <tool_call>"),
        "empty": ("", None),
        "huge_plain_text": (huge, "limit"),
        "unclosed_tag": (TOOL_CALL_OPEN + good, None),
        "bad_json": (tagged(good[:-1]), "not valid JSON"),
        "single_quotes": (tagged(good.replace('"', "'")), "not valid JSON"),
        "json_list": (tagged(f"[{good}]"), "JSON object"),
        "json_string": (tagged(json.dumps(tool)), "JSON object"),
        "name_not_string": (tagged('{"name": 1, "parameters": {}}'), "name"),
        "parameters_not_object": (tagged(json.dumps({"name": tool, "parameters": ["x"]})), "parameters"),
        "extra_top_level_key": (tagged(json.dumps({"name": tool, "parameters": {param: "x"}, "id": 1})),
                                "unexpected keys"),
        "duplicate_key": (tagged(f'{{"name": "rm_rf", "name": {json.dumps(tool)}, "parameters": {{}}}}'), "twice"),
        "huge_action": (format_tool_call(tool, **{param: huge}), "limit"),
        "unknown_tool": (format_tool_call("rm_rf", path="/"), None),  # the env's own words: EnvCase.unknown_tool
        "python_injection_name": (format_tool_call("__import__('os').system('echo hi')"), None),
        "python_injection_raw": (tagged("__import__('os').system('echo hi')"), "not valid JSON"),
        "two_calls": (format_tool_call("rm_rf") + format_tool_call("rm_rf"), "2 tool calls"),
    }


TEXT_WITHOUT_A_CALL = ("no_tags", "plain_text", "empty", "huge_plain_text")
"""The hostile messages that hold no tool call (an env whose text ends the user's turn takes them as that)."""


def run_expert(task: Task, make_env: Any, make_expert: Any, *, summarize_at=frozenset(), drop_before_summary=False,
               env=None, expert=None, max_actions: int = 500, allow_errors: bool = False):
    """Drive a scripted expert (``make_expert(task)`` after ``env.reset()``, unless ``expert`` is given) through
    ``env.step`` until the episode ends, summarizing before the actions in ``summarize_at`` (optionally dropping the
    last pair first, as the loop's trigger does); returns (reward, actions taken), or (None, max_actions)."""
    from supo.models import SUMMARY_CLOSE, SUMMARY_OPEN

    env = env if env is not None else make_env(task)
    if expert is None:
        env.reset()
        expert = make_expert(task)
    for k in range(max_actions):
        if k in summarize_at:
            if drop_before_summary:
                expert.drop()
            text = expert.summarize()
            assert text.startswith(SUMMARY_OPEN) and text.endswith(SUMMARY_CLOSE)
        action = expert.act()
        obs, done, reward, _ = env.step(action)
        if not allow_errors:
            assert not obs.startswith("Error"), (action, obs)
        if done:
            return reward, k + 1
        expert.observe(action, obs)
    return None, max_actions

