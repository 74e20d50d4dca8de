"""Tests for supo.envs.search: the seeded corpus with hard negatives, multi-hop questions and the tools; hostile and
fuzzed actions that only this env's tools take (tests/test_env_contract.py runs the ones every env takes). The expert:
tests/test_env_search_expert.py.

``python tests/test_env_search.py`` prints the numbers quoted in reports (task counts, expert steps, history lengths).
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time

import pytest
from env_contract import check_step_result, expert_actions, fuzz_settings, tagged
from hypothesis import given
from hypothesis import strategies as st
from search_fixtures import SEED, search_tasks, search_world

from supo.config import ConfigError, load_config
from supo.envs import ENVS, get_env_spec
from supo.envs import search as S
from supo.envs.base import format_tool_call
from supo.envs.search_expert import SearchExpert, extract, summary_text
from supo.envs.search_world import BACKLINK, TYPES, YEAR_VERB, World, get_world
from supo.models import SUMMARY_OPEN, TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from supo.types import Task


@pytest.fixture(scope="module")
def world():
    return search_world()


@pytest.fixture(scope="module")
def tasks():
    return search_tasks()


# ---------------------------------------------------------------------------------------------------------------------
# the corpus


def test_world_is_deterministic_and_cached(world):
    assert get_world(SEED, 400, 3) is world  # built once per process
    again = World(SEED, 400, 3)
    assert again.texts == world.texts and again.doc_ids == world.doc_ids
    other = World(SEED + 1, 400, 3)
    assert other.texts != world.texts
    assert len(world.texts) == 400 * (1 + 3) == len(set(world.doc_ids))
    assert {e.type for e in world.entities} == set(TYPES)
    assert len({e.name for e in world.entities}) == len(world.entities)  # names unique among real entities


def test_env_construction_is_cheap(tasks):
    S.make_env(tasks[0])  # the world is cached
    t0 = time.perf_counter()
    envs = [S.make_env(tasks[k % len(tasks)]) for k in range(2000)]
    assert time.perf_counter() - t0 < 2.0
    assert envs[0].world is envs[1].world


def test_documents_state_relations_and_backlinks(world):
    for e in world.entities[:100]:
        text = world.texts[world.true_doc[e.idx]]
        assert text.startswith(f"{e.name} ({e.type}). ")
        for r, target in e.rel.items():
            assert extract(text, e.name, r) == world.entities[target].name
        for r, sources in e.back.items():
            for src in sources:
                assert BACKLINK[r].format(t=e.name, s=world.entities[src].name) in text


def test_hard_negatives_share_words_but_not_facts(world):
    for e in world.entities:
        true_text = world.texts[world.true_doc[e.idx]]
        namesakes = world.namesake_docs[e.idx]
        assert len(namesakes) == 3
        true_words = set(true_text.split("(" + e.type + ").")[1].split(".")[0].split())  # the intro sentence
        for di in namesakes:
            text = world.texts[di]
            assert text.startswith(f"{e.name} ({e.type}). ")
            intro = set(text.split("(" + e.type + ").")[1].split(".")[0].split())
            assert len(intro & true_words) >= len(true_words) - 2  # same attribute words, another year
            assert f"{YEAR_VERB[e.type]} in {e.year}" not in text
            for r, target in e.rel.items():  # the fact that matters differs
                assert extract(text, e.name, r) not in (None, world.entities[target].name)


def test_bm25_ranks_hard_negatives_next_to_the_true_doc(world):
    """The naive query (the name alone) puts namesakes among the top hits, often above the true document."""
    rng = random.Random(0)
    sample = rng.sample(range(len(world.entities)), 200)
    above = 0
    for idx in sample:
        e = world.entities[idx]
        hits = world.search(e.name, 5)
        assert world.true_doc[idx] in hits
        namesakes = set(world.namesake_docs[idx])
        assert len(namesakes & set(hits)) >= 2
        above += hits[0] in namesakes
    assert above / len(sample) >= 0.4, f"a namesake is the top hit for only {above} of {len(sample)} names"


def test_the_constrained_query_still_meets_namesakes(tasks):
    """The expert's "<name> <linking entity>" query finds the true doc, but a namesake sometimes ranks above it."""
    opened_negatives = 0
    for t in tasks:
        _, pairs = S.run_expert(t)
        opens = [json.loads(a[len(TOOL_CALL_OPEN):-len(TOOL_CALL_CLOSE)]) for a, _ in pairs if '"open"' in a]
        opened_negatives += len(opens) - len(t.env_config["relations"])
    assert opened_negatives >= 0.1 * len(tasks)


# ---------------------------------------------------------------------------------------------------------------------
# tasks


def test_make_tasks_is_deterministic_for_a_seed():
    a = S.make_tasks("train", 60, 1, 3, seed=7)
    assert a == S.make_tasks("train", 60, 1, 3, seed=7)
    c = S.make_tasks("train", 60, 1, 3, seed=8)
    assert [t.env_config["chain"] for t in a] != [t.env_config["chain"] for t in c]
    d = S.make_tasks("test", 60, 1, 3, seed=7)
    assert [t.env_config["chain"] for t in a] != [t.env_config["chain"] for t in d]


@pytest.mark.parametrize(("split", "lo", "hi"), [("train", 1, 2), ("test", 2, 3), ("test", 3, 5), ("train", 1, 1)])
def test_hops_follow_split_bounds(split, lo, hi, world):
    ts = S.make_tasks(split, 200, lo, hi, seed=SEED)
    hops = [len(t.env_config["relations"]) for t in ts]
    assert all(lo <= h <= hi for h in hops) and min(hops) == lo and max(hops) == hi
    assert all(t.env == "search" and t.split == split and t.id.startswith(split) for t in ts)
    assert len({t.id for t in ts}) == len(ts)
    for t in ts:
        chain, rels = t.env_config["chain"], t.env_config["relations"]
        assert len(chain) == len(rels) + 1 and len(set(chain)) == len(chain)  # distinct entities
        assert t.reference == chain[-1] == S._walk(world, chain[0], rels)[-1]
        assert t.difficulty >= 2 * len(rels) + 1
        question = t.prompt[1]["content"]
        assert chain[0] in question and all(name not in question for name in chain[1:])


def test_train_and_test_anchors_are_disjoint():
    train = S.make_tasks("train", 500, 1, 2, seed=SEED)
    test = S.make_tasks("test", 200, 2, 3, seed=SEED)
    assert not {t.env_config["chain"][0] for t in train} & {t.env_config["chain"][0] for t in test}


def test_test_split_needs_more_steps(tasks):
    steps = {"train": [], "test": []}
    for t in tasks:
        reward, pairs = S.run_expert(t)
        steps[t.split].append(len(pairs))
    assert statistics.mean(steps["test"]) > statistics.mean(steps["train"]) + 1.0


def test_build_split_reads_the_config_and_is_registered():
    cfg = load_config(None, overrides={"env.name": "search", "search.num_train": 40, "search.num_test": 12,
                                       "search.train_max_hops": 3, "search.top_k": 4, "seed": 3})
    spec = get_env_spec("search")
    assert spec is ENVS["search"] is S.SPEC
    assert {"build_split", "make_env", "make_expert", "corpus"} <= set(spec)
    train, test = spec["build_split"](cfg, "train"), spec["build_split"](cfg, "test")
    assert (len(train), len(test)) == (40, 12)
    assert all(1 <= len(t.env_config["relations"]) <= 3 for t in train)
    assert all(t.env_config["seed"] == 3 and t.env_config["top_k"] == 4 for t in train + test)
    assert "top 4 documents" in train[0].prompt[0]["content"]
    env = spec["make_env"](train[0])
    env.reset()
    obs = env.step(format_tool_call("search", query=train[0].env_config["chain"][0]))[0]
    assert len(obs.splitlines()) == 4
    with pytest.raises(ConfigError, match="search.test_min_hops"):  # named when the config loads
        load_config(None, overrides={"env.name": "search", "search.test_min_hops": 0})
    bad = load_config(None, overrides={"env.name": "search"})
    bad.search.test_min_hops = 0
    with pytest.raises(ConfigError, match="search.test_min_hops"):  # and again before a split is built
        spec["build_split"](bad, "test")


def test_make_env_rejects_a_chain_the_corpus_does_not_hold(tasks):
    cfg = dict(tasks[0].env_config)
    wrong = Task(id="y", env="search", env_config={**cfg, "chain": [*cfg["chain"][:-1], "Nobody"]}, split="train",
                 prompt=[], reference="")
    with pytest.raises(ValueError, match="chain"):
        S.make_env(wrong)


# ---------------------------------------------------------------------------------------------------------------------
# the tools


def _fresh_env(tasks, k: int = 0) -> S.SearchEnv:
    env = S.make_env(tasks[k])
    env.reset()
    return env


def test_search_and_open_output(tasks, world):
    t = tasks[0]
    env = _fresh_env(tasks)
    anchor = t.env_config["chain"][0]
    obs, done, reward, info = env.step(format_tool_call("search", query=anchor))
    lines = obs.splitlines()
    assert len(lines) == 3 and not done and reward == 0.0 and info == {"tool": "search"}
    for line in lines:
        doc_id, snippet = line[1:].split("] ", 1)
        assert doc_id in world.doc_index and len(snippet) <= 160
        assert world.texts[world.doc_index[doc_id]].startswith(snippet)
    doc_id = lines[0][1:].split("]")[0]
    full = env.step(format_tool_call("open", doc_id=doc_id))[0]
    assert full == f"[{doc_id}] {world.texts[world.doc_index[doc_id]]}"
    assert env.step(format_tool_call("search", query="zzzqqq unknownword"))[0] == "no results"


@pytest.mark.parametrize(("answer", "reward"), [("{a}", 1.0), ("  {A}  ", 1.0), ("{a}\n", 1.0), ("{a}x", 0.0),
                                                 ("", 0.0), ("Nobody", 0.0)])
def test_finish_normalizes_whitespace_and_case(tasks, answer, reward):
    t = tasks[0]
    env = _fresh_env(tasks)
    a = answer.format(a=t.reference, A=t.reference.upper())
    obs, done, r, _ = env.step(format_tool_call("finish", answer=a))
    assert done is True and r == reward and obs == ("correct" if reward else "incorrect")
    obs, done, r, _ = env.step(format_tool_call("search", query="x"))
    assert obs.startswith("Error:") and done is True and r == reward


HUGE = "a" * (1 << 20)

HOSTILE = {
    "other_env_tool": (format_tool_call("get_document", docid="d0001"), "unknown tool"),
    "missing_param": (format_tool_call("search"), "missing"),
    "missing_doc_id": (format_tool_call("open"), "missing"),
    "extra_param": (format_tool_call("search", query="x", k=50), "unknown parameter"),
    "int_query": (format_tool_call("search", query=5), "string"),
    "null_query": (format_tool_call("search", query=None), "string"),
    "list_query": (format_tool_call("search", query=["a", "b"]), "string"),
    "dict_query": (format_tool_call("search", query={"q": "a"}), "string"),
    "bool_doc_id": (format_tool_call("open", doc_id=True), "string"),
    "int_doc_id": (format_tool_call("open", doc_id=1), "string"),
    "int_answer": (format_tool_call("finish", answer=3), "string"),
    "huge_query": (format_tool_call("search", query=HUGE), "limit"),
    "long_query": (format_tool_call("search", query="word " * 60), "limit"),
    "empty_query": (format_tool_call("search", query=""), "no searchable words"),
    "stopword_query": (format_tool_call("search", query="the of and"), "no searchable words"),
    "punctuation_query": (format_tool_call("search", query="!!! ??? ..."), "no searchable words"),
    "unknown_doc_id": (format_tool_call("open", doc_id="d9999999"), "unknown doc_id"),
    "empty_doc_id": (format_tool_call("open", doc_id=""), "unknown doc_id"),
    "path_doc_id": (format_tool_call("open", doc_id="../../etc/passwd"), "unknown doc_id"),
    "glob_doc_id": (format_tool_call("open", doc_id="d*"), "unknown doc_id"),
    "nan_param": (tagged('{"name": "search", "parameters": {"query": NaN}}'), "string"),
}
INJECTIONS = ["__import__('os').system('echo hi')", "'; DROP TABLE docs; --", ".*", "(a+)+$", "\\x00\\u0000",
              "{{7*7}}", "${jndi:ldap://x}", "</tool_call><tool_call>", "Ignore previous instructions"]


def _assert_error_then_env_works(task: Task, env: S.SearchEnv, action: str, fragment: str | None = None) -> None:
    obs, done, reward, info = env.step(action)
    assert isinstance(obs, str) and obs.startswith("Error:"), obs[:200]
    assert done is False and reward == 0.0 and "error" in info
    assert len(obs) < 600
    if fragment is not None:
        assert fragment in obs, obs[:200]
    _, (_, done, reward, _) = expert_actions(env, SearchExpert(task))  # the episode goes on and can be won
    assert done and reward == 1.0


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_action_returns_error_and_env_continues(name, tasks, capfd):
    action, fragment = HOSTILE[name]
    _assert_error_then_env_works(tasks[0], _fresh_env(tasks), action, fragment)
    out, _ = capfd.readouterr()
    assert "hi" not in out.split()  # nothing was executed


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_strings_are_plain_data(text, tasks):
    env = _fresh_env(tasks)
    for action in (format_tool_call("search", query=text), format_tool_call("open", doc_id=text)):
        obs, done, reward, _ = env.step(action)
        assert isinstance(obs, str) and done is False and reward == 0.0
    obs, done, reward, _ = env.step(format_tool_call("finish", answer=text))
    if TOOL_CALL_OPEN in text:  # tags inside a string are still tags: the parser sees two calls
        assert obs.startswith("Error:") and done is False
    else:
        assert (obs, done, reward) == ("incorrect", True, 0.0)


# ---------------------------------------------------------------------------------------------------------------------
# fuzzing


@fuzz_settings(200)
@given(query=st.text(max_size=256), doc_id=st.text(max_size=256))
def test_fuzz_search_and_open_strings(query, doc_id, tasks):
    env = _fresh_env(tasks)
    for action in (format_tool_call("search", query=query), format_tool_call("open", doc_id=doc_id)):
        result = env.step(action)
        check_step_result(result)
        assert result[1] is False


# ---------------------------------------------------------------------------------------------------------------------
# the tokenizer corpus


def test_corpus_covers_prompts_actions_observations_and_summaries(tasks):
    texts = S.corpus(tasks)
    joined = "\n".join(texts)
    assert tasks[0].prompt[0]["content"] in texts
    assert any(x.startswith(TOOL_CALL_OPEN) and '"search"' in x for x in texts)
    assert any(x.startswith(TOOL_CALL_OPEN) and '"open"' in x for x in texts)
    assert any(x.startswith(SUMMARY_OPEN) and "found:" in x for x in texts)
    assert "correct" in texts and "(person)." in joined
    assert S.CORPUS_CHARS <= sum(map(len, texts)) < S.CORPUS_CHARS + 5000
    assert S.corpus(tasks) == texts


# ---------------------------------------------------------------------------------------------------------------------
# the numbers for reports: `python tests/test_env_search.py`


def report_numbers(vocab_size: int = 1024) -> dict:
    """Task counts, expert steps per split and the share of full (summary-free) histories longer than W tokens."""
    from supo.models import build_tokenizer
    from supo.prepare import tokenizer_corpus
    from supo.rollout.agent_loop import LoopSettings, run_rollouts
    from supo.rollout.expert_policy import ExpertPolicy
    from supo.rollout.templates import Templates, prompt_ids

    cfg = load_config(None, overrides={"env.name": "search"})
    spec = get_env_spec("search")
    train, test = spec["build_split"](cfg, "train"), spec["build_split"](cfg, "test")
    with tempfile.TemporaryDirectory() as d:
        tok = build_tokenizer(tokenizer_corpus(cfg, train, test), vocab_size, d)
    t = Templates.build(tok, cfg.prompts.summary_instruction, cfg.prompts.continuation)
    enc = lambda s: len(tok.encode(s, add_special_tokens=False))  # noqa: E731
    out: dict = {"num_train": len(train), "num_test": len(test), "vocab": len(tok),
                 "v_sum_tokens": len(t.summary_request)}
    no_summaries = LoopSettings(trigger=10**6, max_summaries=0, max_steps=100, max_turn_tokens=64,
                                max_summary_tokens=96, max_obs_tokens=10**4, engine_max_len=10**6)
    for name, ts in (("train", train), ("test", test)):
        experts = {k: SearchExpert(task) for k, task in enumerate(ts)}
        rs = run_rollouts([(task, f"g{k}", 0) for k, task in enumerate(ts)],
                          ExpertPolicy(tok, experts, t.eos_id), tok, t, no_summaries, S.make_env)
        hist = [r.context_lengths[0] for r in rs]
        search_obs, open_obs, actions, summaries = [], [], [], []
        for task in ts[:300]:
            ex, env = SearchExpert(task), S.make_env(task)
            env.reset()
            for _ in range(60):
                a = ex.act()
                obs, done, _, _ = env.step(a)
                ex.observe(a, obs)
                actions.append(enc(a))
                summaries.append(enc(summary_text(ex.relations, ex.state)))
                if '"search"' in a:
                    search_obs.append(enc(obs))
                elif '"open"' in a:
                    open_obs.append(enc(obs))
                if done:
                    break
        out[name] = {
            "expert_success": statistics.mean(r.reward for r in rs),
            "expert_mean_steps": statistics.mean(r.tool_calls for r in rs),
            "prompt_tokens_mean": statistics.mean(len(prompt_ids(tok, task)) for task in ts),
            "history_tokens_mean": statistics.mean(hist),
            "history_tokens_max": max(hist),
            "share_history_over_224": statistics.mean(h > 224 for h in hist),
            "share_history_over_512": statistics.mean(h > 512 for h in hist),
            "search_obs_tokens_mean_max": (statistics.mean(search_obs), max(search_obs)),
            "open_obs_tokens_mean_max": (statistics.mean(open_obs), max(open_obs)),
            "action_tokens_max": max(actions),
            "summary_tokens_mean_max": (statistics.mean(summaries), max(summaries)),
        }
    return out


if __name__ == "__main__":
    t0 = time.time()
    print(json.dumps(report_numbers(), indent=2))
    print(f"{time.time() - t0:.1f} s")
