"""Rollout throughput: supo's two engines (``engine.backend`` vllm and hf) and a Hugging Face ``generate`` loop, at
two model sizes.

All three implement the agent loop's ``Policy`` protocol and are driven through the very same
``supo.rollout.agent_loop.run_rollouts`` over the same array-env tasks, loop settings, number of rollouts and sampling
settings (temperature, top_p, no top-k, the per-turn token budget):

* **vLLM** — ``supo.engines.vllm_engine.VLLMPolicy``: the in-process vLLM engine the trainer uses (prefix caching on,
  so each turn prefills only what the previous turn appended);
* **hf** — ``supo.engines.hf_engine.HFPolicy`` (``engine.backend: hf``): ``transformers`` forward passes over a KV
  cache, batched across live rollouts, rows leaving the batch as they finish, per-request seeds (no prefix cache
  across turns: each turn prefills its whole context);
* **HF** — :class:`HFGeneratePolicy` below: per loop turn, one left-padded ``model.generate`` over every live rollout's
  full context, re-encoding the growing context each turn (the KV cache lives only within one ``generate`` call).

Models: the tiny profile's Qwen2 (params.yaml ``model``; randomly initialised, or ``--tiny-model DIR`` for a trained
one such as the SFT model) and a randomly initialised ~25M-parameter Qwen2 (hidden 512, 8 layers), with the same
tokenizer (trained locally like ``supo-cli prepare`` does). Random models rarely end a rollout, so the work is bounded
by the loop settings: ``--max-steps`` actions per rollout (H), ``--max-summaries`` (S, default 0: plain multi-turn) and
a working context large enough that the trigger does not fire within H turns with S = 0.

Measured per (model, engine), after a one-request warm-up that is timed separately (and, for vLLM, followed by a
prefix-cache reset): engine start-up, the wall time of ``run_rollouts``, turns (actions + summaries), generated tokens,
tokens processed (prefill + decode as the loop counts them: every turn's full context plus its output, i.e. without
caching), and the rates per second of rollout wall time. Random models produce different numbers of tokens, hence the
rates; the ratio columns are vLLM / hf and vLLM / HF. Everything runs in one process, both engines with ``--threads`` torch threads
(default 1: with two threads on a machine shared with other jobs, timings swing by an order of magnitude); models
are built in a scratch folder (``--workdir``, default a temporary folder removed afterwards). Usage:

    python bench/rollout_throughput.py [--rollouts 32] [--max-steps 10] [--max-summaries 0] [--working-context 768]
        [--max-model-len 1024] [--models tiny,25m] [--tiny-model DIR] [--threads 1] [--config params.yaml]
        [--env array] [--workdir DIR] [-S key=value ...] [--quick]

``--quick`` is a smoke run (4 rollouts, 3 steps).
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MEDIUM_MODEL, build_profile_tokenizer, build_random_model, count_parameters, load_note, \
    add_run_args, load_profile, set_threads  # noqa: E402

from supo.contracts import GenRequest, GenResult, Policy  # noqa: E402
from supo.rollout.agent_loop import run_rollouts  # noqa: E402
from supo.types import Rollout, Task  # noqa: E402

ENGINES = ("vLLM", "hf", "HF")


class HFGeneratePolicy:
    """The baseline: one left-padded ``model.generate`` per loop turn over all live rollouts' full contexts.

    Nothing is kept between turns, so every turn re-encodes each rollout's whole context. Sampling matches the engine:
    ``temperature``, ``top_p``, no top-k, at most ``max_tokens`` new tokens per request, stop at (and keep) the
    end-of-turn token. Log-probs of the sampled tokens are returned like the engine's.
    """

    def __init__(self, model_dir: Path, *, eos_id: int, pad_id: int, seed: int, temperature: float,
                 top_p: float) -> None:
        import torch

        from supo.models import load_policy

        torch.manual_seed(seed)
        self.model = load_policy(model_dir).eval()
        self.eos_id, self.pad_id = eos_id, pad_id
        self.temperature, self.top_p = temperature, top_p

    def _batch(self, requests: Sequence[GenRequest]) -> tuple[Any, Any]:
        import torch

        width = max(len(r.context) for r in requests)
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for i, r in enumerate(requests):
            ids[i, width - len(r.context):] = torch.tensor(r.context, dtype=torch.long)
            mask[i, width - len(r.context):] = 1
        return ids, mask

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        import torch

        ids, mask = self._batch(requests)
        sampling = (dict(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0)
                    if self.temperature > 0 else dict(do_sample=False))
        max_new = max(r.max_tokens for r in requests)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, eos_token_id=self.eos_id,
                                      pad_token_id=self.pad_id, return_dict_in_generate=True, output_scores=True,
                                      **sampling)
        new = out.sequences[:, ids.shape[1]:]
        logps = torch.stack(out.scores, dim=1).log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        return [self._result(new[i].tolist(), logps[i].tolist(), r.max_tokens) for i, r in enumerate(requests)]

    def _result(self, tokens: list[int], logps: list[float], max_tokens: int) -> GenResult:
        tokens = tokens[:max_tokens]
        if self.eos_id in tokens:
            end = tokens.index(self.eos_id) + 1
            return GenResult(tokens[:end], logps[:end], "stop")
        return GenResult(tokens, logps[: len(tokens)], "length")

    def on_step(self, key: int, action: str, observation: str) -> None:
        pass

    def on_drop(self, key: int) -> None:
        pass


@dataclass
class EngineRun:
    """What one engine did on one model."""

    start_s: float
    warmup_s: float
    wall_s: float
    turns: int
    generated: int
    processed: int

    @property
    def generated_per_s(self) -> float:
        return self.generated / self.wall_s

    @property
    def processed_per_s(self) -> float:
        return self.processed / self.wall_s

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.wall_s


@dataclass
class Workload:
    """The identical rollout workload both engines run: items, tokenizer, templates, loop settings."""

    items: list[tuple[Task, str, int]]
    runtime: Any
    make_env: Callable[[Task], Any]
    seed: int


def time_engine(make_policy: Callable[[], Policy], work: Workload, after_warmup: Callable[[Policy], None]) -> EngineRun:
    """Start an engine, warm it up with one small request, then time ``run_rollouts`` over the workload."""
    from supo.rollout.templates import prompt_ids

    t0 = time.perf_counter()
    policy = make_policy()
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    policy.generate([GenRequest(0, prompt_ids(work.runtime.tokenizer, work.items[0][0]), "action", 4, 0)])
    warmup = time.perf_counter() - t0
    after_warmup(policy)
    rt = work.runtime
    t0 = time.perf_counter()
    rollouts = run_rollouts(work.items, policy, rt.tokenizer, rt.templates, rt.settings, work.make_env, seed=work.seed)
    wall = time.perf_counter() - t0
    del policy
    gc.collect()
    return EngineRun(start, warmup, wall, *_counts(rollouts))


def _counts(rollouts: Sequence[Rollout]) -> tuple[int, int, int]:
    turns = sum(r.tool_calls + r.num_summaries for r in rollouts)
    return turns, sum(r.tokens_generated for r in rollouts), sum(r.tokens_processed for r in rollouts)


def run_model(model_dir: Path, cfg: Any, work: Workload) -> dict[str, EngineRun]:
    """Time the three engines on one model, vLLM last (so its thread settings cannot affect the others)."""
    from supo.engines.hf_engine import HFPolicy
    from supo.engines.vllm_engine import VLLMPolicy

    tok, r = work.runtime.tokenizer, cfg.rollout
    hf = time_engine(lambda: HFGeneratePolicy(model_dir, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                                              seed=cfg.seed, temperature=r.temperature, top_p=r.top_p),
                     work, lambda _: None)
    ours = time_engine(lambda: HFPolicy(model_dir, cfg.engine, seed=cfg.seed, temperature=r.temperature, top_p=r.top_p),
                       work, lambda _: None)
    vllm = time_engine(lambda: VLLMPolicy(model_dir, cfg.engine, seed=cfg.seed,
                                          temperature=r.temperature, top_p=r.top_p),
                       work, lambda p: p.llm.reset_prefix_cache())
    return {"vLLM": vllm, "hf": ours, "HF": hf}


def build_workload(cfg: Any, tokenizer: Any, model_dir: Path, args: argparse.Namespace) -> Workload:
    """``args.rollouts`` rollouts over test-split tasks (``rollout.group_size`` per task) under (S, W, H)."""
    from supo.envs import get_env_spec
    from supo.runtime import build_runtime

    spec = get_env_spec(cfg.env.name)
    group = min(cfg.rollout.group_size, args.rollouts)
    tasks = spec["build_split"](cfg, "test")[: math.ceil(args.rollouts / group)]
    items = [(tasks[k // group], f"{tasks[k // group].id}@bench", k % group) for k in range(args.rollouts)]
    rt = build_runtime(cfg, model_dir, tasks, max_summaries=args.max_summaries,
                       working_context=args.working_context, tokenizer=tokenizer)
    return Workload(items, rt, spec["make_env"], cfg.seed + 7)


# ----------------------------------------------------------------------------------------------------------------------
# the table

ROWS: list[tuple[str, Callable[[EngineRun], float], str]] = [
    ("generated tok/s", lambda e: e.generated_per_s, "{:.0f}"),
    ("processed tok/s (prefill+decode)", lambda e: e.processed_per_s, "{:.0f}"),
    ("turns/s", lambda e: e.turns_per_s, "{:.2f}"),
    ("rollout wall s", lambda e: e.wall_s, "{:.2f}"),
    ("turns", lambda e: e.turns, "{:.0f}"),
    ("generated tokens", lambda e: e.generated, "{:.0f}"),
    ("processed tokens", lambda e: e.processed, "{:.0f}"),
    ("engine start-up s (untimed)", lambda e: e.start_s, "{:.2f}"),
    ("warm-up call s (untimed)", lambda e: e.warmup_s, "{:.2f}"),
]


def print_table(results: list[tuple[str, int, dict[str, EngineRun]]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    print(f"workload: {args.rollouts} rollouts, H = {args.max_steps}, S = {args.max_summaries}, "
          f"W = {args.working_context}, max_model_len {args.max_model_len}")
    table = Table(title="rollout throughput (rates per second of rollout wall time; vLLM = engine.backend vllm, hf = "
                        "engine.backend hf, HF = a transformers generate loop)")
    for col in ("model", "params", "metric", *ENGINES, "vLLM/hf", "vLLM/HF"):
        table.add_column(col, justify="left" if col in ("model", "metric") else "right", no_wrap=True)
    for name, params, runs in results:
        for i, (label, value, fmt) in enumerate(ROWS):
            v, o, h = value(runs["vLLM"]), value(runs["hf"]), value(runs["HF"])
            ratios = [f"{v / x:.2f}x" if x else "-" for x in (o, h)]
            table.add_row(name if i == 0 else "", f"{params / 1e6:.2f}M" if i == 0 else "", label, fmt.format(v),
                          fmt.format(o), fmt.format(h), *ratios, end_section=i == len(ROWS) - 1)
    Console(width=1000).print(table)
    for name, params, _ in results:
        print(f"{name}: {params:,} parameters")


# ----------------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="params.yaml")
    ap.add_argument("--env", default="array", help="environment whose tasks are rolled out")
    ap.add_argument("--rollouts", type=int, default=32, help="rollouts per run (rollout.group_size per task)")
    ap.add_argument("--max-steps", type=int, default=10, help="H: actions per rollout")
    ap.add_argument("--max-summaries", type=int, default=0, help="S: summaries per rollout")
    ap.add_argument("--working-context", type=int, default=768, help="W (the trigger fires at trigger_frac × W)")
    ap.add_argument("--max-model-len", type=int, default=1024, help="the engine's (and the loop's) sequence limit")
    ap.add_argument("--models", default="tiny,25m", help="comma-separated subset of tiny,25m")
    ap.add_argument("--tiny-model", default="", help="a model folder to use as the tiny model (e.g. the SFT model; its "
                                                      "tokenizer is used for both models); default: random init")
    add_run_args(ap, workdir_help="scratch folder for the built models (default: a temporary one)",
                 quick_help="smoke run: 4 rollouts, 3 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.rollouts, args.max_steps = 4, 3
    return args


def prepare_models(cfg: Any, args: argparse.Namespace, workdir: Path) -> tuple[Any, list[tuple[str, Path, int]]]:
    """The tokenizer and the (name, folder, parameter count) of each model to run."""
    from supo.models import load_tokenizer

    if args.tiny_model:
        tiny_dir = Path(args.tiny_model)
        tok = load_tokenizer(tiny_dir)
    else:
        tiny_dir = workdir / "tiny"
        tok = build_profile_tokenizer(cfg, workdir / "tokenizer")
    models = []
    for name in args.models.split(","):
        if name == "tiny":
            params = (count_parameters(tiny_dir) if args.tiny_model
                      else build_random_model(tok, cfg, tiny_dir, max_len=args.max_model_len))
            models.append(("tiny" + (" (given)" if args.tiny_model else " (random)"), tiny_dir, params))
        elif name == "25m":
            params = build_random_model(tok, cfg, workdir / "25m", max_len=args.max_model_len, **MEDIUM_MODEL)
            models.append(("25M (random)", workdir / "25m", params))
        else:
            raise SystemExit(f"--models: unknown model {name!r}; choose from tiny, 25m")
    return tok, models


def run(args: argparse.Namespace, workdir: Path) -> list[tuple[str, int, dict[str, EngineRun]]]:
    cfg = load_profile(args.config, args.env, args.set, {
        "budget.max_steps": args.max_steps, "engine.max_model_len": args.max_model_len,
        "model.max_position_embeddings": max(args.max_model_len, 1024)})
    tok, models = prepare_models(cfg, args, workdir)
    work = build_workload(cfg, tok, models[0][1], args)
    results = []
    for name, model_dir, params in models:
        print(f"{name}: {params:,} parameters; timing HF, hf, then vLLM ...", flush=True)
        results.append((name, params, run_model(model_dir, cfg, work)))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    threads = set_threads(args.threads)
    print(f"at start: {load_note()}; torch threads {threads}", flush=True)
    if args.workdir:
        results = run(args, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="supo-bench-") as tmp:
            results = run(args, Path(tmp))
    print_table(results, args)
    print(f"at end: {load_note()}")
    print(f"benchmark wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
