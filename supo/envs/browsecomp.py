"""BrowseComp-Plus from local files (docs/design.md §5, file-backed; formats in research/benchmarks.md §2).

Inputs (decrypted by the user; never fetched, never committed):

* queries — JSONL or parquet rows ``{query_id, query, answer, evidence_docs: [{docid, ...}] | [docid], gold_docs}``;
* corpus — JSONL or parquet rows ``{docid, text, url}`` (``url`` optional);
* qrels — TREC ``qid Q0 docid rel`` lines (``rel > 0`` = evidence); when not given, the queries' ``evidence_docs``.

The readers and the BM25 index are in :mod:`supo.envs.browsecomp_files`. The BM25 index (``bm25s``) is built once
per corpus and cached under ``files.index_dir/<corpus stem>-<hash of its path>/``: bm25s's own ``save``/``load`` files,
a SQLite document store (``docs.sqlite``: snippets and ``get_document`` without holding the corpus in memory) and
``meta.json`` with the corpus file's size and mtime.
A changed corpus file (size or mtime) is re-indexed; a file lock keeps concurrent workers from building twice, and the
loaded index is kept per process, so each rollout's :func:`make_env` costs a ``stat``.

Tools: ``search(query)`` → the top ``files.browsecomp_top_k`` hits as ``[docid] snippet`` (first
``files.browsecomp_snippet_words`` words), ``get_document(docid)`` → the full text (optional,
``files.browsecomp_get_document``), ``finish(answer)`` → ends the episode. Reward: normalised exact match of the
answer (lower-case, no punctuation, no articles, single spaces; an ``Exact Answer:`` line is extracted first) —
BrowseComp-Plus grades with an LLM judge, which is not available here, so semantically-equal paraphrases score 0.

Metrics, as in BrowseComp-Plus: evidence recall = |retrieved docids ∩ evidence| / |evidence| per query (retrieved =
every docid a search returned) and search calls per query. The final step's ``info`` carries them (plus
``tool_call_counts`` and ``retrieved_docids``); :func:`retrieval_metrics` computes them from
``(task, retrieved docids[, search calls])`` items and :func:`run_record` writes the BrowseComp-Plus run format.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from supo.envs.base import Tool, ToolCallError, ToolEnv
from supo.envs.browsecomp_files import BM25Index, get_index, load_qrels, load_queries
from supo.envs.files import FilesEnvConfig
from supo.envs.spec import EnvSpec
from supo.errors import DataError, require
from supo.types import Task

ENV_NAME = "browsecomp"
MAX_DOC_CHARS = 65536

SYSTEM_PROMPT = (
    "You are a deep-research agent. Answer the question by searching a local document collection. Call exactly one "
    'tool per turn, written as <tool_call>{{"name": NAME, "parameters": {{...}}}}</tool_call>, and wait for its '
    "result.\nTools:\n{tools}\nWhen you are sure, call finish with the exact short answer (a name, number, date or "
    "phrase), not a sentence."
)


# ----------------------------------------------------------------------------------------------------------------------
# answers and metrics

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—"})
_EXACT = re.compile(r"exact answer\s*:\s*(.+)", re.I)


def extract_answer(text: str) -> str:
    m = _EXACT.search(text)
    return (m.group(1).splitlines()[0] if m else text).strip()


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_matches(answer: str, reference: str) -> bool:
    return normalize_answer(extract_answer(answer)) == normalize_answer(reference) != ""


def evidence_recall(evidence: Iterable[str], retrieved: Iterable[str]) -> float | None:
    """|retrieved ∩ evidence| / |evidence|; None when the query has no evidence judgments."""
    ev = set(evidence)
    if not ev:
        return None
    return len(ev & set(retrieved)) / len(ev)


def retrieval_metrics(items: Iterable[tuple]) -> dict[str, Any]:
    """Items ``(task, retrieved_docids)`` or ``(task, retrieved_docids, search_calls)`` → BrowseComp-Plus metrics.

    ``evidence_recall`` is the mean over queries that have evidence; ``mean_search_calls`` over items that carry a
    count (None when none do).
    """
    recalls, calls, n = [], [], 0
    for item in items:
        task, retrieved = item[0], item[1]
        n += 1
        r = evidence_recall(task.env_config.get("evidence", []), retrieved)
        if r is not None:
            recalls.append(r)
        if len(item) > 2 and item[2] is not None:
            calls.append(float(item[2]))
    return {"num_queries": n, "num_with_evidence": len(recalls),
            "evidence_recall": sum(recalls) / len(recalls) if recalls else None,
            "mean_search_calls": sum(calls) / len(calls) if calls else None}


def run_record(task: Task, info: dict[str, Any], output: str) -> dict[str, Any]:
    """One query's result in the BrowseComp-Plus run format (``scripts_evaluation/evaluate_run.py``)."""
    return {"query_id": task.env_config.get("query_id", task.id),
            "tool_call_counts": dict(info.get("tool_call_counts", {})),
            "status": info.get("status", "incomplete"),
            "retrieved_docids": list(info.get("retrieved_docids", [])),
            "result": [{"type": "output_text", "output": output}]}


# ----------------------------------------------------------------------------------------------------------------------
# the environment


def _tool_table(get_document: bool, search=None, document=None, finish=None) -> dict[str, Tool]:
    tools = {"search": Tool("search", "searches the document collection; returns the top hits as [docid] snippet",
                            {"query": str}, fn=search)}
    if get_document:
        tools["get_document"] = Tool("get_document", "returns the full text of a document found by search",
                                     {"docid": str}, fn=document)
    tools["finish"] = Tool("finish", "submits the exact short answer and ends the task", {"answer": str}, fn=finish,
                           final=True)
    return tools


def task_prompt(query: str, get_document: bool) -> list[dict[str, str]]:
    specs = "\n".join(f"- {t.signature()}: {t.doc}." for t in _tool_table(get_document).values())
    return [{"role": "system", "content": SYSTEM_PROMPT.format(tools=specs)}, {"role": "user", "content": query}]


class BrowseCompEnv(ToolEnv):
    """One episode over one query: search / get_document / finish against the shared cached index."""

    def __init__(self, index: BM25Index, query_id: str, reference: str, evidence: list[str], top_k: int = 5,
                 snippet_words: int = 384, get_document: bool = True) -> None:
        super().__init__()
        self.index, self.query_id, self.reference = index, query_id, reference
        self.evidence = list(evidence)
        self.top_k, self.snippet_words = top_k, snippet_words
        self.tools = _tool_table(get_document, self._search, self._document, self._finish)
        self._clear()

    def _clear(self) -> None:
        self.search_calls = 0
        self.tool_call_counts: dict[str, int] = {}
        self.retrieved: list[str] = []
        self.opened: list[str] = []
        self.answer: str | None = None

    def reset(self) -> str:
        self._clear()
        return super().reset()

    def _snippet(self, docid: str) -> str:
        doc = self.index.document(docid)
        words = (doc[0] if doc else "").split()
        text = " ".join(words[: self.snippet_words])
        return text + (" ..." if len(words) > self.snippet_words else "")

    def _search(self, query: str) -> str:
        if not query.strip():
            raise ToolCallError("search: the query is empty")
        self.search_calls += 1
        hits = self.index.search(query, self.top_k)
        for docid, _ in hits:
            if docid not in self.retrieved:
                self.retrieved.append(docid)
        if not hits:
            return "No results found for this query."
        return "\n\n".join(f"[{docid}] {self._snippet(docid)}" for docid, _ in hits)

    def _document(self, docid: str) -> str:
        doc = self.index.document(docid.strip())
        if doc is None:
            raise ToolCallError(f"get_document: unknown docid {docid[:40]!r}")
        if docid not in self.opened:
            self.opened.append(docid)
        text = doc[0]
        return text[:MAX_DOC_CHARS] + ("\n[... truncated]" if len(text) > MAX_DOC_CHARS else "")

    def _finish(self, answer: str) -> str:
        self.answer = answer
        self.reward = 1.0 if answer_matches(answer, self.reference) else 0.0
        return "answer submitted"

    def metrics(self) -> dict[str, Any]:
        return {"query_id": self.query_id, "status": "completed" if self.done else "incomplete",
                "correct": bool(self.reward), "evidence_recall": evidence_recall(self.evidence, self.retrieved),
                "num_evidence": len(self.evidence), "search_calls": self.search_calls,
                "tool_call_counts": dict(self.tool_call_counts), "retrieved_docids": list(self.retrieved),
                "opened_docids": list(self.opened)}

    def step(self, action_text: str) -> tuple[str, bool, float, dict[str, Any]]:
        was_done = self.done
        obs, done, reward, info = super().step(action_text)
        tool = info.get("tool")
        if tool is not None and not was_done:
            self.tool_call_counts[tool] = self.tool_call_counts.get(tool, 0) + 1
        if done and not was_done:
            info = {**info, **self.metrics()}
        return obs, done, reward, info


def make_env(task: Task) -> BrowseCompEnv:
    c = task.env_config
    try:
        index = get_index(c["corpus"], c["index_dir"])
        return BrowseCompEnv(index, str(c["query_id"]), task.reference, list(c.get("evidence", [])),
                             int(c.get("top_k", 5)), int(c.get("snippet_words", 384)),
                             bool(c.get("get_document", True)))
    except KeyError as e:
        raise ValueError(f"task {task.id}: bad env_config for the browsecomp env (missing {e})") from None


def make_tasks(options: FilesEnvConfig) -> list[Task]:
    """Every query of the configured files as a task (split not yet assigned); builds or loads the index."""
    f = options
    queries = load_queries(f.browsecomp_queries)
    qrels = load_qrels(f.browsecomp_qrels) if f.browsecomp_qrels else None
    index = get_index(f.browsecomp_corpus, f.index_dir)
    evidence_all = {q["query_id"]: (qrels.get(q["query_id"], []) if qrels is not None else q["evidence"])
                    for q in queries}
    judged = {d for docs in evidence_all.values() for d in docs}
    if judged:
        missing = judged - index.has(judged)
        if len(missing) > len(judged) / 2:
            src = f.browsecomp_qrels or f"{f.browsecomp_queries} (evidence_docs)"
            raise DataError(f"{src}: {len(missing)} of {len(judged)} evidence docids are not in the corpus "
                            f"{f.browsecomp_corpus} (e.g. {sorted(missing)[:3]}); wrong corpus or docid format?")
    tasks = []
    for q in queries:
        ev = evidence_all[q["query_id"]]
        tasks.append(Task(
            id=q["query_id"], env=ENV_NAME,
            env_config={"query_id": q["query_id"], "corpus": f.browsecomp_corpus, "index_dir": f.index_dir,
                        "top_k": f.browsecomp_top_k, "snippet_words": f.browsecomp_snippet_words,
                        "get_document": f.browsecomp_get_document, "evidence": ev, "gold": q["gold"]},
            split="", prompt=task_prompt(q["query"], f.browsecomp_get_document), reference=q["answer"],
            difficulty=len(ev)))
    return tasks


def split_tasks(tasks: list[Task], test_fraction: float, seed: int, test_ids: list[str] | None = None,
                test_ids_source: str = "test ids") -> dict[str, list[Task]]:
    """Seeded split by ``test_fraction``, or exactly ``test_ids`` as the test split."""
    ids = [t.id for t in tasks]
    if test_ids is not None:
        unknown = sorted(set(test_ids) - set(ids))
        if unknown:
            raise DataError(f"{test_ids_source}: query_id(s) {unknown[:5]} are not in the queries file")
        test = set(test_ids)
    else:
        order = sorted(ids)
        random.Random(f"browsecomp-split-{seed}").shuffle(order)
        n = round(test_fraction * len(order))
        if test_fraction > 0 and len(order) >= 2:
            n = min(max(n, 1), len(order) - 1)
        test = set(order[:n])
    out: dict[str, list[Task]] = {"train": [], "test": []}
    for t in tasks:
        s = "test" if t.id in test else "train"
        out[s].append(Task(t.id, t.env, t.env_config, s, t.prompt, t.reference, t.difficulty))
    return out


def read_test_ids(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"test ids file {path} does not exist")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
           if line.strip() and not line.startswith("#")]
    if not ids:
        raise DataError(f"test ids file {path} holds no query_ids")
    return ids


def requires(options: FilesEnvConfig) -> None:
    """Selected (``env.name: browsecomp``): the queries and the corpus are named."""
    for name in ("browsecomp_queries", "browsecomp_corpus"):
        require(bool(getattr(options, name)), f"files.{name}", "env.name browsecomp needs it (a local file)")


def files(options: FilesEnvConfig) -> list[tuple[str, str]]:
    names = ("browsecomp_queries", "browsecomp_corpus", "browsecomp_qrels", "browsecomp_test_ids")
    return [(f"files.{n}", getattr(options, n)) for n in names if getattr(options, n)]


def make_split(options: FilesEnvConfig, split: str, seed: int) -> list[Task]:
    """The ``split`` of the configured files: ``browsecomp_test_ids`` if given, else a seeded ``test_fraction``."""
    f = options
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected train or test")
    test_ids = read_test_ids(f.browsecomp_test_ids) if f.browsecomp_test_ids else None
    return split_tasks(make_tasks(f), f.test_fraction, seed, test_ids, f.browsecomp_test_ids)[split]


def build_split(cfg, split: str) -> list[Task]:
    """The ``split`` of a run config (its ``files`` section and ``seed``)."""
    return SPEC.build_split(cfg, split)


def make_expert(task: Task, error_rate: float, seed: int):
    raise NotImplementedError(
        "env browsecomp has no scripted expert (the queries are open-ended research questions); warm-start from a "
        "model that already calls tools (model.build false with a local model folder) or use the procedural search env"
    )


def corpus(tasks: list[Task]) -> list[str]:
    """Prompt texts and example calls (tokenizer training for a tiny model; the document texts are not included)."""
    from supo.envs.base import format_tool_call

    texts: list[str] = []
    for t in tasks:
        texts.extend(m["content"] for m in t.prompt)
        texts.append(format_tool_call("search", query=t.prompt[-1]["content"][:80]))
        texts.append(format_tool_call("finish", answer="..."))
    return texts


__all__ = ["BrowseCompEnv", "SPEC", "answer_matches", "build_split", "evidence_recall", "make_env", "normalize_answer",
           "retrieval_metrics", "run_record"]


from supo.envs.base import check_env_field, is_int, is_str_list  # noqa: E402  (the env_config check, appended)


def validate_env_config(cfg: dict) -> None:
    """What :func:`make_env` and the retrieval metrics read: ``query_id``, the ``corpus`` and ``index_dir`` paths
    (strings), and if present ``top_k`` and ``snippet_words`` (≥ 1), ``get_document`` (a bool) and ``evidence``
    (docids). Raises ValueError naming the field."""
    check_env_field(cfg, "query_id", lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
                    "a string or integer id")
    for name in ("corpus", "index_dir"):
        check_env_field(cfg, name, lambda v: isinstance(v, str) and v, "a non-empty path")
    for name in ("top_k", "snippet_words"):
        check_env_field(cfg, name, lambda v: is_int(v) and v >= 1, "an integer ≥ 1", required=False)
    check_env_field(cfg, "get_document", lambda v: isinstance(v, bool), "true or false", required=False)
    check_env_field(cfg, "evidence", is_str_list, "a list of docids", required=False)


SPEC = EnvSpec(name="browsecomp", section="files", options=FilesEnvConfig, make_split=make_split, make_env=make_env,
               make_expert=make_expert, corpus=corpus, validate_env_config=validate_env_config, requires=requires,
               files=files)
