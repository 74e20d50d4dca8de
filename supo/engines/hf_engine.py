"""The rollout engine without vLLM: generation on ``transformers`` (``engine.backend: hf``).

For machines where vLLM does not install (a new CUDA, Apple silicon, Windows, a lent GPU without a package index),
for debugging, and as a reference the vLLM path is checked against (``tests/test_hf_engine.py``). It implements
:class:`supo.contracts.Policy` as :class:`~supo.engines.vllm_engine.VLLMPolicy` does, with the same meaning of every
field (R6: ids and log-probs exactly as sampled):

* **batched generation with a KV cache**: one call prefills every request's context at once (left padding, an
  attention mask, position ids counted from each row's first real token), then decodes one token per live row per
  forward pass over the cache; a row that has finished (the model's end-of-sequence id, or ``max_tokens``) leaves the
  batch and its cache rows are dropped (``DynamicCache.batch_select_indices``). Each call starts from an empty cache
  (vLLM keeps a prefix cache across calls; here every turn prefills its whole context).
* **processed log-probs**: the log-probability of each sampled token under the distribution sampled from — logits
  divided by the temperature, then the top-p nucleus renormalised (vLLM's ``processed_logprobs``; the trainer divides
  its logits by the same temperature). Temperature 0 is greedy decoding (argmax; the log-probs are the raw model's).
* **per-request seeds** (common random numbers): every request draws from its own ``torch.Generator`` seeded with
  ``GenRequest.seed`` (exponential-race sampling, ``argmax(p / q)``, ``q ~ Exp(1)``: one draw per vocabulary entry
  per token), so a request's tokens do not depend on which other requests share its batch, up to the float rounding
  that a different padding can bring.
* **in-place weight updates**: :meth:`HFPolicy.push_weights` makes the engine's parameters the given tensors when
  they already sit on the engine's device in its dtype (the trainer's tensors, no copy), else copies into them.

``engine.dtype`` (float32 or bfloat16) is the model's dtype; the engine runs on CUDA when a GPU is visible.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from supo.contracts import GenRequest, GenResult

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def eos_ids(model_path: str | Path, model_config) -> set[int]:
    """The ids that end a generation: the model config's and ``generation_config.json``'s ``eos_token_id`` (an int or
    a list in either), as vLLM reads them."""
    import json

    ids: set[int] = set()

    def add(v) -> None:
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)

    add(getattr(model_config, "eos_token_id", None))
    gen = Path(model_path) / "generation_config.json"
    if gen.exists():
        add(json.loads(gen.read_text()).get("eos_token_id"))
    return ids


def processed_logprobs(logits, temperature: float, top_p: float):
    """Log-probabilities of the distribution sampled from, per row of ``logits`` ([B, V], float32): temperature, then
    the top-p nucleus (the smallest set of most likely tokens whose mass reaches ``top_p``, renormalised; the rest
    −inf). Temperature 0: the raw log-softmax (greedy decoding samples its argmax)."""
    import torch

    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    if temperature > 0 and top_p < 1.0:
        sorted_lp, order = logp.sort(dim=-1, descending=True)
        before = sorted_lp.exp().cumsum(dim=-1) - sorted_lp.exp()  # the mass of the tokens ahead of each one
        drop = before >= top_p  # keeps at least the most likely token
        sorted_lp = sorted_lp.masked_fill(drop, float("-inf"))
        logp = torch.full_like(logp, float("-inf")).scatter(-1, order, sorted_lp)
        logp = torch.log_softmax(logp, dim=-1)
    return logp


def sample_row(logp_row, temperature: float, generator) -> int:
    """One token from one row of processed log-probs: argmax at temperature 0, else the exponential race with the
    request's own generator (``argmax(p / q)``, ``q ~ Exp(1)`` — a draw from ``p``)."""
    import torch

    if temperature <= 0:
        return int(torch.argmax(logp_row))
    q = torch.empty(logp_row.shape, dtype=torch.float32, device=logp_row.device).exponential_(generator=generator)
    return int(torch.argmax(logp_row.exp() / q))


class HFPolicy:
    """A ``transformers`` causal LM serving the current policy; implements ``supo.contracts.Policy`` (the same
    constructor and counters as :class:`~supo.engines.vllm_engine.VLLMPolicy`)."""

    def __init__(self, model_path: str | Path, engine_cfg, *, seed: int = 0, temperature: float = 1.0,
                 top_p: float = 1.0, seeded: bool = True, device: str | None = None) -> None:
        """``seeded`` False: requests draw from one engine generator seeded with ``seed`` (batch-dependent), as the
        unseeded vLLM engine does."""
        import torch
        from transformers import AutoModelForCausalLM

        if not (Path(model_path) / "config.json").exists():
            raise FileNotFoundError(f"{model_path} is not a model folder (no config.json)")
        if engine_cfg.dtype not in _DTYPES:
            raise ValueError(f"engine.dtype: {engine_cfg.dtype!r} is not one of {', '.join(_DTYPES)}")
        t0 = time.perf_counter()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = getattr(torch, _DTYPES[engine_cfg.dtype])
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=self.dtype).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        cfg = self.model.config
        self.eos = eos_ids(model_path, cfg)
        self.pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else min(self.eos, default=0)
        self.max_model_len, self.max_num_seqs = engine_cfg.max_model_len, max(1, engine_cfg.max_num_seqs)
        self.temperature, self.top_p, self.seeded = temperature, top_p, seeded
        self._engine_gen = torch.Generator(device=self.device).manual_seed(seed)
        self.start_seconds = time.perf_counter() - t0
        self.tokens_generated = 0
        self.tokens_prompt = 0
        self.generate_seconds = 0.0

    # -- the Policy contract ----------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        t0 = time.perf_counter()
        results: list[GenResult] = []
        for start in range(0, len(requests), self.max_num_seqs):
            results.extend(self._generate_batch(requests[start:start + self.max_num_seqs]))
        self.generate_seconds += time.perf_counter() - t0
        for req, res in zip(requests, results):
            self.tokens_generated += len(res.token_ids)
            self.tokens_prompt += len(req.context)
        return results

    def on_step(self, key: int, action: str, observation: str) -> None:
        pass

    def on_drop(self, key: int) -> None:
        pass

    # -- generation -------------------------------------------------------------------------------------------------

    def _generate_batch(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        import torch

        for r in requests:
            if not r.context:
                raise ValueError(f"request {r.key}: an empty context")
            if len(r.context) + r.max_tokens > self.max_model_len:
                raise ValueError(f"request {r.key}: context {len(r.context)} + max_tokens {r.max_tokens} exceeds "
                                 f"engine.max_model_len {self.max_model_len}")
        n, dev = len(requests), self.device
        longest = max(len(r.context) for r in requests)
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros((n, longest), dtype=torch.long, device=dev)
        for i, r in enumerate(requests):
            ids[i, longest - len(r.context):] = torch.tensor(r.context, dtype=torch.long, device=dev)
            mask[i, longest - len(r.context):] = 1
        gens = [torch.Generator(device=dev).manual_seed(int(r.seed)) if self.seeded else self._engine_gen
                for r in requests]
        out_ids: list[list[int]] = [[] for _ in requests]
        out_lps: list[list[float]] = [[] for _ in requests]
        finish = ["length"] * n
        live = list(range(n))  # request index of each batch row
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
            cache, last_pos = out.past_key_values, positions[:, -1]
            logits = out.logits[:, -1, :]
            while live:
                logp = processed_logprobs(logits, self.temperature, self.top_p)
                keep, nxt = [], []
                for row, i in enumerate(live):
                    tok = sample_row(logp[row], self.temperature, gens[i])
                    out_ids[i].append(tok)
                    out_lps[i].append(float(logp[row, tok]))
                    if tok in self.eos:
                        finish[i] = "stop"
                    elif len(out_ids[i]) < requests[i].max_tokens:
                        keep.append(row)
                        nxt.append(tok)
                if not keep:
                    break
                if len(keep) < len(live):
                    rows = torch.tensor(keep, dtype=torch.long, device=dev)
                    cache.batch_select_indices(rows)
                    mask, last_pos = mask[rows], last_pos[rows]
                    live = [live[r] for r in keep]
                mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
                last_pos = last_pos + 1
                out = self.model(input_ids=torch.tensor(nxt, dtype=torch.long, device=dev)[:, None],
                                 attention_mask=mask, position_ids=last_pos[:, None], past_key_values=cache,
                                 use_cache=True)
                cache, logits = out.past_key_values, out.logits[:, -1, :]
        return [GenResult(token_ids=out_ids[i], logprobs=out_lps[i], finish_reason=finish[i]) for i in range(n)]

    def score(self, context: Sequence[int], token_ids: Sequence[int]) -> list[float]:
        """The processed log-probs this engine gives ``token_ids`` after ``context`` (teacher-forced, one forward
        pass): what it would report had it sampled them (parity checks against another engine)."""
        import torch

        full = torch.tensor([list(context) + list(token_ids)], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=full).logits[0, len(context) - 1: full.shape[1] - 1]
        logp = processed_logprobs(logits, self.temperature, self.top_p)
        return [float(logp[k, t]) for k, t in enumerate(token_ids)]

    # -- weights ----------------------------------------------------------------------------------------------------

    def push_weights(self, state_dict, to_cpu: bool = True) -> float:
        """Load a full state dict in place; returns the seconds it took. A tensor already on the engine's device in
        its dtype becomes the parameter's storage (no copy: the engine then reads the trainer's tensor); any other
        is copied into the parameter. ``to_cpu`` is accepted for the vLLM engine's signature (tensors go to the
        engine's device either way). Unknown names and shape mismatches raise."""
        import torch

        t0 = time.perf_counter()
        params = dict(self.model.named_parameters(remove_duplicate=False))
        params.update(dict(self.model.named_buffers()))
        unknown = [k for k in state_dict if k not in params]
        if unknown:
            raise KeyError(f"push_weights: {len(unknown)} name(s) the engine's model does not have, e.g. {unknown[0]}")
        with torch.no_grad():
            for name, t in state_dict.items():
                p = params[name]
                t = t.detach()
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"push_weights: {name} has shape {tuple(t.shape)}, the engine's {tuple(p.shape)}")
                if t.device == p.device and t.dtype == p.dtype:
                    p.data = t
                else:
                    p.data.copy_(t)
        return time.perf_counter() - t0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.tokens_generated / self.generate_seconds if self.generate_seconds else 0.0
