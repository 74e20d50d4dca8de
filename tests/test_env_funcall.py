"""Tests for supo.envs.funcall: the synthesised function-calling environment's config, prompt, legality and reward,
and the hostile actions only its tools take (each an ``Error:`` observation; tests/test_env_contract.py runs the ones
every env takes). Its scripted expert: tests/test_env_funcall_expert.py.
"""

from __future__ import annotations

import pytest
from funcall_fixtures import ALL, funcall_tasks, task_of

from supo.config import ConfigError, load_config
from supo.envs.base import format_tool_call
from supo.envs.funcall import (
    FuncallEnv,
    build_split,
    corpus,
    make_env,
)
from supo.models import (
    SUMMARY_OPEN,
    TOOL_CALL_OPEN,
)
from supo.synth.families import FAMILIES
from supo.synth.phases import FINISH
from supo.types import Task


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return funcall_tasks()


def _replay(env, task: Task) -> tuple[float, bool]:
    """Run the task's validated calls (literal values from the plan) through env.step."""
    done, reward = False, 0.0
    for step in task.env_config["plan"]:
        obs, done, reward, _ = env.step(format_tool_call(step["name"], **step["params"]))
        assert not obs.startswith("Error"), (step, obs)
    return reward, done


# ---------------------------------------------------------------------------------------------------------------------
# registry, config, splits


def test_build_split_reads_the_funcall_section_and_seed():
    cfg = load_config(None, overrides={"funcall.num_train": 12, "funcall.num_test": 8, "funcall.families": ["bank"],
                                       "funcall.train_min_calls": 5, "funcall.train_max_calls": 6, "seed": 3})
    train, test = build_split(cfg, "train"), build_split(cfg, "test")
    assert len(train) == 12 and len(test) == 8
    assert all(t.env_config["family"] == "bank" and 5 <= t.difficulty <= 6 for t in train)
    assert all(8 <= t.difficulty <= 14 for t in test)
    assert build_split(cfg, "train") == train
    other = load_config(None, overrides={"funcall.num_train": 12, "funcall.families": ["bank"],
                                         "funcall.train_min_calls": 5, "funcall.train_max_calls": 6, "seed": 4})
    assert build_split(other, "train") != train


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"funcall.families": ["nope"]}, "funcall.families"),
        ({"funcall.families": []}, "funcall.families"),
        ({"funcall.train_min_calls": 9, "funcall.train_max_calls": 8}, "funcall.train_min_calls"),
        ({"funcall.test_min_calls": 4, "funcall.test_max_calls": 6}, "funcall.test_min_calls"),
        ({"funcall.k_max": 0}, "funcall.k_max"),
        ({"funcall.explore_prob": 1.5}, "funcall.explore_prob"),
        ({"funcall.noise_prob": -0.1}, "funcall.noise_prob"),
    ],
)
def test_funcall_config_is_validated_naming_the_field(overrides, field_name):
    with pytest.raises(ConfigError) as ei:
        load_config(None, overrides=overrides)
    assert field_name in str(ei.value)


def test_funcall_env_rejects_an_unknown_family():
    with pytest.raises(ValueError, match="family"):
        FuncallEnv("nope", {}, "{}", "")


def test_prompt_shows_tools_with_prerequisites_and_the_query(tasks):
    for t in tasks[:8]:
        system, user = t.prompt
        assert system["role"] == "system" and user["role"] == "user"
        for name in FAMILIES[t.env_config["family"]].graph:
            assert f"- {name}(" in system["content"]
        assert "Requires" in system["content"] and "finish(answer: str)" in system["content"]
        assert user["content"] and "<tool_call>" not in user["content"]


# ---------------------------------------------------------------------------------------------------------------------
# the environment: legality and reward


def test_ground_truth_replay_scores_one_and_reset_restores(tasks):
    for t in tasks[:60]:
        env = make_env(t)
        env.reset()
        assert _replay(env, t) == (1.0, True)
        env.reset()
        assert env.backend.state == t.env_config["state"] and not env.called and not env.done
        assert _replay(env, t) == (1.0, True)


@pytest.mark.parametrize("family", ALL)
def test_tool_before_its_prerequisites_is_an_error_and_the_episode_goes_on(tasks, family):
    t = task_of(tasks, family)
    env = make_env(t)
    env.reset()
    graph = FAMILIES[family].graph
    for name in graph:
        if graph[name].requires:
            step = next((s for s in t.env_config["plan"] if s["name"] == name), None)
            params = step["params"] if step else {p.name: ("x" if p.type is str else 1) for p in graph[name].params}
            obs, done, reward, info = env.step(format_tool_call(name, **params))
            assert obs.startswith("Error:") and "requires" in obs and not done and reward == 0.0 and "error" in info
    assert _replay(env, t) == (1.0, True)


def test_wrong_answer_or_wrong_state_scores_zero(tasks):
    t = task_of(tasks, "travel", 6)
    env = make_env(t)
    env.reset()
    for step in t.env_config["plan"][:-1]:
        env.step(format_tool_call(step["name"], **step["params"]))
    obs, done, reward, _ = env.step(format_tool_call(FINISH, answer=t.reference + "x"))
    assert (obs, done, reward) == ("incorrect", True, 0.0)
    # the whole observation line is accepted as the answer too
    env.reset()
    for step in t.env_config["plan"][:-1]:
        env.step(format_tool_call(step["name"], **step["params"]))
    assert env.step(format_tool_call(FINISH, answer=t.env_config["answer_observation"]))[2] == 1.0
    # the right answer after an extra side effect (a booking cancelled on the way) is wrong
    checked = 0
    for t in [t for t in tasks if t.env_config["family"] == "travel"][:20]:
        env = make_env(t)
        env.reset()
        for step in t.env_config["plan"][:-1]:
            env.step(format_tool_call(step["name"], **step["params"]))
        state = env.backend.state
        holders = [p for p, pp in sorted(state["passports"].items())
                   if any(b["passport"] == pp and b["active"] for b in state["bookings"])]
        if not holders:
            continue
        passport = env.step(format_tool_call("get_passport", passenger=holders[0]))[0].split()[1]
        ticket = env.step(format_tool_call("get_booking", passport=passport))[0].split()[1]
        assert env.step(format_tool_call("cancel_ticket", ticket=ticket))[0] == f"cancelled {ticket}"
        assert env.step(format_tool_call(FINISH, answer=t.reference))[:3] == ("incorrect", True, 0.0)
        checked += 1
    assert checked > 5


def test_step_after_finish_is_an_error(tasks):
    env = make_env(tasks[0])
    env.reset()
    env.step(format_tool_call(FINISH, answer="x"))
    obs, done, reward, _ = env.step(format_tool_call(FINISH, answer="x"))
    assert obs.startswith("Error:") and done is True and reward == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# hostile actions: each is an Error observation, the episode goes on

HOSTILE = {
    "other_family_tool": (format_tool_call("cd", folder="docs"), "unknown tool"),
    "missing_param": (format_tool_call("get_zipcode"), "missing"),
    "extra_param": (format_tool_call("get_zipcode", city="Oakdale", country="X"), "unknown parameter"),
    "int_for_str": (format_tool_call("get_zipcode", city=5), "string"),
    "null_for_str": (format_tool_call("get_zipcode", city=None), "string"),
    "list_for_str": (format_tool_call("get_zipcode", city=["Oakdale"]), "string"),
    "dict_for_str": (format_tool_call("get_zipcode", city={"a": 1}), "string"),
    "long_string": (format_tool_call("get_zipcode", city="x" * 300), "limit"),
    "unknown_city": (format_tool_call("get_zipcode", city="Atlantis"), "unknown city"),
    "unicode_city": (format_tool_call("get_zipcode", city="\u202eOak\u0000dale\ud800"), "unknown city"),
    "python_injection_param": (format_tool_call("get_zipcode", city="__import__('os').system('echo hi')"),
                               "unknown city"),
    "json_injection_in_value": (format_tool_call("get_zipcode", city='x"}, "name": "finish'), "unknown city"),
    "path_traversal_ticket": (format_tool_call("get_passport", passenger="../../etc/passwd"), "unknown passenger"),
    "prerequisite_skipped": (format_tool_call("buy_ticket", flight="FL10", passport="P10"), "requires"),
    "finish_wrong_type": (format_tool_call("finish", answer=12), "string"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_action_returns_error_and_env_continues(tasks, name, capfd):
    action, fragment = HOSTILE[name]
    t = task_of(tasks, "travel", 6)
    env = make_env(t)
    env.reset()
    obs, done, reward, info = env.step(action)
    assert isinstance(obs, str) and obs.startswith("Error:"), obs[:200]
    assert done is False and reward == 0.0 and "error" in info
    if fragment is not None:
        assert fragment in obs, obs[:200]
    assert len(obs) < 600
    assert _replay(env, t) == (1.0, True)  # the episode goes on and can still be solved
    out, _ = capfd.readouterr()
    assert "hi" not in out.split()  # nothing was executed


@pytest.mark.parametrize("family", ALL)
def test_wrong_argument_types_for_every_tool_are_errors(tasks, family):
    t = task_of(tasks, family)
    env = make_env(t)
    env.reset()
    graph = FAMILIES[family].graph
    for name in graph:
        for p in graph[name].params:
            good = {q.name: ("x" if q.type is str else 1) for q in graph[name].params}
            for bad in (None, True, 1.5, [1], {"k": 1}, ("x" if p.type is int else 7)):
                obs, done, reward, _ = env.step(format_tool_call(name, **{**good, p.name: bad}))
                assert obs.startswith("Error:") and not done and reward == 0.0
    assert _replay(env, t) == (1.0, True)


# ---------------------------------------------------------------------------------------------------------------------
# the tokenizer corpus


def test_corpus_covers_prompts_actions_observations_and_summaries(tasks):
    texts = corpus(tasks[:8])
    assert any(x.startswith(TOOL_CALL_OPEN) and '"finish"' in x for x in texts)
    assert any(x.startswith(SUMMARY_OPEN) for x in texts)
    assert sum(x == "correct" for x in texts) == 8
    assert all(m["content"] in texts for t in tasks[:8] for m in t.prompt)
