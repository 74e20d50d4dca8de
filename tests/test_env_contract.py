"""The environment contract, checked for every registered environment (``supo.envs.ENVS``; cases in env_contract.py).

* reset returns an observation and restarts the episode; step returns (str, bool, float, dict); a step after the
  episode ended is an ``Error:`` observation;
* hostile, malformed, deeply nested and fuzzed actions are ``Error:`` observations (never an exception), nothing they
  hold is executed, and the episode goes on and can still be won;
* the env's scripted expert (or, for an env without one, its oracle) wins every sample task through ``env.step``,
  also after the task went through a task row;
* a task row whose ``env_config`` is broken is refused with an error naming the field (and, read from a split file,
  the file, the row and the task id).

What only one env does is tested in its own file (tests/test_env_<name>.py, tests/test_envs.py for array).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass

import pytest
from env_contract import (
    CASES,
    TEXT_WITHOUT_A_CALL,
    EnvCase,
    check_step_result,
    close,
    env_names,
    expert_actions,
    fuzz_settings,
    hostile_actions,
    json_values,
    parse_call_text,
    play,
    tagged,
    winning_actions,
)
from hypothesis import given
from hypothesis import strategies as st

from supo.data import read_tasks, write_tasks
from supo.envs import ENVS, EnvSpec, get_env_spec
from supo.errors import DataError
from supo.types import Task


@dataclass
class Sample:
    name: str
    spec: EnvSpec
    case: EnvCase
    tasks: list[Task]
    wins: list[list[str]]
    """Per task, actions that win it from a fresh episode."""

    def env(self, k: int = 0):
        env = self.spec.make_env(self.tasks[k])
        env.reset()
        return env

    def tool_and_param(self) -> tuple[str, str]:
        """A tool of the first task that takes a parameter, and that parameter (from its winning actions)."""
        for action in self.wins[0]:
            parsed = parse_call_text(action)
            if parsed and parsed[1]:
                return parsed[0], next(iter(parsed[1]))
        raise AssertionError(f"{self.name}: no winning action calls a tool with a parameter")


@pytest.fixture(scope="module", params=env_names())
def sample(request, tmp_path_factory) -> Sample:
    name = request.param
    if name not in CASES:
        pytest.fail(f"environment {name!r} is registered but has no contract case in tests/env_contract.py")
    case = CASES[name]
    tasks = case.tasks(tmp_path_factory.mktemp(f"contract_{name}"))
    assert len(tasks) >= 2, name
    return Sample(name, ENVS[name], case, tasks, [winning_actions(name, t) for t in tasks])


def test_every_registered_env_has_a_contract_case():
    assert set(ENVS) <= set(CASES), sorted(set(ENVS) - set(CASES))
    for name in ENVS:
        assert get_env_spec(name) is ENVS[name] and ENVS[name].name == name


# ---------------------------------------------------------------------------------------------------------------------
# reset and step


def test_reset_returns_an_observation_and_restarts_the_episode(sample):
    for task, wins in zip(sample.tasks, sample.wins):
        env = sample.spec.make_env(task)
        first = env.reset()
        assert isinstance(first, str) and first
        assert play(env, wins)[1:3] == (True, 1.0)
        assert env.reset() == first
        assert play(env, wins)[1:3] == (True, 1.0), f"{task.id}: reset did not restore the episode"
        close(env)


def test_step_returns_obs_done_reward_info_and_a_step_after_the_end_is_an_error(sample):
    env = sample.env()
    obs, done, reward, _ = check_step_result(env.step(sample.wins[0][0]))
    assert not obs.startswith("Error") and not done and reward == 0.0
    assert play(env, sample.wins[0][1:])[1:3] == (True, 1.0)
    obs, done, reward, _ = check_step_result(env.step(sample.wins[0][-1]))
    assert obs.startswith("Error:") and done is True and reward == 1.0
    close(env)


# ---------------------------------------------------------------------------------------------------------------------
# the expert (or the oracle) wins, also after a task row round trip


def test_the_expert_or_the_oracle_wins_every_sample_task_through_step(sample):
    for task in sample.tasks:
        env = sample.spec.make_env(task)
        env.reset()
        if sample.case.oracle is None:
            actions, (_, done, reward, _) = expert_actions(env, sample.spec.make_expert(task, 0.0, 1))
        else:
            with pytest.raises(NotImplementedError):
                sample.spec.make_expert(task, 0.0, 1)
            actions = sample.case.oracle(task)
            _, done, reward, _ = play(env, actions)
        assert done and reward == 1.0, task.id
        assert len(actions) >= 2, task.id  # a multi-turn task, not a one-shot answer
        close(env)


def test_a_task_survives_the_row_round_trip_and_is_still_won(sample):
    for task, wins in zip(sample.tasks, sample.wins):
        back = Task.from_row(json.loads(json.dumps(task.to_row())))
        assert back == task
        env = sample.spec.make_env(back)
        env.reset()
        assert play(env, wins)[1:3] == (True, 1.0)
        close(env)


# ---------------------------------------------------------------------------------------------------------------------
# hostile and malformed actions: an Error observation, nothing executed, the episode goes on


HOSTILE_NAMES = sorted(hostile_actions("tool", "param"))


def _assert_error_then_won(sample: Sample, env, action: str, fragment: str | None = None) -> None:
    """``action`` on ``env`` (one winning action in) is an Error observation; the rest of the winning actions win."""
    try:
        result = env.step(action)
    except Exception as e:  # noqa: BLE001 -- step must never raise; say what escaped and what caused it
        pytest.fail(f"{sample.name}: env.step raised {type(e).__name__}: {e} "
                    f"(while handling {type(e.__context__).__name__})")
    obs, done, reward, _ = check_step_result(result)
    assert obs.startswith("Error:"), (sample.name, obs[:200])
    assert done is False and reward == 0.0
    assert len(obs) < 600, obs[:200]
    if fragment is not None:
        assert fragment in obs, (sample.name, obs[:200])
    assert play(env, sample.wins[0][1:])[1:3] == (True, 1.0), "the episode cannot be won after the error"


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_hostile_action_is_an_error_observation_and_the_episode_goes_on(sample, hostile, capfd):
    case = sample.case
    if case.text_ends_turn and hostile in TEXT_WITHOUT_A_CALL:
        pytest.skip(f"{sample.name}: a message without a tool call ends the user's turn (tested in its own file)")
    if case.parallel_calls and hostile == "two_calls":
        pytest.skip(f"{sample.name}: several calls in one message are parallel calls (tested in its own file)")
    action, fragment = hostile_actions(*sample.tool_and_param())[hostile]
    if hostile in ("unknown_tool", "python_injection_name"):
        fragment = case.unknown_tool
    env = sample.env()
    play(env, sample.wins[0][:1])
    _assert_error_then_won(sample, env, action, fragment)
    close(env)
    out, _ = capfd.readouterr()
    assert "hi" not in out.split()  # nothing was executed


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("depth", [5, 50, 200, 400, 600, 800, 1000])
def test_deeply_nested_json_is_an_error_not_an_exception(sample, kind, depth):
    nested = "[" * depth + "0" + "]" * depth if kind == "list" else '{"a":' * depth + "0" + "}" * depth
    tool, param = sample.tool_and_param()
    env = sample.env()
    play(env, sample.wins[0][:1])
    action = tagged(f'{{"name": {json.dumps(tool)}, "parameters": {{"{param}": {nested}}}}}')
    _assert_error_then_won(sample, env, action)
    close(env)


# ---------------------------------------------------------------------------------------------------------------------
# fuzzing: step never raises, and an Error observation neither ends the episode nor pays


def _fuzz(sample: Sample, make_action, **strategies) -> None:
    """Fuzz ``make_action(**drawn)`` on a sample task, ``advance`` winning actions into the episode; then one more
    winning action, which must still step cleanly."""

    @fuzz_settings(sample.case.fuzz_examples)
    @given(task=st.integers(0, len(sample.tasks) - 1), advance=st.integers(0, 3), **strategies)
    def run(task, advance, **drawn):
        wins = sample.wins[task]
        k = min(advance, len(wins) - 1)
        env = sample.env(task)
        play(env, wins[:k])
        obs, done, reward, _ = check_step_result(env.step(make_action(**drawn)))
        if obs.startswith("Error:"):
            assert done is False and reward == 0.0, obs[:200]
        check_step_result(env.step(wins[k]))
        close(env)

    run()


def test_fuzz_step_arbitrary_text(sample):
    _fuzz(sample, lambda text, tags: tagged(text) if tags else text, text=st.text(max_size=300), tags=st.booleans())


def test_fuzz_step_json_shaped_calls(sample):
    """Names, parameter names and values the env's own winning actions use, mixed with any JSON."""
    calls = [c for actions in sample.wins for a in actions if (c := parse_call_text(a))]
    names = sorted({n for n, _ in calls})
    params = sorted({p for _, ps in calls for p in ps})
    values = [v for _, ps in calls for v in ps.values()]

    def action(name, parameters, prefix):
        return prefix + tagged(json.dumps({"name": name, "parameters": parameters}))

    _fuzz(sample, action,
          name=st.one_of(st.sampled_from(names), st.text(max_size=10), json_values),
          parameters=st.one_of(st.dictionaries(st.sampled_from([*params, "x"]),
                                               st.one_of(json_values, st.sampled_from(values)), max_size=3),
                               json_values),
          prefix=st.text(alphabet=string.printable, max_size=10))


# ---------------------------------------------------------------------------------------------------------------------
# task rows: the env's own rows pass, a broken one is refused naming the field


def test_own_rows_pass_and_a_broken_or_missing_field_is_named(sample):
    validate = sample.spec.validate_env_config
    field, bad = sample.case.broken_field
    for task in sample.tasks:
        validate(task.env_config)  # what the env's own builder writes passes
    cfg = sample.tasks[0].env_config
    with pytest.raises(ValueError, match=f"^env_config.{field}: expected "):
        validate({**cfg, field: bad})
    with pytest.raises(ValueError, match=f"^env_config.{field}: missing"):
        validate({k: v for k, v in cfg.items() if k != field})


def test_make_env_refuses_a_row_without_a_field_naming_the_task(sample):
    field, _ = sample.case.broken_field
    t = sample.tasks[0]
    bad = Task(id="row-x7", env=t.env, env_config={k: v for k, v in t.env_config.items() if k != field},
               split=t.split, prompt=t.prompt, reference=t.reference)
    with pytest.raises(ValueError, match="row-x7"):
        sample.spec.make_env(bad)


def test_a_split_file_with_a_broken_row_is_refused_naming_file_row_task_and_field(sample, tmp_path):
    path = tmp_path / "test.parquet"
    write_tasks(sample.tasks, path)
    assert read_tasks(path) == sample.tasks
    field, bad = sample.case.broken_field
    broken = [*sample.tasks]
    t = broken[1]
    broken[1] = Task(id=t.id, env=t.env, env_config={**t.env_config, field: bad}, split=t.split, prompt=t.prompt,
                     reference=t.reference, difficulty=t.difficulty)
    write_tasks(broken, path)
    with pytest.raises(DataError, match=f"^{path}, row 1 \\(id '{t.id}'\\): env_config.{field}: expected "):
        read_tasks(path)
