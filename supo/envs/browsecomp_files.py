"""BrowseComp-Plus's local files (``supo.envs.browsecomp``): the queries, qrels and corpus readers, and the BM25 index
built once per corpus and cached under ``files.index_dir`` (bm25s's files, a SQLite document store, ``meta.json``
with the corpus file's size and mtime; a changed corpus is re-indexed, a file lock keeps concurrent workers from
building twice, and the loaded index is kept per process). Every malformed row or line is named with its file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from supo.envs.codegym_rows import read_records
from supo.errors import DataError
from supo.jsonl import iter_jsonl

INDEX_FORMAT = 1
STOPWORDS = "en"

# ----------------------------------------------------------------------------------------------------------------------
# reading the files


def _docid(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, str)):
        s = str(value).strip()
        return s or None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def _doc_list(value: Any, where: str, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{where}, field {name}: expected a list of documents or docids")
    out = []
    for j, d in enumerate(value):
        did = _docid(d.get("docid") if isinstance(d, dict) else d)
        if did is None:
            raise DataError(f"{where}, field {name}[{j}]: expected a docid (or an object with a docid)")
        if did not in out:
            out.append(did)
    return out


def load_queries(path: str | Path) -> list[dict[str, Any]]:
    """``[{query_id, query, answer, evidence, gold}]``; DataError naming the file, row and field of a bad row."""
    path = Path(path)
    rows = read_records(path, "BrowseComp-Plus queries")
    out, seen = [], set()
    for i, row in enumerate(rows):
        where = f"{path}, row {i}"
        qid = _docid(row.get("query_id"))
        if qid is None:
            raise DataError(f"{where}, field query_id: missing or not a string/integer")
        if qid in seen:
            raise DataError(f"{where}, field query_id: duplicate query_id {qid!r}")
        seen.add(qid)
        query, answer = row.get("query"), row.get("answer")
        if not isinstance(query, str) or not query.strip():
            raise DataError(f"{where} (query_id {qid}), field query: expected a non-empty string")
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{where} (query_id {qid}), field answer: expected a non-empty string (decrypted)")
        out.append({"query_id": qid, "query": query, "answer": answer,
                    "evidence": _doc_list(row.get("evidence_docs"), where, "evidence_docs"),
                    "gold": _doc_list(row.get("gold_docs"), where, "gold_docs")})
    if not out:
        raise DataError(f"BrowseComp-Plus queries file {path} holds no rows")
    return out


def load_qrels(path: str | Path) -> dict[str, list[str]]:
    """TREC qrels → ``{query_id: [docid with rel > 0, ...]}``; DataError naming the line of a malformed one."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"qrels file {path} does not exist")
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 4:
                raise DataError(f"{path}, line {n}: expected 'qid Q0 docid rel' (4 fields), got {len(parts)}")
            qid, _, docid, rel = parts
            try:
                rel_v = int(rel)
            except ValueError:
                raise DataError(f"{path}, line {n}: relevance {rel!r} is not an integer") from None
            if rel_v > 0:
                docs = out.setdefault(qid, [])
                if docid not in docs:
                    docs.append(docid)
    if not out:
        raise DataError(f"qrels file {path} holds no relevant (rel > 0) judgments")
    return out


def iter_corpus(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """``(docid, text, url)`` of every corpus row, streamed; DataError naming the row of a bad one."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"corpus file {path} does not exist")
    seen: set[str] = set()

    def check(i: int, row: dict[str, Any]) -> tuple[str, str, str]:
        did = _docid(row.get("docid"))
        if did is None:
            raise DataError(f"{path}, row {i}, field docid: missing or not a string/integer")
        if did in seen:
            raise DataError(f"{path}, row {i}, field docid: duplicate docid {did!r}")
        seen.add(did)
        text, url = row.get("text"), row.get("url")
        if not isinstance(text, str):
            raise DataError(f"{path}, row {i} (docid {did}), field text: expected a string")
        if url is not None and not isinstance(url, str):
            raise DataError(f"{path}, row {i} (docid {did}), field url: expected a string")
        return did, text, url or ""

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:
            raise DataError(f"corpus file {path} is not a readable parquet file: {e.__class__.__name__}: {e}") from None
        names = pf.schema_arrow.names
        missing = [c for c in ("docid", "text") if c not in names]
        if missing:
            raise DataError(f"corpus file {path} lacks column(s) {missing}; expected docid, text[, url]")
        cols = [c for c in ("docid", "text", "url") if c in names]
        i = 0
        for batch in pf.iter_batches(columns=cols, batch_size=4096):
            for row in batch.to_pylist():
                yield check(i, row)
                i += 1
        return
    if suffix not in (".jsonl", ".json", ".ndjson"):
        raise DataError(f"corpus file {path}: expected a .jsonl or .parquet file")
    for i, (_, row) in enumerate(iter_jsonl(path)):
        yield check(i, row)


# ----------------------------------------------------------------------------------------------------------------------
# the cached BM25 index


def _fingerprint(corpus: Path) -> dict[str, Any]:
    st = corpus.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def index_path(corpus: str | Path, index_dir: str | Path) -> Path:
    """Where a corpus's index lives: ``index_dir/<stem>-<8 hex of the corpus path as given>``."""
    corpus = os.path.normpath(str(corpus))
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(corpus).stem) or "corpus"
    return Path(index_dir) / f"{stem}-{hashlib.sha1(corpus.encode()).hexdigest()[:8]}"


def _tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords=STOPWORDS, show_progress=False)


class BM25Index:
    """A loaded index: ``search(query, k)`` over the corpus and ``document(docid)`` from the SQLite store."""

    def __init__(self, directory: Path, retriever, meta: dict[str, Any], built: bool, seconds: float) -> None:
        self.directory = directory
        self.retriever = retriever
        self.meta = meta
        self.num_docs = int(meta["num_docs"])
        self.built = built  # True when this load had to (re)build the index
        self.seconds = seconds  # time this load (or build) took
        self._db = sqlite3.connect(f"file:{directory / 'docs.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        import bm25s

        tokens = bm25s.tokenize([query], stopwords=STOPWORDS, return_ids=False, show_progress=False)
        if not tokens or not tokens[0] or self.num_docs == 0:
            return []
        vocab = getattr(self.retriever, "vocab_dict", None)
        if vocab is not None and not any(t in vocab for t in tokens[0]):
            return []
        with self._lock:
            res = self.retriever.retrieve(tokens, k=min(k, self.num_docs), show_progress=False, n_threads=0)
            rows = [int(r) for r, s in zip(res.documents[0], res.scores[0]) if float(s) > 0]
            scores = [float(s) for s in res.scores[0] if float(s) > 0]
            if not rows:
                return []
            q = f"SELECT row, docid FROM docs WHERE row IN ({','.join('?' * len(rows))})"
            ids = dict(self._db.execute(q, rows).fetchall())
        return [(ids[r], s) for r, s in zip(rows, scores)]

    def document(self, docid: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute("SELECT text, url FROM docs WHERE docid = ?", (docid,)).fetchone()
        return None if row is None else (row[0], row[1])

    def has(self, docids: Iterable[str]) -> set[str]:
        docids = list(docids)
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(docids), 500):
                chunk = docids[i:i + 500]
                q = f"SELECT docid FROM docs WHERE docid IN ({','.join('?' * len(chunk))})"
                found.update(r[0] for r in self._db.execute(q, chunk).fetchall())
        return found

    def close(self) -> None:
        self._db.close()


def _build(corpus: Path, final: Path, fp: dict[str, Any]) -> None:
    import bm25s

    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        db = sqlite3.connect(tmp / "docs.sqlite")
        db.execute("CREATE TABLE docs (row INTEGER PRIMARY KEY, docid TEXT NOT NULL UNIQUE, url TEXT, text TEXT)")
        texts: list[str] = []
        batch = []
        for row, (docid, text, url) in enumerate(iter_corpus(corpus)):
            texts.append(text)
            batch.append((row, docid, url, text))
            if len(batch) >= 2048:
                db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", batch)
                batch = []
        db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", batch)
        db.commit()
        db.close()
        if not texts:
            raise DataError(f"corpus file {corpus} holds no documents")
        retriever = bm25s.BM25()
        retriever.index(_tokenize(texts), show_progress=False)
        retriever.save(str(tmp / "bm25"), show_progress=False)
        meta = {"format": INDEX_FORMAT, "corpus": os.path.normpath(str(corpus)), **fp, "num_docs": len(texts),
                "bm25s": getattr(bm25s, "__version__", "?"), "stopwords": STOPWORDS}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")  # written last: marks a complete index
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_or_build_index(corpus: str | Path, index_dir: str | Path) -> BM25Index:
    """Load the cached index of ``corpus`` or (re)build it when missing or stale (size/mtime changed)."""
    import bm25s

    corpus = Path(corpus)
    if not corpus.exists():
        raise DataError(f"corpus file {corpus} does not exist")
    final = index_path(corpus, index_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(final.parent / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fp = _fingerprint(corpus)
        built = False
        try:
            meta = json.loads((final / "meta.json").read_text())
        except (OSError, ValueError):
            meta = None
        if not (isinstance(meta, dict) and meta.get("format") == INDEX_FORMAT and meta.get("size") == fp["size"]
                and meta.get("mtime_ns") == fp["mtime_ns"]):
            _build(corpus, final, fp)
            meta = json.loads((final / "meta.json").read_text())
            built = True
        retriever = bm25s.BM25.load(str(final / "bm25"), show_progress=False)
    return BM25Index(final, retriever, meta, built, time.perf_counter() - t0)


_CACHE: dict[tuple[str, str], tuple[dict[str, Any], BM25Index]] = {}
_CACHE_LOCK = threading.Lock()


def get_index(corpus: str | Path, index_dir: str | Path) -> BM25Index:
    """The process-wide loaded index of ``corpus`` (reloaded/rebuilt when the corpus file changed)."""
    key = (os.path.abspath(corpus), os.path.abspath(index_dir))
    try:
        fp = _fingerprint(Path(corpus))
    except OSError:
        raise DataError(f"corpus file {corpus} does not exist") from None
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == fp:
            return hit[1]
        idx = load_or_build_index(corpus, index_dir)
        if hit is not None:
            hit[1].close()
        _CACHE[key] = (fp, idx)
        return idx


def clear_index_cache() -> None:
    with _CACHE_LOCK:
        for _, idx in _CACHE.values():
            idx.close()
        _CACHE.clear()
