"""What common random numbers cost the engine: per-request sampling seeds with chunked prefill off (the product's
engine) against vLLM's defaults (chunked prefill on, one engine-wide generator), on the same work.

One trajectory of ``run_rollouts`` (array tasks, the profile's loop settings, a randomly initialised model of the
profile's size, or ``--model DIR``) runs on the seeded engine; every ``generate`` call it makes is replayed right after
on the unseeded engine with the very same requests (contexts and token budgets), so both engines prefill the same
contexts and decode about the same tokens (a random model rarely samples its end token early; the table counts both).
Both engines live in this process with ``--threads`` torch threads and get one untimed warm-up call over every
task's prompt (then a prefix-cache reset); calls alternate, so the machine's drift falls on both alike. Prints seconds, generated tokens, tokens per second and the seeded / unseeded ratio. Usage:

    python bench/seeded_sampling.py [--rollouts 64] [--max-steps 12] [--model DIR] [--threads 1] [-S key=value]
        [--config params.yaml] [--env array] [--workdir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_run_args, build_profile_tokenizer, build_random_model, engine_config, load_note, \
    load_profile, set_threads  # noqa: E402


class Replayed:
    """The seeded engine, timed; each call replayed on the unseeded engine with the same requests, timed too."""

    def __init__(self, seeded, unseeded) -> None:
        self.engines = {"seeded": seeded, "unseeded": unseeded}
        self.seconds = {k: 0.0 for k in self.engines}
        self.tokens = {k: 0 for k in self.engines}
        self.calls = 0

    def _timed(self, name, requests):
        t0 = time.perf_counter()
        out = self.engines[name].generate(requests)
        self.seconds[name] += time.perf_counter() - t0
        self.tokens[name] += sum(len(o.token_ids) for o in out)
        return out

    def generate(self, requests):
        self.calls += 1
        out = self._timed("seeded", requests)
        self._timed("unseeded", requests)
        return out

    def on_step(self, key, action, observation):
        pass

    def on_drop(self, key):
        pass


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=12, help="H: actions per rollout (a random model never answers)")
    ap.add_argument("--model", default="", help="a model folder (default: a random model of the profile's size)")
    ap.add_argument("--config", default="params.yaml")
    ap.add_argument("--env", default="array")
    add_run_args(ap, workdir_help="scratch folder for the random model (default: a temporary folder)",
                 quick_help="smoke run: 8 rollouts, 3 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.rollouts, args.max_steps = 8, 3
    import dataclasses

    from supo.contracts import GenRequest
    from supo.engines.vllm_engine import VLLMPolicy
    from supo.rollout.agent_loop import run_rollouts
    from supo.runtime import build_runtime

    cfg = load_profile(args.config, args.env, args.set)
    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.workdir or None) as tmp:
        model = Path(args.model) if args.model else Path(tmp) / "model"
        if not args.model:
            tok = build_profile_tokenizer(cfg, Path(tmp) / "tok")
            build_random_model(tok, cfg, model, max_len=cfg.engine.max_model_len)
        tasks = cfg.env_spec.build_split(cfg, "test")[: args.rollouts]
        rt = build_runtime(cfg, model, tasks, max_summaries=cfg.budget.max_summaries,
                           working_context=cfg.budget.working_context)
        settings = dataclasses.replace(rt.settings, max_steps=args.max_steps)
        ecfg = engine_config(cfg, cfg.engine.max_model_len)
        kw = dict(seed=cfg.seed, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p)
        policy = Replayed(VLLMPolicy(model, ecfg, seeded=True, **kw), VLLMPolicy(model, ecfg, seeded=False, **kw))
        warm = [GenRequest(k, rt.templates.prompt_ids(rt.tokenizer, t), "action", 4, k) for k, t in enumerate(tasks)]
        for engine in policy.engines.values():  # first calls pay one-off set-up: not timed
            engine.generate(warm)
            engine.llm.reset_prefix_cache()
        items = [(t, f"{t.id}@0", 0) for t in tasks]
        run_rollouts(items, policy, rt.tokenizer, rt.templates, settings, cfg.env_spec.make_env, seed=cfg.seed)
    rows = {k: {"seconds": policy.seconds[k], "tokens": policy.tokens[k],
                "tokens_per_second": policy.tokens[k] / max(policy.seconds[k], 1e-9)} for k in policy.engines}
    ratio = rows["unseeded"]["seconds"] / max(rows["seeded"]["seconds"], 1e-9)
    print(f"{policy.calls} generate calls, {args.rollouts} rollouts, {threads} torch thread(s); {load_note()}")
    print(f"{'engine':<46}{'seconds':>9}{'tokens':>9}{'tokens/s':>10}")
    names = {"unseeded": "unseeded, chunked prefill (vLLM's defaults)",
             "seeded": "per-request seeds, no chunked prefill (supo)"}
    for k in ("unseeded", "seeded"):
        r = rows[k]
        print(f"{names[k]:<46}{r['seconds']:>9.2f}{r['tokens']:>9d}{r['tokens_per_second']:>10.0f}")
    print(f"speed of the seeded engine relative to the unseeded one: {ratio:.2f}x (time unseeded / time seeded)")
    return {"rows": rows, "ratio": ratio, "calls": policy.calls}


if __name__ == "__main__":
    main()
