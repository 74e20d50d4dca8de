"""Tests for supo.envs.funcall: the synthesised function-calling environment, its reward, its scripted expert (through
``env.step`` and through the real agent loop), and hostile / fuzzed actions (each an ``Error:`` observation).

The expert acts only through ``env.step`` on the text it writes, i.e. through the same parser the policy's actions go
through.
"""

from __future__ import annotations

import json
import statistics
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supo.config import ConfigError, load_config
from supo.envs import ENVS, get_env_spec
from supo.envs.base import format_tool_call
from supo.envs.funcall import (
    FuncallEnv,
    FuncallExpert,
    build_split,
    corpus,
    make_env,
    summary_text,
    wrong_value,
)
from supo.models import SUMMARY_CLOSE, SUMMARY_OPEN, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, build_tokenizer
from supo.synth.families import FAMILIES
from supo.synth.tasks import FINISH, make_tasks
from supo.types import Task

ALL = sorted(FAMILIES)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _call(body: str) -> str:
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    """300 tasks: 150 train-like (4..10 calls) and 150 test-like (8..14 calls), all four families."""
    return make_tasks("train", 150, 4, 10, ALL, seed=11) + make_tasks("test", 150, 8, 14, ALL, seed=11)


def _task(tasks, family: str, min_calls: int = 0) -> Task:
    return next(t for t in tasks if t.env_config["family"] == family and t.difficulty >= min_calls)


def _replay(env, task: Task) -> tuple[float, bool]:
    """Run the task's validated calls (literal values from the plan) through env.step."""
    done, reward = False, 0.0
    for step in task.env_config["plan"]:
        obs, done, reward, _ = env.step(format_tool_call(step["name"], **step["params"]))
        assert not obs.startswith("Error"), (step, obs)
    return reward, done


def _run_expert(task: Task, error_rate: float = 0.0, summarize_at=frozenset(), drop_before_summary=False,
                env=None, expert=None, max_actions: int = 200, allow_errors: bool = False):
    env = env if env is not None else make_env(task)
    if expert is None:
        env.reset()
        expert = FuncallExpert(task, error_rate=error_rate, seed=1)
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


# ---------------------------------------------------------------------------------------------------------------------
# registry, config, splits


def test_registered_with_the_env_protocol():
    spec = get_env_spec("funcall")
    assert spec is ENVS["funcall"]
    assert {"build_split", "make_tasks", "make_env", "make_expert", "corpus"} <= set(spec)


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


def test_make_env_rejects_bad_config():
    bad = Task(id="x-1", env="funcall", env_config={"family": "files"}, split="train", prompt=[], reference="")
    with pytest.raises(ValueError, match="x-1"):
        make_env(bad)
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
    t = _task(tasks, family)
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
    t = _task(tasks, "travel", 6)
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
# the expert


def test_expert_solves_tasks_through_env_step(tasks):
    results = [_run_expert(t) for t in tasks]
    solved = sum(r == 1.0 for r, _ in results)
    assert solved >= 0.99 * len(tasks)
    assert all(k == t.difficulty for (_, k), t in zip(results, tasks))  # exactly the validated calls


def test_expert_with_faithful_summaries_and_drops_still_solves(tasks):
    """error_rate 0: drop + summary + continue (the trigger protocol, R2) loses nothing, even though the dropped
    action's side effect stays in the environment and the expert redoes it."""
    for every in (2, 3, 5):
        results = [_run_expert(t, summarize_at=set(range(every, 200, every)), drop_before_summary=True)
                   for t in tasks[::3]]
        assert all(r == 1.0 for r, _ in results), every


def test_expert_with_wrong_summaries_usually_fails(tasks):
    rewards = []
    for t in tasks:
        ex_reward, _ = _run_expert(t, error_rate=1.0, summarize_at={t.difficulty // 2}, drop_before_summary=True,
                                   allow_errors=True)
        rewards.append(ex_reward)
    wrong = sum(r != 1.0 for r in rewards) / len(rewards)
    assert wrong >= 0.9, f"only {wrong:.0%} wrong after a wrong summary"


def test_expert_error_rate_is_roughly_the_failure_rate(tasks):
    """One summary per episode at error_rate e: the expert fails on about a share e of the episodes."""
    for rate in (0.2, 0.5):
        fails = 0
        for k, t in enumerate(tasks):
            env = make_env(t)
            env.reset()
            ex = FuncallExpert(t, error_rate=rate, seed=k)
            r, _ = _run_expert(t, summarize_at={t.difficulty // 2}, env=env, expert=ex, allow_errors=True)
            fails += r != 1.0
        assert abs(fails / len(tasks) - rate) < 0.1, (rate, fails)


def test_summary_states_progress_and_needed_values(tasks):
    t = _task(tasks, "travel", 7)
    env = make_env(t)
    env.reset()
    ex = FuncallExpert(t)
    plan = t.env_config["plan"]
    for pos in range(len(plan) - 1):
        live = ex.live(ex.state.pos)
        text = ex.summarize()
        assert text.startswith(f"{SUMMARY_OPEN}{pos} calls done")
        for i in live:  # every value a later call needs is written, with the output's name
            assert f"; {ex.out_name[i]} {ex.state.mem[i]}" in text
        assert ex.parse_summary(text).pos == pos and ex.parse_summary(text).mem == ex.state.mem
        a = ex.act()
        ex.observe(a, env.step(a)[0])
    assert ex.summary_errors == 0
    assert FuncallExpert(t).parse_summary("garbage").pos == 0


def test_summary_error_is_counted_and_changes_the_summary(tasks):
    for t in tasks[:40]:
        env = make_env(t)
        env.reset()
        ex = FuncallExpert(t, error_rate=1.0, seed=2)
        for _ in range(t.difficulty // 2):
            a = ex.act()
            ex.observe(a, env.step(a)[0])
        faithful = summary_text(ex.state.pos, [(ex.out_name[i], ex.state.mem[i]) for i in ex.live(ex.state.pos)])
        text = ex.summarize()
        assert (text != faithful) == (ex.summary_errors == 1)
    assert wrong_value("TK12", __import__("random").Random(0)) != "TK12"
    assert wrong_value("red fox", __import__("random").Random(0)) != "red fox"


def test_expert_drop_restores_state_before_last_action(tasks):
    t = _task(tasks, "bank", 8)
    env = make_env(t)
    env.reset()
    ex = FuncallExpert(t)
    for _ in range(t.difficulty - 4):
        before = (ex.state.pos, dict(ex.state.mem))
        a = ex.act()
        ex.observe(a, env.step(a)[0])
        after = (ex.state.pos, dict(ex.state.mem))
        ex.drop()
        assert (ex.state.pos, ex.state.mem) == before
        assert ex.act() == a  # it will redo the dropped action
        ex.observe(a, env.step(a)[0])  # redoing it is harmless: every tool is repeat-safe
        assert (ex.state.pos, ex.state.mem) == after
    s2 = (ex.state.pos, dict(ex.state.mem))
    for _ in range(2):
        a = ex.act()
        ex.observe(a, env.step(a)[0])
    ex.drop()
    ex.drop()
    assert (ex.state.pos, ex.state.mem) == s2
    assert _run_expert(t, env=env, expert=ex)[0] == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# through the real agent loop, with a tokenizer trained on the corpus


@pytest.fixture(scope="module")
def loop_setup(tmp_path_factory, tasks):
    from supo.rollout.templates import Templates

    cfg = load_config(None)
    # as `supo-cli prepare` builds it: the corpus of some train and test tasks (every family), v_sum, roles
    texts = corpus(tasks[:120] + tasks[150:200])
    texts += [cfg.prompts.summary_instruction, cfg.prompts.continuation + "\n"] * 50
    texts += ["system\n", "user\n", "assistant\n", "tool\n"] * 200
    tok = build_tokenizer(texts, 1024, tmp_path_factory.mktemp("tok_funcall"))
    return tok, Templates.build(tok, cfg.prompts.summary_instruction, cfg.prompts.continuation)


def test_corpus_covers_prompts_actions_observations_and_summaries(tasks):
    texts = corpus(tasks[:8])
    assert any(x.startswith(TOOL_CALL_OPEN) and '"finish"' in x for x in texts)
    assert any(x.startswith(SUMMARY_OPEN) for x in texts)
    assert sum(x == "correct" for x in texts) == 8
    assert all(m["content"] in texts for t in tasks[:8] for m in t.prompt)


def test_expert_text_fits_the_turn_budgets(tasks, loop_setup):
    """Actions and summaries fit max_turn_tokens / max_summary_tokens (24, one kept for the end of turn) and
    observations fit max_obs_tokens (24), so nothing the expert relies on is cut in the agent loop."""
    tok, _ = loop_setup
    n = lambda s: len(tok.encode(s, add_special_tokens=False))  # noqa: E731
    acts, obs, sums = [], [], []
    for t in tasks:
        env, ex = make_env(t), FuncallExpert(t)
        env.reset()
        while True:
            a = ex.act()
            o, done, _, _ = env.step(a)
            acts.append(n(a))
            obs.append(n(o))
            if done:
                break
            ex.observe(a, o)
            sums.append(n(summary_text(ex.state.pos, [(ex.out_name[i], ex.state.mem[i])
                                                      for i in ex.live(ex.state.pos)])))
    assert max(acts) <= 23 and max(sums) <= 23 and max(obs) <= 24, (max(acts), max(sums), max(obs))


def _loop(tasks, loop_setup, error_rate: float, L: int):
    from supo.rollout.agent_loop import LoopSettings, run_rollouts
    from supo.rollout.expert_policy import ExpertPolicy

    tok, templates = loop_setup
    st_ = LoopSettings(trigger=L, max_summaries=20, max_steps=100, max_turn_tokens=24, max_summary_tokens=24,
                       max_obs_tokens=24, engine_max_len=L + 200)
    experts = {k: FuncallExpert(t, error_rate=error_rate, seed=k) for k, t in enumerate(tasks)}
    policy = ExpertPolicy(tok, experts, templates.eos_id)
    rollouts = run_rollouts([(t, f"{t.id}@0", 0) for t in tasks], policy, tok, templates, st_, make_env)
    return rollouts, experts


def test_expert_solves_through_the_agent_loop_with_summaries(tasks, loop_setup):
    from supo.rollout.templates import prompt_ids

    tok, _ = loop_setup
    longest_prompt = max(len(prompt_ids(tok, t)) for t in tasks)
    L = longest_prompt + 70  # small: most episodes need one or more summaries
    rollouts, experts = _loop(tasks, loop_setup, 0.0, L)
    assert sum(r.finished and r.reward == 1.0 for r in rollouts) >= 0.99 * len(tasks)
    assert statistics.mean(r.num_summaries for r in rollouts) > 0.5
    assert sum(r.num_summaries > 0 for r in rollouts) > len(tasks) // 2
    assert sum(r.summary_format_misses for r in rollouts) == 0
    assert all(max(r.context_lengths) < L + 24 + 7 + 24 + 1 for r in rollouts)
    # with imperfect summaries the expert fails about as often as a summary goes wrong
    rollouts, experts = _loop(tasks, loop_setup, 0.5, L)
    success = sum(r.reward == 1.0 for r in rollouts) / len(rollouts)
    errs = sum(e.summary_errors for e in experts.values())
    assert errs > 0 and success < 0.85


# ---------------------------------------------------------------------------------------------------------------------
# hostile actions: each is an Error observation, the episode goes on

HUGE = "a" * (1 << 20)

HOSTILE = {
    "no_tags": ('{"name": "get_zipcode", "parameters": {"city": "Oakdale"}}', "no <tool_call>"),
    "plain_text": ("Ticket TK12 is booked.", "no <tool_call>"),
    "empty": ("", None),
    "unclosed_tag": (TOOL_CALL_OPEN + '{"name": "get_zipcode", "parameters": {}}', None),
    "bad_json": (_call('{"name": "get_zipcode", "parameters": {"city": "Oakdale"}'), "not valid JSON"),
    "single_quotes": (_call("{'name': 'get_zipcode', 'parameters': {'city': 'x'}}"), "not valid JSON"),
    "json_list": (_call('[{"name": "get_zipcode", "parameters": {"city": "x"}}]'), "JSON object"),
    "unknown_tool": (format_tool_call("rm_rf", path="/"), "unknown tool"),
    "other_family_tool": (format_tool_call("cd", folder="docs"), "unknown tool"),
    "name_not_string": (_call('{"name": 1, "parameters": {}}'), "name"),
    "parameters_not_object": (_call('{"name": "get_zipcode", "parameters": ["x"]}'), "parameters"),
    "extra_top_level_key": (_call('{"name": "get_zipcode", "parameters": {"city": "x"}, "id": 1}'), "unexpected keys"),
    "missing_param": (format_tool_call("get_zipcode"), "missing"),
    "extra_param": (format_tool_call("get_zipcode", city="Oakdale", country="X"), "unknown parameter"),
    "int_for_str": (format_tool_call("get_zipcode", city=5), "string"),
    "null_for_str": (format_tool_call("get_zipcode", city=None), "string"),
    "list_for_str": (format_tool_call("get_zipcode", city=["Oakdale"]), "string"),
    "dict_for_str": (format_tool_call("get_zipcode", city={"a": 1}), "string"),
    "long_string": (format_tool_call("get_zipcode", city="x" * 300), "limit"),
    "huge_action": (format_tool_call("get_zipcode", city=HUGE), "limit"),
    "huge_plain_text": (HUGE, "limit"),
    "unknown_city": (format_tool_call("get_zipcode", city="Atlantis"), "unknown city"),
    "unicode_city": (format_tool_call("get_zipcode", city="\u202eOak\u0000dale\ud800"), "unknown city"),
    "two_calls": (format_tool_call("get_zipcode", city="a") + format_tool_call("get_zipcode", city="b"),
                  "2 tool calls"),
    "python_injection_param": (format_tool_call("get_zipcode", city="__import__('os').system('echo hi')"),
                               "unknown city"),
    "python_injection_name": (format_tool_call("__import__('os').system('echo hi')"), "unknown tool"),
    "python_injection_raw": (_call("__import__('os').system('echo hi')"), "not valid JSON"),
    "json_injection_in_value": (format_tool_call("get_zipcode", city='x"}, "name": "finish'), "unknown city"),
    "path_traversal_ticket": (format_tool_call("get_passport", passenger="../../etc/passwd"), "unknown passenger"),
    "prerequisite_skipped": (format_tool_call("buy_ticket", flight="FL10", passport="P10"), "requires"),
    "finish_wrong_type": (format_tool_call("finish", answer=12), "string"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_action_returns_error_and_env_continues(tasks, name, capfd):
    action, fragment = HOSTILE[name]
    t = _task(tasks, "travel", 6)
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
    t = _task(tasks, family)
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


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("depth", [5, 50, 500, 1000])
def test_deeply_nested_json_is_an_error_not_an_exception(tasks, kind, depth):
    nested = "[" * depth + "0" + "]" * depth if kind == "list" else '{"a":' * depth + "0" + "}" * depth
    t = _task(tasks, "files")
    env = make_env(t)
    env.reset()
    obs, done, _, _ = env.step(_call('{"name": "cat", "parameters": {"file": ' + nested + "}}"))
    assert obs.startswith("Error:") and done is False
    assert _replay(env, t) == (1.0, True)


# ---------------------------------------------------------------------------------------------------------------------
# fuzzing: env.step never raises


def _check_step_result(result) -> None:
    assert isinstance(result, tuple) and len(result) == 4
    obs, done, reward, info = result
    assert isinstance(obs, str) and isinstance(done, bool) and isinstance(reward, float) and isinstance(info, dict)
    if obs.startswith("Error:"):
        assert reward == 0.0


@pytest.fixture(scope="module")
def fuzz_envs(tasks):
    """One task per family and how far into its plan to advance before the fuzzed action."""
    return {f: _task(tasks, f, 6) for f in ALL}


def _fresh(fuzz_envs, family: str, advance: int):
    t = fuzz_envs[family]
    env = make_env(t)
    env.reset()
    for step in t.env_config["plan"][: min(advance, t.difficulty - 1)]:
        env.step(format_tool_call(step["name"], **step["params"]))
    return env


_names = sorted({n for f in FAMILIES.values() for n in f.graph} | {FINISH})
_params = sorted({p.name for f in FAMILIES.values() for n in f.graph for p in f.graph[n].params} | {"answer"})
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
_json = st.recursive(_json_leaf, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=5), c,
                                                                                              max_size=4)),
                     max_leaves=20)


@FUZZ
@given(text=st.text(max_size=300), family=st.sampled_from(ALL), advance=st.integers(0, 6))
def test_fuzz_step_arbitrary_text(fuzz_envs, text, family, advance):
    env = _fresh(fuzz_envs, family, advance)
    _check_step_result(env.step(text))
    _check_step_result(env.step(_call(text)))


@FUZZ
@given(
    name=st.one_of(st.sampled_from(_names), st.text(max_size=10), _json),
    params=st.one_of(st.dictionaries(st.sampled_from(_params), st.one_of(_json, st.sampled_from(
        ["Oakdale", "AC10", "notes.txt", "docs", "..", "SK10", "WH1", "TK10", "Q10", "RS10"])), max_size=3), _json),
    family=st.sampled_from(ALL),
    advance=st.integers(0, 6),
    prefix=st.text(alphabet=string.printable, max_size=10),
)
def test_fuzz_step_json_shaped_calls(fuzz_envs, name, params, family, advance, prefix):
    env = _fresh(fuzz_envs, family, advance)
    result = env.step(prefix + _call(json.dumps({"name": name, "parameters": params})))
    _check_step_result(result)
    if result[0].startswith("Error:"):
        assert result[1] is False
    _check_step_result(env.step(format_tool_call(FINISH, answer="x")))


def test_tasks_survive_the_parquet_row_round_trip(tasks):
    """prepare writes tasks as rows (env_config as JSON) and training reads them back: env and expert still work."""
    for t in tasks[:40]:
        back = Task.from_row(t.to_row())
        assert back == t
        assert _run_expert(back) == (1.0, back.difficulty)
