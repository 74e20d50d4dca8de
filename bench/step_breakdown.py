"""Where one training step's time goes, before and after this release's engineering, side by side in one process.

All variants do the same work: one trajectory of ``--steps`` RL steps runs from the profile's warm start with this
release's code paths, and the previous release's paths are timed on exactly its work — an unpacked trainer runs every
step's update on the same samples, and a second engine at vLLM's default block replays each step's recorded
``generate`` calls under the weights they ran under, right after them (timing separate runs instead compares different
rollouts: the block size changes the engine's floats, so the draws, and two trajectories drift apart in length within
a few steps). In-process vLLM engines and in-process trainers (no Ray: the parts are timed where they run); the step
is cut into its parts:

* **engine** — inside the engine's ``generate`` calls (prefill + decode + sampling);
* **env** — inside the environments' ``step``;
* **loop** — the rest of the rollout: templates, segment bookkeeping, decoding actions;
* **advantages** — group statistics and the broadcast onto segments;
* **update** — the policy update (forward and backward, padding included; ``fwd tok`` counts the token positions the
  model computed, ``trigger tok`` the share of the unpacked tokens that trigger-action samples hold);
* **sync** — pushing the new weights into the engine.

Variants (``--variants``, comma-separated):

* ``before``: the previous release's code paths — vLLM's default KV block (128 tokens on CPU, so each turn recomputes
  up to a block of its context) and the unpacked update (every sample its own padded row, logits at every position);
* ``engine``: ``before`` with the profile's ``engine.block_size``;
* ``update``: ``before`` with the packed update (``train.packing``);
* ``after``: both.

Under the table: the engine's floor — engine steps per training step (``LLMEngine.step`` calls), milliseconds per
engine step, and the longest rollout's own chain (the sum over its turns of its generated tokens: a turn's prefill
step emits its first token), below which no schedule that keeps each rollout's turns in order can go — and, with
``before``, the ratio a step would reach if every part but the engine took no time.

No variant measures ``kl_to_init`` (its extra forward pass is a metric, not work the old code did); it is timed
on its own and printed under the table. The first ``--skip`` steps are dropped (engine warm-up). The ratio columns
are ``before`` / variant. Usage (needs the profile's prepared data and warm start: ``dvc repro sft@array``):

    python bench/step_breakdown.py [--env array] [--steps 5] [--skip 1] [--variants before,after] [--threads 2]
        [--config params.yaml] [-S key=value ...] [--grid] [--quick]

``--grid`` instead times whole steps of the real Ray training loop over (rollout workers, trainer ranks) in
{(1,1), (2,1), (1,2), (2,2)}, and (1,1) with ``train.overlap`` (the next step's rollouts sampled during the
update). ``--quick``: 2 steps, 1 skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_note, load_profile, set_threads  # noqa: E402
from tqdm import tqdm  # noqa: E402

from supo.step import StepHook  # noqa: E402

VARIANTS = {"before": (False, False), "engine": (True, False), "update": (False, True), "after": (True, True)}
PARTS = ("engine", "env", "loop", "advantages", "update", "sync")


def _engine_config(cfg, small_block: bool):
    return dataclasses.replace(cfg.engine, block_size=cfg.engine.block_size if small_block else 0)


def _trainer(cfg, rt, packing: bool, kl_to_init: bool = False):
    from supo.models import load_policy
    from supo.trainer.policy_trainer import PolicyTrainer

    train = dataclasses.replace(cfg.train, packing=packing, log_kl_to_init=kl_to_init)
    return PolicyTrainer(load_policy(cfg.paths.sft), train, rt.tokenizer.pad_token_id, rt.budgets.trainer_needed,
                         cfg.seed, temperature=cfg.rollout.temperature)


class _Recorder:
    """Instruments the trajectory's engine and environments: per step, the ``generate`` calls (for the replay), the
    seconds inside the environments' ``step``, the engine steps (``LLMEngine.step`` calls) and, per rollout, the
    engine steps it needs in a row (its turns' generated tokens: a turn's prefill step emits its first token)."""

    def __init__(self, engine, make_env) -> None:
        self.engine, self._make_env = engine, make_env
        self.calls: list[list] = []  # per step: the requests of each generate call
        self.env_seconds, self.engine_steps, self.chain = 0.0, 0, {}
        self._generate = engine.generate
        engine.generate = self._recorded
        llm_engine = engine.llm.llm_engine  # LLM.generate drives it one engine step at a time
        self._engine_step = llm_engine.step
        llm_engine.step = self._counted_step

    def start_step(self) -> None:
        self.calls.append([])
        self.env_seconds, self.engine_steps, self.engine.generate_seconds = 0.0, 0, 0.0
        self.chain.clear()

    def _recorded(self, requests):
        self.calls[-1].append(list(requests))
        results = self._generate(requests)
        for req, res in zip(requests, results):
            self.chain[req.key] = self.chain.get(req.key, 0) + max(1, len(res.token_ids))
        return results

    def _counted_step(self, *args, **kwargs):
        self.engine_steps += 1
        return self._engine_step(*args, **kwargs)

    def make_env(self, task):
        env = self._make_env(task)
        step = env.step

        def timed(action):
            t0 = time.perf_counter()
            try:
                return step(action)
            finally:
                self.env_seconds += time.perf_counter() - t0

        env.step = timed
        return env


class _Paired(StepHook):
    """The previous release's paths on each step's very work, outside the step's phase times: the replay engine (vLLM's
    default block) re-runs the step's recorded calls right after its rollouts, under the weights they ran under; the
    unpacked trainer trains the same samples right after the update."""

    def __init__(self, replay, recorder: _Recorder, packed, unpacked) -> None:
        self.replay, self.recorder, self.packed, self.unpacked = replay, recorder, packed, unpacked
        self.engine_default: float | None = None
        self.stats, self.update_seconds = None, 0.0

    def on_rollouts(self, step, rollouts) -> None:
        self.engine_default = None
        if self.replay is not None:
            self.replay.generate_seconds = 0.0
            for requests in self.recorder.calls[step]:
                self.replay.generate(requests)
            self.engine_default = self.replay.generate_seconds

    def on_update(self, step, samples, stats) -> None:
        if self.replay is not None:
            self.replay.push_weights(self.packed.state_dict())
        t0 = time.perf_counter()
        self.stats = self.unpacked.update(samples)
        self.update_seconds = time.perf_counter() - t0


def run_paired(cfg, names: list[str], steps: int, skip: int) -> dict[str, dict]:
    """Median seconds per step of every part for each variant, all on the same work.

    One trajectory runs with the profile's code paths (small block, packed update), each step through
    :func:`supo.step.run_step` (the step the training loop runs, in one process). Each step's update is also run
    by an unpacked trainer on the same samples (the same gradients: it tracks the packed one to rounding, and its
    weights are never served), and every ``generate`` call is recorded; right after each step's rollouts a second
    engine at vLLM's default block replays that step's calls under the same weights (adjacent in time, so a drift of
    the machine's speed does not land on one variant). Every variant thus generates from the same contexts and trains
    the same samples; env, loop, advantages and sync are shared.
    """
    import torch

    from supo.data import read_tasks, split_path
    from supo.engines.vllm_engine import VLLMPolicy
    from supo.envs import get_env_spec
    from supo.runtime import build_runtime
    from supo.step import LocalLearner, LocalRollouts, StepContext, run_step

    tasks = read_tasks(split_path(cfg.paths.data, "train"))
    rt = build_runtime(cfg, cfg.paths.sft, tasks, max_summaries=cfg.train_max_summaries,
                       working_context=cfg.budget.working_context)
    threads = torch.get_num_threads()
    engine = VLLMPolicy(cfg.paths.sft, _engine_config(cfg, True), seed=cfg.seed, temperature=cfg.rollout.temperature)
    replay = None
    if any(not VARIANTS[n][0] for n in names):
        replay = VLLMPolicy(cfg.paths.sft, _engine_config(cfg, False), seed=cfg.seed,
                            temperature=cfg.rollout.temperature)
    torch.set_num_threads(threads)
    packed, unpacked = _trainer(cfg, rt, True), _trainer(cfg, rt, False)
    rec = _Recorder(engine, get_env_spec(cfg.env.name)["make_env"])
    paired = _Paired(replay, rec, packed, unpacked)
    ctx = StepContext(cfg, tasks, rt.settings, LocalRollouts(engine, rt, rec.make_env), LocalLearner(packed, engine))
    rows = []
    for s in tqdm(range(steps), desc="trajectory (small block, packed)", unit="step"):
        rec.start_step()
        res = run_step(ctx, s, hooks=[paired])
        sec, n_tokens = res.seconds, sum(x.length for x in res.samples)
        trigger = sum(x.length for r in res.rollouts for x in r.segments if x.kind == "trigger_action")
        rows.append({"engine_small": engine.generate_seconds, "engine_default": paired.engine_default,
                     "env": rec.env_seconds, "loop": sec["rollout"] - engine.generate_seconds - rec.env_seconds,
                     "advantages": sec["advantages"], "update_packed": sec["update"],
                     "update_unpacked": paired.update_seconds, "sync": sec["sync"],
                     "fwd_packed": res.stats.forward_tokens, "fwd_unpacked": paired.stats.forward_tokens,
                     "rollouts": len(res.rollouts), "unpacked_tokens": n_tokens,
                     "trigger_share": trigger / max(1, n_tokens), "engine_steps": rec.engine_steps,
                     "longest_chain": max(rec.chain.values(), default=0)})
    # the kl_to_init measurement (a metric the variants leave out), on the last step's samples
    ref = _trainer(cfg, rt, True, kl_to_init=True)
    t0 = time.perf_counter()
    ref.kl_to_init(res.samples)
    kl_seconds = time.perf_counter() - t0
    del engine, replay
    return _medians(rows[skip:] or rows, names, kl_seconds)


def _medians(kept: list[dict], names: list[str], kl_seconds: float) -> dict[str, dict]:
    """Each variant's median per part over the kept steps (its engine and update columns, the shared rest)."""
    results = {}
    for name in names:
        small_block, packing = VARIANTS[name]
        per_step = []
        for r in kept:
            row = {"engine": r["engine_small" if small_block else "engine_default"],
                   "update": r["update_packed" if packing else "update_unpacked"],
                   "fwd_tokens": r["fwd_packed" if packing else "fwd_unpacked"],
                   **{k: r[k] for k in ("env", "loop", "advantages", "sync", "rollouts", "unpacked_tokens",
                                        "trigger_share")}}
            row["step"] = sum(row[p] for p in PARTS)
            per_step.append(row)
        med = {k: statistics.median(r[k] for r in per_step) for k in per_step[0]}
        med["kl_seconds"] = kl_seconds if name == "after" else None
        if small_block:  # the trajectory's engine: its steps and the longest rollout's own chain of them
            med["engine_steps"] = statistics.median(r["engine_steps"] for r in kept)
            med["longest_chain"] = statistics.median(r["longest_chain"] for r in kept)
        results[name] = med
    return results


def print_table(results: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    base = results.get("before")
    table = Table(title="median seconds per step (share of the step); ratio = before / variant")
    table.add_column("part")
    for name in results:
        table.add_column(name, justify="right")
        if base is not None and name != "before":
            table.add_column(f"ratio {name}", justify="right")

    def cells(key, fmt):
        out = []
        for name, r in results.items():
            share = f" ({r[key] / r['step']:.0%})" if key in PARTS else ""
            out.append(fmt(r[key]) + share)
            if base is not None and name != "before":
                out.append(f"{base[key] / r[key]:.2f}x" if r[key] else "-")
        return out

    for part in (*PARTS, "step"):
        table.add_row(part, *cells(part, lambda v: f"{v:.2f}"))
    per_rollout = {n: r["step"] / r["rollouts"] for n, r in results.items()}
    row = []
    for name in results:
        row.append(f"{per_rollout[name] * 1000:.0f} ms")
        if base is not None and name != "before":
            row.append(f"{per_rollout['before'] / per_rollout[name]:.2f}x")
    table.add_row("per trained rollout", *row)
    for key, label in (("rollouts", "rollouts per step"), ("unpacked_tokens", "unpacked tokens"),
                       ("fwd_tokens", "fwd tok (update)"), ("trigger_share", "trigger tok share")):
        fmt = (lambda v: f"{v:.0%}") if key == "trigger_share" else (lambda v: f"{v:.0f}")
        table.add_row(label, *cells(key, fmt))
    Console().print(table)
    kl = results.get("after", {}).get("kl_seconds")
    if kl is not None:
        print(f"kl_to_init (one forward of the initial policy over a step's packed samples): {kl:.2f} s")
    fast = next((r for r in results.values() if r.get("engine_steps")), None)
    if fast is not None:
        steps, chain = fast["engine_steps"], fast["longest_chain"]
        print(f"engine floor: {steps:.0f} engine steps per training step, {1000 * fast['engine'] / steps:.1f} ms each; "
              f"the longest rollout's own chain of turns (its generated tokens, one engine step each) needs "
              f"{chain:.0f}, so no schedule that keeps each rollout's turns in order saves more than "
              f"{max(0.0, 1 - chain / steps):.0%} of the engine steps")
        if base is not None:
            print(f"with every part but the engine free, a step would be {base['step'] / fast['engine']:.2f}x "
                  f"cheaper than before")


def run_grid(args) -> None:
    """Whole steps of the real Ray training loop over (rollout workers, trainer ranks)."""
    from rich.console import Console
    from rich.table import Table

    from supo.distributed import init_ray
    from supo.train_loop import train

    init_ray(num_cpus=4)
    rows = []
    for workers, world, overlap in [(1, 1, False), (2, 1, False), (1, 2, False), (2, 2, False), (1, 1, True)]:
        cfg = load_profile(args.config, args.env, args.set, {"train.steps": args.steps, "rollout.num_workers": workers,
                                                             "trainer.world_size": world, "train.checkpoint_every": 0,
                                                             "train.overlap": overlap})
        with tempfile.TemporaryDirectory() as tmp:
            cfg.paths.metrics = tmp
            res = train(cfg, init=cfg.paths.sft, out=f"{tmp}/ckpt", arm=f"bench-{workers}-{world}", log=lambda *_: None)
        hist = res["history"][args.skip:]
        med = lambda k: statistics.median(h[k] for h in hist)  # noqa: E731
        rows.append((workers, world, overlap, med("rollout_seconds"), med("train_seconds"),
                     med("weight_sync_seconds"), med("step_seconds")))
    table = Table(title=f"Ray training loop: per-step seconds (median of steps {args.skip}..{args.steps - 1}); with "
                        "overlap, rollout and train run at once and sync waits for the next step's rollouts")
    for col in ("workers", "world_size", "overlap", "rollout s", "train s", "sync s", "step s", "ratio"):
        table.add_column(col, justify="right")
    for w, r, o, ro, tr, sy, st in rows:
        table.add_row(str(w), str(r), "yes" if o else "no", f"{ro:.2f}", f"{tr:.2f}", f"{sy:.3f}", f"{st:.2f}",
                      f"{rows[0][-1] / st:.2f}x")
    Console().print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="params.yaml")
    ap.add_argument("--env", default="array", help="environment (its prepared data and warm start are used)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--skip", type=int, default=1)
    ap.add_argument("--variants", default="before,after", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (engine and trainer alternate)")
    ap.add_argument("-S", "--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--grid", action="store_true", help="the Ray (workers, ranks) grid instead of the variants")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 steps, 1 skipped")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.skip = 2, 1
    if args.grid:
        run_grid(args)
        return
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    set_threads(args.threads)
    cfg = load_profile(args.config, args.env, args.set)
    print(f"{args.env}: {cfg.rollout.tasks_per_step} tasks x {cfg.rollout.group_size} rollouts per step, "
          f"W={cfg.budget.working_context}, S={cfg.train_max_summaries}; {load_note()}")
    results = run_paired(cfg, names, args.steps, args.skip)
    print_table(results)


if __name__ == "__main__":
    main()
