"""Helpers shared by the benchmarks in this folder: the profile's config, and a tokenizer and random Qwen2 models
built locally in a scratch folder (nothing is read from the pipeline's data/ or models/, nothing from a hub)."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

# Keep tokenizers and vLLM quiet and never reach for a hub; set before transformers / vLLM are imported.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM logs to stdout; keep the printed tables readable

# The ~25M-parameter Qwen2 of the throughput benchmark (hidden 512, 8 layers; head size 64 suits vLLM's CPU attention).
MEDIUM_MODEL = {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "num_kv_heads": 4, "intermediate_size": 1408}


def load_profile(config: str, env: str, overrides: list[str], settings: dict[str, Any] | None = None) -> Any:
    """The run config of ``config`` for ``env`` (``supo.config.Config``) with the ``-S key=value`` ``overrides``,
    then the benchmark's own dotted ``settings`` (they win: the benchmark's options set them)."""
    from supo.config import load_config, parse_override

    return load_config(config, {**dict(parse_override(o) for o in overrides), **(settings or {})}, env=env)


def build_profile_tokenizer(cfg: Any, out_dir: Path) -> Any:
    """The tokenizer ``supo-cli prepare`` would train for ``cfg`` (same corpus), saved to ``out_dir``."""
    from supo.models import build_tokenizer
    from supo.prepare import build_tasks, tokenizer_corpus

    train, test = build_tasks(cfg)
    return build_tokenizer(tokenizer_corpus(cfg, train, test), cfg.model.vocab_size, out_dir)


def build_random_model(tokenizer: Any, cfg: Any, out_dir: Path, *, max_len: int, **sizes: int) -> int:
    """Save a randomly initialised Qwen2 (the profile's ``model`` section with ``sizes`` replaced) and the tokenizer to
    ``out_dir``, with positions for at least ``max_len`` tokens; return its parameter count."""
    from supo.models import build_model, num_parameters

    positions = max(cfg.model.max_position_embeddings, 256 * math.ceil(max_len / 256))
    model_cfg = dataclasses.replace(cfg.model, max_position_embeddings=positions, **sizes)
    return num_parameters(build_model(tokenizer, model_cfg, cfg.seed, out_dir))


def count_parameters(model_dir: Path) -> int:
    """Parameters of the HF model saved in ``model_dir``."""
    from supo.models import load_policy, num_parameters

    return num_parameters(load_policy(model_dir))


def set_threads(threads: int) -> int:
    """Set torch's (and so vLLM's CPU engine's) intra-op threads before any engine starts; 0 keeps torch's default.

    One thread is the robust choice on a shared machine: with two threads, each turn waits at OpenMP barriers for
    whichever thread another process preempted, and timings swing by an order of magnitude."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_note() -> str:
    """The machine's load, to read timings against (other processes share the cores)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def engine_config(cfg: Any, max_model_len: int) -> Any:
    """The profile's engine section with ``max_model_len`` replaced."""
    return dataclasses.replace(cfg.engine, max_model_len=max_model_len)


def add_run_args(ap: Any, *, workdir_help: str, quick_help: str) -> None:
    """The options both benchmarks share: engine threads, scratch folder, config overrides, the smoke run."""
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the engines (default 1: stable "
                                                           "timings on a shared machine; 0 = torch's default)")
    ap.add_argument("--workdir", default="", help=workdir_help)
    ap.add_argument("-S", "--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--quick", action="store_true", help=quick_help)
