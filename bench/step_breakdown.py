"""Per-step time, broken into rollout, train and weight sync, for (rollout workers, trainer world size) in
{(1,1), (2,1), (1,2), (2,2)} on the tiny profile — side by side in one process, with ratios against (1,1).

Needs the prepared data and the warm-started model of the tiny profile (`dvc repro sft@array`, or
`supo-cli prepare --env array && supo-cli sft --env array`). Usage:

    python bench/step_breakdown.py [--env array] [--steps 6] [--skip 1] [--config params.yaml] [-S key=value ...]

The first ``--skip`` steps of each configuration are dropped (engine warm-up). Each configuration writes its
checkpoints under a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

GRID = [(1, 1), (2, 1), (1, 2), (2, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="params.yaml")
    ap.add_argument("--env", default="array", help="environment (its prepared data and warm start are used)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--skip", type=int, default=1)
    ap.add_argument("-S", "--set", action="append", default=[])
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from supo.config import load_config, parse_override
    from supo.distributed import init_ray
    from supo.train_loop import train

    init_ray(num_cpus=4)
    rows = []
    for workers, world in GRID:
        overrides = dict(parse_override(o) for o in args.set)
        overrides.update({"train.steps": args.steps, "rollout.num_workers": workers, "trainer.world_size": world,
                          "train.checkpoint_every": 0})
        cfg = load_config(args.config, overrides, env=args.env)
        with tempfile.TemporaryDirectory() as tmp:
            cfg.paths.metrics = tmp
            t0 = time.perf_counter()
            res = train(cfg, init=cfg.paths.sft, out=f"{tmp}/ckpt", arm=f"bench-{workers}-{world}", log=lambda *_: None)
            wall = time.perf_counter() - t0
        hist = res["history"][args.skip:]
        med = lambda k: statistics.median(h[k] for h in hist)  # noqa: E731
        rows.append({"workers": workers, "world": world, "rollout": med("rollout_seconds"),
                     "train": med("train_seconds"), "sync": med("weight_sync_seconds"), "step": med("step_seconds"),
                     "tok_s": med("engine_tokens_per_second"), "wall": wall})
    base = rows[0]
    table = Table(title=f"per-step seconds (median of steps {args.skip}..{args.steps - 1}); ratio = (1,1) / config")
    for col in ("workers", "world_size", "rollout s", "train s", "sync s", "step s", "step ratio", "rollout tok/s",
                "total wall s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["workers"]), str(r["world"]), f"{r['rollout']:.2f}", f"{r['train']:.2f}",
                      f"{r['sync']:.3f}", f"{r['step']:.2f}", f"{base['step'] / r['step']:.2f}x", f"{r['tok_s']:.0f}",
                      f"{r['wall']:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
