"""Tests for supo.envs.browsecomp: BrowseComp-Plus-format local files, the cached BM25 index, tools, reward, metrics.

The fixture (tests/fixtures/browsecomp/) is a 30-document corpus of fictional entities written for these tests, with
six 1–2-hop queries (with hard negatives) and TREC evidence qrels. No BrowseComp-Plus data is shipped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from supo.config import Config, ConfigError
from supo.envs import get_env_spec
from supo.envs import browsecomp as bc
from supo.envs.base import format_tool_call as call
from supo.envs.browsecomp_files import clear_index_cache, get_index, index_path, load_qrels
from supo.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "browsecomp"
QUERIES, CORPUS, QRELS = FIX / "queries.jsonl", FIX / "corpus.jsonl", FIX / "qrel_evidence.txt"

# A scripted searcher per query: the searches a careful agent would make, then finish with the answer.
PLANS = {
    "q1": ["botanist born in Velmora seed library", "Quenby Seed Library established"],
    "q2": ["Ostrel Nocturnes composer", "Tobias Renk played professionally"],
    "q3": ["Idra Falk 1902 voyage captained ship"],
    "q4": ["comet Parell discovered astronomer", "Vos Observatory city"],
    "q5": ["river flows through Kessridge", "river Amsel bridges"],
    "q6": ["copper lighthouse Velmora designed"],
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_index_cache()
    yield
    clear_index_cache()


def _cfg(tmp_path: Path, **files) -> Config:
    cfg = Config()
    cfg.files.browsecomp_queries = str(QUERIES)
    cfg.files.browsecomp_corpus = str(CORPUS)
    cfg.files.browsecomp_qrels = str(QRELS)
    cfg.files.index_dir = str(tmp_path / "bm25")
    cfg.files.test_fraction = 0.34
    for k, v in files.items():
        setattr(cfg.files, k, v)
    return cfg


def _all_tasks(tmp_path, **files):
    cfg = _cfg(tmp_path, **files)
    return bc.build_split(cfg, "train") + bc.build_split(cfg, "test")


def test_splits_from_config(tmp_path):
    cfg = _cfg(tmp_path)
    train, test = bc.build_split(cfg, "train"), bc.build_split(cfg, "test")
    assert len(train) == 4 and len(test) == 2 and not {t.id for t in train} & {t.id for t in test}
    assert bc.build_split(cfg, "test")[0].id == test[0].id  # seeded
    t = next(x for x in train + test if x.id == "q1")
    assert t.env == "browsecomp" and t.reference == "1958" and t.env_config["evidence"] == ["d01", "d02"]
    assert t.prompt[1]["content"].startswith("In what year") and "search(query: str)" in t.prompt[0]["content"]
    ids = tmp_path / "test_ids.txt"
    ids.write_text("# the paper's split\nq2\nq5\n")
    cfg.files.browsecomp_test_ids = str(ids)
    assert sorted(t.id for t in bc.build_split(cfg, "test")) == ["q2", "q5"]
    ids.write_text("q2\nq99\n")
    with pytest.raises(DataError, match=r"test_ids.txt: query_id\(s\) \['q99'\]"):
        bc.build_split(cfg, "test")
    assert get_env_spec("browsecomp") is bc.SPEC
    with pytest.raises(NotImplementedError):
        bc.make_expert(t, 0.0, 0)
    with pytest.raises(ConfigError, match="files.browsecomp_corpus"):
        bc.build_split(_cfg(tmp_path, browsecomp_corpus=""), "train")


def test_evidence_from_queries_when_no_qrels(tmp_path):
    tasks = _all_tasks(tmp_path, browsecomp_qrels="")
    assert {t.id: t.env_config["evidence"] for t in tasks}["q4"] == ["d09", "d10"]


def test_scripted_searches_solve_every_query_with_full_evidence_recall(tmp_path):
    tasks = _all_tasks(tmp_path)
    items, steps = [], []
    for t in tasks:
        env = bc.make_env(t)
        env.reset()
        for q in PLANS[t.id]:
            obs, done, reward, info = env.step(call("search", query=q))
            assert not done and obs.startswith("[d") and obs.count("[d") <= 5
        obs, done, reward, info = env.step(call("finish", answer=t.reference))
        steps.append(len(PLANS[t.id]) + 1)
        assert done and reward == 1.0
        assert info["evidence_recall"] == 1.0 and info["search_calls"] == len(PLANS[t.id])
        assert info["status"] == "completed" and info["tool_call_counts"] == {"search": len(PLANS[t.id]), "finish": 1}
        items.append((t, info["retrieved_docids"], info["search_calls"]))
        rec = bc.run_record(t, info, obs)
        assert rec["query_id"] == t.id and rec["status"] == "completed" and rec["retrieved_docids"]
    m = bc.retrieval_metrics(items)
    assert m["num_queries"] == 6 and m["evidence_recall"] == 1.0 and m["mean_search_calls"] == pytest.approx(10 / 6)
    assert sum(steps) / len(steps) == pytest.approx(16 / 6)


def test_partial_evidence_recall_and_wrong_answers(tmp_path):
    t = next(x for x in _all_tasks(tmp_path) if x.id == "q1")
    env = bc.make_env(t)
    env.reset()
    env.step(call("search", query="Quenby Seed Library established"))
    obs, done, reward, info = env.step(call("finish", answer="1964"))
    assert done and reward == 0.0 and not info["correct"]
    retrieved = info["retrieved_docids"]
    assert "d02" in retrieved
    assert info["evidence_recall"] == pytest.approx(len({"d01", "d02"} & set(retrieved)) / 2)
    assert bc.retrieval_metrics([(t, ["d02"])])["evidence_recall"] == 0.5
    assert bc.retrieval_metrics([(t, [])])["mean_search_calls"] is None
    assert bc.evidence_recall([], ["d1"]) is None


def test_answer_normalisation():
    assert bc.answer_matches("The Grey Heron.", "Grey Heron")
    assert bc.answer_matches("Explanation: see [d07]\nExact Answer: grey  heron\nConfidence: 90%", "Grey Heron")
    assert bc.answer_matches("Edda Marsh", "edda marsh")
    assert not bc.answer_matches("seven", "7")  # no LLM judge: paraphrases do not count
    assert not bc.answer_matches("", "")


def test_get_document_and_hostile_calls(tmp_path):
    t = _all_tasks(tmp_path)[0]
    env = bc.make_env(t)
    env.reset()
    obs, done, _, _ = env.step(call("get_document", docid="d13"))
    assert not done and obs.startswith("The copper lighthouse of Velmora was designed by the engineer Edda Marsh")
    for action in [
        call("get_document", docid="d999"),
        call("get_document", docid=13),
        call("search", query=""),
        call("search", query="x" * 300),
        call("search"),
        call("open_page", url="https://example.org"),
        "search for the botanist please",
        '<tool_call>{"name": "search", "parameters": {"query": "a"}, "extra": 1}</tool_call>',
        "<tool_call>{not json}</tool_call>",
    ]:
        obs, done, reward, _ = env.step(action)
        assert obs.startswith("Error:") and not done and reward == 0.0, (action, obs)
    obs, *_ = env.step(call("search", query="zzzqqq xyzzy"))
    assert obs == "No results found for this query."
    obs, *_ = env.step(call("search", query="the of and"))  # stopwords only
    assert obs == "No results found for this query."
    assert env.search_calls == 2


def test_search_only_profile_offers_no_get_document(tmp_path):
    t = _all_tasks(tmp_path, browsecomp_get_document=False)[0]
    assert "get_document" not in t.prompt[0]["content"]
    env = bc.make_env(t)
    env.reset()
    assert env.step(call("get_document", docid="d01"))[0].startswith("Error: unknown tool")


def test_snippets_are_cut_to_the_configured_words(tmp_path):
    t = next(x for x in _all_tasks(tmp_path, browsecomp_snippet_words=4, browsecomp_top_k=2) if x.id == "q6")
    env = bc.make_env(t)
    env.reset()
    obs, *_ = env.step(call("search", query="copper lighthouse Velmora designed"))
    first = obs.split("\n\n")
    assert len(first) == 2 and first[0] == "[d13] The copper lighthouse of ..."


def test_index_is_built_once_reused_and_rebuilt_when_the_corpus_changes(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(CORPUS, corpus)
    index_dir = tmp_path / "idx"
    first = get_index(corpus, index_dir)
    assert first.built and first.num_docs == 30
    assert get_index(corpus, index_dir) is first  # same process: the loaded index is shared by every env
    built_files = {p.name for p in index_path(corpus, index_dir).iterdir()}
    assert {"meta.json", "docs.sqlite", "bm25"} <= built_files
    mtime = (index_path(corpus, index_dir) / "meta.json").stat().st_mtime_ns

    clear_index_cache()  # as a fresh worker process would
    second = get_index(corpus, index_dir)
    assert not second.built and second.seconds < first.seconds
    assert (index_path(corpus, index_dir) / "meta.json").stat().st_mtime_ns == mtime  # not rewritten
    assert second.search("copper lighthouse Velmora", 1)[0][0] == "d13"

    with open(corpus, "a") as f:
        f.write(json.dumps({"docid": "d31", "text": "The zeppelin Aurelia was moored at Velmora.", "url": ""}) + "\n")
    third = get_index(corpus, index_dir)  # the size/mtime changed: rebuilt in place
    assert third.built and third.num_docs == 31 and third.search("zeppelin Aurelia", 1)[0][0] == "d31"
    assert sorted(p.name for p in index_dir.iterdir() if not p.name.endswith(".lock")) == [
        index_path(corpus, index_dir).name]


def test_parquet_corpus_and_queries(tmp_path):
    import pandas as pd

    rows = [json.loads(x) for x in CORPUS.read_text().splitlines()]
    pd.DataFrame(rows).to_parquet(tmp_path / "corpus.parquet", index=False)
    qrows = [json.loads(x) for x in QUERIES.read_text().splitlines()]
    pd.DataFrame(qrows).to_parquet(tmp_path / "queries.parquet", index=False)
    tasks = _all_tasks(tmp_path, browsecomp_corpus=str(tmp_path / "corpus.parquet"),
                       browsecomp_queries=str(tmp_path / "queries.parquet"), browsecomp_qrels="")
    assert len(tasks) == 6 and {t.id: t.env_config["evidence"] for t in tasks}["q1"] == ["d01", "d02"]
    env = bc.make_env(tasks[0])
    env.reset()
    assert env.step(call("get_document", docid="d30"))[0].startswith("Dunmore is an inland town")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _queries(mutate) -> list[dict]:
    rows = [json.loads(x) for x in QUERIES.read_text().splitlines()]
    mutate(rows)
    return rows


@pytest.mark.parametrize("mutate,match", [
    (lambda r: r[2].pop("answer"), r"row 2 \(query_id q3\), field answer"),
    (lambda r: r[2].update(query="  "), r"row 2 \(query_id q3\), field query"),
    (lambda r: r[2].update(query_id=None), r"row 2, field query_id"),
    (lambda r: r[2].update(query_id="q1"), r"row 2, field query_id: duplicate"),
    (lambda r: r[2].update(evidence_docs="d07"), r"row 2, field evidence_docs"),
    (lambda r: r[2].update(evidence_docs=[{"url": "x"}]), r"row 2, field evidence_docs\[0\]"),
])
def test_malformed_queries_name_the_row(tmp_path, mutate, match):
    path = _write_jsonl(tmp_path / "queries.jsonl", _queries(mutate))
    with pytest.raises(DataError, match=match):
        bc.build_split(_cfg(tmp_path, browsecomp_queries=str(path)), "train")


def test_malformed_corpus_qrels_and_missing_files(tmp_path):
    rows = [json.loads(x) for x in CORPUS.read_text().splitlines()]
    dup = _write_jsonl(tmp_path / "dup.jsonl", rows + [rows[3]])
    with pytest.raises(DataError, match=r"dup.jsonl, row 30, field docid: duplicate docid 'd04'"):
        get_index(dup, tmp_path / "idx")
    notext = _write_jsonl(tmp_path / "notext.jsonl", rows[:5] + [{"docid": "x1", "url": "u"}])
    with pytest.raises(DataError, match=r"notext.jsonl, row 5 \(docid x1\), field text"):
        get_index(notext, tmp_path / "idx")
    badline = tmp_path / "badline.jsonl"
    badline.write_text(CORPUS.read_text() + "{oops\n")
    with pytest.raises(DataError, match="badline.jsonl, line 31: not valid JSON"):
        get_index(badline, tmp_path / "idx")
    assert not any(p.name.startswith(".") for p in (tmp_path / "idx").iterdir())  # no half-built index left

    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 Q0 d01 1\nq1 d02 1\n")
    with pytest.raises(DataError, match=r"qrels.txt, line 2: expected 'qid Q0 docid rel'"):
        load_qrels(qrels)
    qrels.write_text("q1 Q0 d01 yes\n")
    with pytest.raises(DataError, match=r"line 1: relevance 'yes'"):
        load_qrels(qrels)
    qrels.write_text("q1 Q0 nope1 1\nq2 Q0 nope2 1\nq3 Q0 d07 1\n")
    with pytest.raises(DataError, match="2 of 3 evidence docids are not in the corpus"):
        bc.build_split(_cfg(tmp_path, browsecomp_qrels=str(qrels)), "train")

    for field in ("browsecomp_queries", "browsecomp_corpus", "browsecomp_qrels"):
        with pytest.raises(DataError, match="does not exist"):
            bc.build_split(_cfg(tmp_path, **{field: str(tmp_path / "missing.jsonl")}), "train")


def test_env_config_round_trips_through_a_task_row(tmp_path):
    from supo.types import Task

    t = _all_tasks(tmp_path)[0]
    t2 = Task.from_row(t.to_row())
    env = bc.make_env(t2)
    env.reset()
    assert env.step(call("search", query="Velmora"))[0].startswith("[d")
    assert os.path.isabs(t2.env_config["corpus"]) == os.path.isabs(str(CORPUS))
