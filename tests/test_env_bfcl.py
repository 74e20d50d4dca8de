"""Tests for supo.envs.bfcl: BFCL v4 multi-turn entries from the installed bfcl-eval package, through the adapter.

The headline check replays every ground-truth call of every served multi-turn entry through the adapter, one user
turn after another, and requires the package's own checker to score each conversation correct (about 3 s in all).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("bfcl_eval", reason="bfcl-eval is not installed (scripts/setup.sh installs it with --no-deps)")

from supo.config import Config, ConfigError  # noqa: E402
from supo.envs import get_env_spec  # noqa: E402
from supo.envs import bfcl, bfcl_calls, bfcl_data  # noqa: E402
from supo.envs.base import format_tool_call as call  # noqa: E402

MULTI_TURN_CLASSES = ("GorillaFileSystem", "MathAPI", "MessageAPI", "TwitterAPI", "TicketAPI", "TradingBot",
                      "TravelAPI", "VehicleControlAPI")


def _task(entry_id: str):
    category = entry_id.rsplit("_", 1)[0]
    return next(t for t in bfcl.make_tasks([category]) if t.id == entry_id)


def _replay(task) -> tuple[str, bool, float, dict]:
    env = bfcl.make_env(task)
    env.reset()
    out = None
    for turn in bfcl_calls.ground_truth_actions(task):
        for action in turn:
            out = env.step(action)
            assert not out[0].startswith("Error"), (task.id, action[:120], out[0][:200])
    return out


def test_the_multi_turn_backends_import_with_the_standard_library():
    status = bfcl_data.class_status()
    for c in MULTI_TURN_CLASSES:
        assert status[c] is None, (c, status[c])
    report = bfcl_data.support_report()
    for c in bfcl_data.CATEGORIES:
        assert report["categories"][c]["entries"] == 200


@pytest.mark.parametrize("category", bfcl_data.CATEGORIES)
def test_replaying_the_ground_truth_scores_every_served_entry_correct(category):
    tasks = bfcl.make_tasks([category])
    served, skipped = bfcl_data.supported_entries(category)
    assert len(tasks) == len(served) and len(served) + len(skipped) == 200
    wrong = []
    for task in tasks:
        obs, done, reward, info = _replay(task)
        if not (done and reward == 1.0 and info["valid"]):
            wrong.append((task.id, info.get("error_type"), info.get("error_message")))
    assert not wrong, wrong[:3]


def test_split_prompt_and_registry():
    cfg = Config()
    assert bfcl.build_split(cfg, "train") == []
    test = bfcl.build_split(cfg, "test")
    assert len(test) == 200 and {t.split for t in test} == {"test"} and test[0].id == "multi_turn_base_0"
    spec = get_env_spec("bfcl")
    assert spec is bfcl.SPEC and spec["eval_only"]
    t = test[0]
    assert t.prompt[1]["content"].startswith("Move 'final_report.pdf' within document directory")
    assert '"name": "mv"' in t.prompt[0]["content"] and "<tool_call>" in t.prompt[0]["content"]
    assert json.loads(t.reference)[0][0] == "cd(folder='document')" and t.difficulty == 10
    cfg.files.bfcl_categories = ["multi_turn_unknown"]
    with pytest.raises(ConfigError, match="files.bfcl_categories"):
        bfcl.build_split(cfg, "test")
    with pytest.raises(NotImplementedError, match="evaluation environment"):
        bfcl.make_expert(t, 0.0, 0)


def test_user_turns_are_presented_in_sequence_and_the_checker_fails_wrong_conversations():
    t = _task("multi_turn_base_0")
    env = bfcl.make_env(t)
    env.reset()
    obs, done, reward, info = env.step("Sure, done.")  # ends turn 0 without a call
    assert obs.startswith("Perform a detailed search using grep") and not done and info["turn"] == 1
    for _ in range(3):
        obs, done, reward, info = env.step("ok")
    assert done and reward == 0.0 and not info["valid"]
    assert info["error_type"] == "multi_turn:empty_turn_model_response"

    env = bfcl.make_env(t)
    env.reset()
    turns = bfcl_calls.ground_truth_actions(t)
    turns[0][2] = call("mv", source="final_report.pdf", destination="archive")  # a wrong destination
    for turn in turns:
        for a in turn:
            out = env.step(a)
    assert out[1] and out[2] == 0.0 and out[3]["error_type"] == "multi_turn:instance_state_mismatch"


def test_miss_func_holds_functions_back_until_their_turn():
    t = _task("multi_turn_miss_func_0")
    entry = bfcl_data.load_category("multi_turn_miss_func")["multi_turn_miss_func_0"]
    (turn, names), = entry["missed_function"].items()
    assert all(f'"name": "{n}"' not in t.prompt[0]["content"] for n in names)
    env = bfcl.make_env(t)
    env.reset()
    for k, actions in enumerate(bfcl_calls.ground_truth_actions(t)):
        for a in actions:
            obs, done, reward, info = env.step(a)
        if k + 1 == int(turn):
            assert obs.endswith(bfcl.ADDED_FUNCTIONS_PROMPT) and all(f'"name": "{n}"' in obs for n in names)
    assert done and reward == 1.0


def test_hostile_and_malformed_calls_are_error_observations():
    t = _task("multi_turn_base_0")
    env = bfcl.make_env(t)
    env.reset()
    hostile = [
        call("no_such_function"),
        call("cd", directory="document"),  # wrong parameter name
        call("cd"),  # missing parameter
        call("mv", source="a", destination="b", force=True),
        call("exit"),
        call("__class__"),
        call("_load_scenario", scenario={}),
        '<tool_call>{"name": "cd", "parameters": {"folder": NaN}}</tool_call>',
        '<tool_call>{"name": "cd", "parameters": {"fol der": "x"}}</tool_call>',
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"name": "cd", "parameters": "document"}</tool_call>',
        "<tool_call>" + json.dumps({"name": "echo", "parameters": {"content": "x" * 70000}}) + "</tool_call>",
    ]
    for a in hostile:
        obs, done, reward, info = env.step(a)
        assert obs.startswith("Error:") and not done and reward == 0.0, (a[:80], obs)
    assert env.decoded == [[]]  # nothing the checker would see
    obs, done, _, info = env.step(call("cd", folder="document") + call("no_such_function"))
    assert obs.startswith("cd: ") and "no_such_function: Error: unknown function" in obs and info["errors"] == 1
    assert env.decoded == [[["cd(folder='document')"]]]


def test_too_many_call_messages_in_one_turn_force_terminate():
    env = bfcl.make_env(_task("multi_turn_base_0"))
    env.reset()
    for k in range(bfcl_data.MAXIMUM_STEP_LIMIT):
        assert not env.step(call("pwd"))[1]
    obs, done, reward, info = env.step(call("pwd"))
    assert done and reward == 0.0 and info["error_type"] == "multi_turn:force_terminated"
    assert env.step(call("pwd"))[0] == "Error: the conversation is over"


def test_scoring_leaves_no_instances_behind_in_the_checker_module():
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils

    before = {k for k in vars(multi_turn_utils) if k.startswith("supo_")}
    _replay(_task("multi_turn_base_1"))
    _replay(_task("multi_turn_base_1"))  # the same entry twice: separate instances, both correct
    assert {k for k in vars(multi_turn_utils) if k.startswith("supo_")} == before


def test_entries_whose_backends_do_not_import_are_skipped_and_reported(monkeypatch):
    real = bfcl_data.import_status
    monkeypatch.setattr(bfcl_data, "import_status",
                        lambda n: "ModuleNotFoundError: No module named 'mpmath'" if n == "MathAPI" else real(n))
    served, skipped = bfcl_data.supported_entries("multi_turn_base")
    math_entries = [e["id"] for e in bfcl_data.load_category("multi_turn_base").values()
                    if "MathAPI" in e["involved_classes"]]
    assert len(skipped) == len(math_entries) == 25 and len(served) == 175
    assert "MathAPI (ModuleNotFoundError: No module named 'mpmath')" in skipped[0][1]
    report = bfcl_data.support_report(("multi_turn_base",))
    assert report["categories"]["multi_turn_base"]["served"] == 175
    assert len(bfcl.make_tasks(["multi_turn_base"])) == 175
