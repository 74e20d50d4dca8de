"""Tool-call formats (supo.envs.tool_parsers): each format parses its own calls strictly, renders what it parses,
hands environments supo's canonical call, rewrites the prompts' format example, and counts outputs that never try
the format as format misses — in the loop, not as a crash."""

from __future__ import annotations

import pytest

from supo.config import ConfigError, load_config
from supo.contracts import GenResult
from supo.envs.array import ArrayExpert, make_env, make_tasks
from supo.envs.base import ToolCall, ToolCallError, format_tool_call, parse_tool_call
from supo.envs.tool_parsers import CANONICAL_EXAMPLE, DEFAULT_TOOL_PARSER, TOOL_PARSERS, canonical_text, get_tool_parser
from supo.metrics import rollout_metrics
from supo.rollout.agent_loop import LoopSettings, run_rollouts
from supo.rollout.expert_policy import ExpertPolicy
from supo.rollout.templates import Templates

CALLS = [ToolCall("Observe", {}), ToolCall("Add", {"i": 3, "acc": 57}), ToolCall("finish", {"answer": "TK12"}),
         ToolCall("send", {"name": "x", "note": 'quote " and </tool_call> inside'})]


@pytest.mark.parametrize("fmt", sorted(TOOL_PARSERS))
@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.name)
def test_every_format_parses_what_it_renders(fmt, call):
    p = get_tool_parser(fmt)
    text = p.render(call)
    assert p.parse(text) == call  # a "</tool_call>" inside a value is written "<\/tool_call>" and cannot close a tag
    assert p.parse("Sure. " + text + " Done.") == call  # prose around one call is allowed
    action = p.read(text)
    assert action.error is None and not action.format_miss
    assert parse_tool_call(action.env_text) == call  # the environment gets supo's own format


def test_the_formats_are_the_documented_ones():
    expected = {
        "tags": '<tool_call>{"name": "Add", "parameters": {"i": 3, "acc": 57}}</tool_call>',
        "hermes": '<tool_call>{"name": "Add", "arguments": {"i": 3, "acc": 57}}</tool_call>',
        "json": '{"name": "Add", "parameters": {"i": 3, "acc": 57}}',
        "tags-list": '<tool_call>[{"name": "Add", "arguments": {"i": 3, "acc": 57}}]</tool_call>',
    }
    assert {k: TOOL_PARSERS[k].render(CALLS[1]) for k in expected} == expected
    assert DEFAULT_TOOL_PARSER == "tags"
    assert TOOL_PARSERS["tags"].render(CALLS[1]) == format_tool_call("Add", i=3, acc=57)


def test_the_default_format_hands_the_raw_text_to_the_environment():
    text = "I call " + format_tool_call("Observe") + " now"
    assert TOOL_PARSERS["tags"].read(text).env_text == text  # byte-identical: envs parse supo's format themselves
    assert TOOL_PARSERS["tags"].from_canonical(text) == text


@pytest.mark.parametrize("fmt,text,why", [
    ("json", '{"name": "Add", "parameters": {"i": 1}} {"name": "Add", "parameters": {"i": 2}}', "2 tool calls"),
    ("json", '{"name": "Add", "parameters": {"i": 1}', "not valid JSON"),
    ("json", '{"name": "Add", "parameters": {"i": 1}, "extra": 1}', "unexpected keys"),
    ("json", '{"name": "Add", "parameters": {}, "arguments": {}}', "both"),
    ("json", '{"name": 3, "parameters": {}}', "string 'name'"),
    ("hermes", '<tool_call>{"name": "Add", "arguments": [1]}</tool_call>', "'arguments' must be a JSON object"),
    ("hermes", '<tool_call>{"name": "A"}</tool_call><tool_call>{"name": "B"}</tool_call>', "2 tool calls"),
    ("tags-list", '<tool_call>{"name": "Add", "arguments": {}}</tool_call>', "JSON list"),
    ("tags-list", '<tool_call>[{"name": "A"}, {"name": "B"}]</tool_call>', "holds 2 calls"),
    ("tags-list", '<tool_call>[]</tool_call>', "holds 0 calls"),
    ("tags-list", '<tool_call>[{"name": "A", "arguments": {"a": {"b": {"c": {"d": 1}}}}}]</tool_call>', "deeper"),
    ("tags-list", "<tool_call>[" + "x" * 5000 + "]</tool_call>", "limit"),
    ("tags", '<tool_call>{"name": "Add", "arguments": {}}</tool_call>', "unexpected keys"),
])
def test_malformed_calls_are_errors_naming_the_problem(fmt, text, why):
    p = get_tool_parser(fmt)
    with pytest.raises(ToolCallError, match=why):
        p.parse(text)
    if fmt != "tags":
        action = p.read(text)
        assert action.env_text is None and why.split()[0] in action.error and not action.format_miss


@pytest.mark.parametrize("fmt,text,miss", [
    ("tags", "The answer is 9.", True), ("tags", "<tool_call>{oops", False),
    ("json", "The answer is 9.", True), ("json", "{oops", False),
    ("tags-list", '{"name": "Add", "arguments": {}}', True), ("hermes", "<tool_call>[]</tool_call>", False),
])
def test_an_output_that_never_tries_the_format_is_a_format_miss(fmt, text, miss):
    assert get_tool_parser(fmt).read(text).format_miss is miss


def test_experts_calls_are_rewritten_in_the_format():
    for fmt, p in TOOL_PARSERS.items():
        text = p.from_canonical(format_tool_call("Add", i=1, acc=2))
        assert p.parse(text) == ToolCall("Add", {"i": 1, "acc": 2})
        assert p.from_canonical("no call here") == "no call here"
    assert canonical_text(ToolCall("f", {"name": "n"})) == '<tool_call>{"name": "f", "parameters": {"name": "n"}}</tool_call>'


def test_prompts_show_the_formats_example():
    task = make_tasks("train", 1, 4, 4, ["sum"], 99, seed=0)[0]
    assert any(CANONICAL_EXAMPLE in m["content"] for m in task.prompt), "the env prompt carries supo's example"
    assert TOOL_PARSERS["tags"].rewrite_prompt(task.prompt) is task.prompt
    for fmt in ("json", "tags-list", "hermes"):
        msgs = TOOL_PARSERS[fmt].rewrite_prompt(task.prompt)
        text = "\n".join(m["content"] for m in msgs)
        assert TOOL_PARSERS[fmt].example in text and CANONICAL_EXAMPLE not in text
        assert [m["role"] for m in msgs] == [m["role"] for m in task.prompt]
        assert task.prompt[0]["content"].count(CANONICAL_EXAMPLE) == 1  # the task itself is left as it was


def test_config_names_an_unknown_format():
    assert load_config(None).model.tool_parser == "tags"
    assert load_config(None, {"model.tool_parser": "tags-list"}).model.tool_parser == "tags-list"
    with pytest.raises(ConfigError, match=r"model\.tool_parser: unknown tool-call format 'xml'"):
        load_config(None, {"model.tool_parser": "xml"})
    with pytest.raises(ValueError, match="unknown tool parser"):
        Templates.build(None, "v", "c", tool_parser="xml")


# ---------------------------------------------------------------------------------------------------------------------
# through the agent loop, on the tiny tokenizer


def _settings():
    return LoopSettings(trigger=400, max_summaries=2, max_steps=6, max_turn_tokens=48, max_summary_tokens=24,
                        max_obs_tokens=24, engine_max_len=1000)


class Plain:
    """A policy that never writes a tool call (a model whose output never matches the format)."""

    def __init__(self, tok, eos):
        self.ids = tok.encode("The answer is 42.", add_special_tokens=False) + [eos]

    def generate(self, requests):
        return [GenResult(list(self.ids), [-0.5] * len(self.ids)) for _ in requests]

    def on_step(self, key, action, observation):
        pass

    def on_drop(self, key):
        pass


@pytest.mark.parametrize("fmt", sorted(TOOL_PARSERS))
def test_the_expert_solves_tasks_in_every_format(fmt, tiny_tokenizer):
    cfg = load_config(None, {"model.tool_parser": fmt})
    t = Templates.from_config(tiny_tokenizer, cfg)
    tasks = make_tasks("train", 6, 4, 8, ["sum"], 99, seed=1)
    experts = {k: ArrayExpert(task, error_rate=0.0, seed=k) for k, task in enumerate(tasks)}
    policy = ExpertPolicy(tiny_tokenizer, experts, t.eos_id, tool_parser=fmt)
    items = [(task, f"g{k}", 0) for k, task in enumerate(tasks)]
    long = LoopSettings(trigger=900, max_summaries=0, max_steps=40, max_turn_tokens=64, max_summary_tokens=24,
                        max_obs_tokens=24, engine_max_len=2000)
    rollouts = run_rollouts(items, policy, tiny_tokenizer, t, long, make_env, keep_transcript=True)
    assert all(r.finished and r.reward == 1.0 for r in rollouts)
    assert all(r.tool_format_misses == 0 and r.error_observations == 0 for r in rollouts)
    first_action = rollouts[0].transcript[0].split("\n")[0]
    assert TOOL_PARSERS[fmt].render(ToolCall("Observe", {})) in first_action  # the model's format was sampled
    prompt = tiny_tokenizer.decode(rollouts[0].segments[0].prompt_ids)
    assert TOOL_PARSERS[fmt].example in prompt


@pytest.mark.parametrize("fmt", ["tags", "json", "tags-list"])
def test_output_that_never_matches_the_format_is_counted_not_a_crash(fmt, tiny_tokenizer):
    cfg = load_config(None, {"model.tool_parser": fmt})
    t = Templates.from_config(tiny_tokenizer, cfg)
    tasks = make_tasks("train", 3, 4, 8, ["sum"], 99, seed=2)
    items = [(task, "g", k) for k, task in enumerate(tasks)]
    rollouts = run_rollouts(items, Plain(tiny_tokenizer, t.eos_id), tiny_tokenizer, t, _settings(), make_env)
    assert all(r.overlong and r.overlong_reason == "max_steps" and r.tool_calls == 6 for r in rollouts)
    assert all(r.tool_format_misses == 6 and r.error_observations == 6 for r in rollouts)
    m = rollout_metrics(rollouts, working_context=400, max_summaries=2)
    assert m["tool_call_format_miss_rate"] == 1.0 and m["error_observation_rate"] == 1.0
    assert m["success_rate"] == 0.0


def test_a_malformed_call_in_another_format_is_an_error_observation_without_an_env_step(tiny_tokenizer):
    cfg = load_config(None, {"model.tool_parser": "json"})
    t = Templates.from_config(tiny_tokenizer, cfg)
    task = make_tasks("train", 1, 4, 4, ["sum"], 99, seed=3)[0]
    bad = tiny_tokenizer.encode('{"name": "Observe", "parameters": [1]}', add_special_tokens=False) + [t.eos_id]
    stepped = []

    class Env:
        def __init__(self, task):
            self.env = make_env(task)

        def reset(self):
            return self.env.reset()

        def step(self, action_text):
            stepped.append(action_text)
            return self.env.step(action_text)

    class Bad(Plain):
        def generate(self, requests):
            return [GenResult(list(bad), [-0.5] * len(bad)) for _ in requests]

    env_of = Env
    rollouts = run_rollouts([(task, "g", 0)], Bad(tiny_tokenizer, t.eos_id), tiny_tokenizer, t, _settings(), env_of,
                            keep_transcript=True)
    r = rollouts[0]
    assert stepped == [] and r.error_observations == 6 and r.tool_format_misses == 0
    assert "'parameters' must be a JSON object" in r.transcript[0]
