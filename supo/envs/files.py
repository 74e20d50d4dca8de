"""The options of the file-backed environments (codegym, browsecomp, bfcl): params.yaml section ``files``.

The three share one section (local paths, the held-out share, the CodeGym sandbox's limits); what each needs when it
is selected — a rows file named, the files it reads existing — is declared by its own spec (``requires``, ``files``
in ``supo.envs.codegym``, ``supo.envs.browsecomp``, ``supo.envs.bfcl``). Paths are local and never committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from supo.errors import require
from supo.fields import F


@dataclass
class FilesEnvConfig:
    """File-backed environments for the paper profile (``env.name: codegym | browsecomp | bfcl``); paths are local."""

    codegym_path: str = F("", "CodeGym rows (JSONL or parquet) for env.name codegym")
    browsecomp_queries: str = F("", "BrowseComp-Plus decrypted queries (JSONL or parquet: query_id, query, answer, "
                                    "evidence_docs) for env.name browsecomp")
    browsecomp_corpus: str = F("", "BrowseComp-Plus corpus (JSONL or parquet with docid, text, url)")
    browsecomp_qrels: str = F("", "BrowseComp-Plus evidence relevance judgments (TREC qrels); empty = the queries' "
                                  "evidence_docs")
    browsecomp_test_ids: str = F("", "file of test query_ids, one per line (the paper's split); empty = a seeded "
                                     "split by test_fraction")
    browsecomp_top_k: int = F(5, "search results returned per search call")
    browsecomp_snippet_words: int = F(384, "words of each search result's snippet (BrowseComp-Plus: 512 Qwen tokens)")
    browsecomp_get_document: bool = F(True, "offer get_document(docid) besides search and finish")
    index_dir: str = F("data/bm25", "where the BM25 index is built once and cached (a DVC output)")
    test_fraction: float = F(0.12, "share of file-backed tasks held out as the test split (seeded)")
    sandbox_seconds: float = F(10.0, "wall-time limit of one sandboxed CodeGym environment call")
    sandbox_memory_mb: int = F(512, "memory limit of the sandboxed CodeGym environment process")
    sandbox_network_namespace: bool = F(True, "run the CodeGym sandbox in a private network namespace (unshare -rn) "
                                              "where the system allows it; socket is blocked in-process regardless")
    bfcl_categories: list[str] = F(["multi_turn_base"], "BFCL v4 multi-turn categories for env.name bfcl "
                                                        "(multi_turn_base, _miss_func, _miss_param, _long_context)")

    def validate(self) -> None:
        """Ranges; ConfigError naming ``files.<field>``."""
        require(0.0 <= self.test_fraction < 1.0, "files.test_fraction", f"must be in [0, 1), got {self.test_fraction}")
        require(self.sandbox_seconds > 0, "files.sandbox_seconds", f"must be > 0, got {self.sandbox_seconds}")
        require(self.sandbox_memory_mb >= 32, "files.sandbox_memory_mb", f"must be ≥ 32, got {self.sandbox_memory_mb}")
        require(self.browsecomp_top_k >= 1, "files.browsecomp_top_k", f"must be ≥ 1, got {self.browsecomp_top_k}")
        require(self.browsecomp_snippet_words >= 1, "files.browsecomp_snippet_words",
                f"must be ≥ 1, got {self.browsecomp_snippet_words}")
