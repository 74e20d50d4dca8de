"""The numbers of a SmolLM2 run (scripts/run_smollm2_cpu.sh, scripts/gpu_smollm2.sh) in one page: ``RUN/summary.md``
and ``summary.json``.

Usage: ``python scripts/smollm2_summary.py RUN ENV...`` (RUN = runs/smollm2-cpu or runs/smollm2-gpu). Everything is
read from the stage outputs: each stage's wall time and peak memory, CPU and (where measured) GPU
(``RUN/stages.jsonl``), test success before training (the imported model as it is, ``RUN/base_evals/<env>``), after
the warm start (label ``sft``) and after RL (each arm) at every S_eval (``RUN/evals/<env>/seed0/<label>/s<N>/``), each
with its 95 % Wilson interval over the rollouts; the warm start's val success where it was measured
(``RUN/val_evals/<env>``); and per arm the rollout and training throughput of its steps and its training reward, first
and last three steps (``RUN/checkpoints/<env>/seed0/<arm>/train_metrics.json``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from supo.layout import EVAL_METRICS_FILE, TRAIN_METRICS_FILE, metrics_file, seed_dir


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def sweep(folder: Path) -> dict[int, dict]:
    """``{S_eval: metrics}`` of an eval folder holding ``s<N>/metrics.json`` (or one run's ``metrics.json``)."""
    out = {}
    for sub in sorted(folder.glob(f"s*/{EVAL_METRICS_FILE}")):
        out[int(sub.parent.name[1:])] = json.loads(sub.read_text())
    if not out and (folder / EVAL_METRICS_FILE).is_file():
        m = json.loads((folder / EVAL_METRICS_FILE).read_text())
        out[int(m.get("s_eval", 0))] = m
    return out


def wilson(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a success rate over ``n`` rollouts."""
    if n <= 0:
        return float("nan"), float("nan")
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def cell(m: dict) -> dict:
    """A success cell: rate, rollouts and the Wilson interval."""
    rate, n = float(m["success_rate"]), int(m.get("num_rollouts", 0))
    low, high = wilson(rate, n)
    return {"success": rate, "n": n, "low": low, "high": high}


def throughput(history: list[dict]) -> dict[str, float]:
    total = lambda key: sum(float(h.get(key, 0.0)) for h in history)  # noqa: E731
    return {
        "steps": len(history),
        "rollout_tokens_per_s": total("tokens_generated") / max(total("rollout_seconds"), 1e-9),
        "train_forward_tokens_per_s": total("forward_tokens") / max(total("train_seconds"), 1e-9),
        "trained_tokens_per_s": total("train_tokens") / max(total("train_seconds"), 1e-9),
        "weight_sync_seconds": total("weight_sync_seconds") / max(len(history), 1),
        "step_seconds": total("step_seconds") / max(len(history), 1),
        "mean_reward_first": float(history[0]["mean_reward"]) if history else 0.0,
        "mean_reward_last": float(history[-1]["mean_reward"]) if history else 0.0,
        "reward_first3": sum(float(h["mean_reward"]) for h in history[:3]) / max(1, len(history[:3])),
        "reward_last3": sum(float(h["mean_reward"]) for h in history[-3:]) / max(1, len(history[-3:])),
    }


def collect(run: Path, envs: list[str]) -> dict:
    stages = [json.loads(line) for line in (run / "stages.jsonl").read_text().splitlines() if line.strip()] \
        if (run / "stages.jsonl").is_file() else []
    out: dict = {"stages": stages, "envs": {}}
    for env in envs:
        evals = run / "evals" / env / seed_dir(0)
        success = {"base": sweep(run / "base_evals" / env)}
        for folder in sorted(p for p in evals.glob("*") if p.is_dir()) if evals.is_dir() else []:
            success[folder.name] = sweep(folder)
        train = {}
        for ckpt in sorted((run / "checkpoints" / env / seed_dir(0)).glob(f"*/{TRAIN_METRICS_FILE}")):
            train[ckpt.parent.name] = throughput(json.loads(ckpt.read_text())["history"])
        val = sweep(run / "val_evals" / env)
        out["envs"][env] = {"success": {label: {s: m["success_rate"] for s, m in sw.items()}
                                        for label, sw in success.items()},
                            "cells": {label: {s: cell(m) for s, m in sw.items()} for label, sw in success.items()},
                            "val_warm_start": {s: cell(m) for s, m in val.items()},
                            "format_miss": {label: {s: m.get("tool_call_format_miss_rate") for s, m in sw.items()}
                                            for label, sw in success.items()},
                            "train": train, "sft": _json(metrics_file(run / "metrics" / env, "sft")),
                            "prepare": _json(metrics_file(run / "metrics" / env, "prepare"))}
    return out


def _gpu(stage: dict) -> str:
    return f"{stage['gpu_peak_gib']:.2f}" if "gpu_peak_gib" in stage else "–"


def render(data: dict, title: str) -> str:
    lines = [f"# SmolLM2-135M-Instruct: {title}", ""]
    if data["stages"]:
        total = sum(s["seconds"] for s in data["stages"])
        lines += ["## Stages", "", "| stage | minutes | peak memory (GiB, PSS of the process tree) | GPU memory in use "
                  "(GiB, peak) |", "|---|---|---|---|"]
        lines += [f"| {s['stage']} | {s['seconds'] / 60:.1f} | {s['peak_gib']:.2f} | {_gpu(s)} |"
                  for s in data["stages"]]
        lines += [f"| **total** | **{total / 60:.1f}** | {max(s['peak_gib'] for s in data['stages']):.2f} (max) | |",
                  ""]
    for env, d in data["envs"].items():
        labels = [lb for lb in ["base", "sft", *sorted(k for k in d["success"] if k not in ("base", "sft"))]
                  if d["success"].get(lb)]
        s_values = sorted({s for lb in labels for s in d["success"][lb]})
        lines += [f"## {env}: test success (pass@1, 95 % Wilson interval over the rollouts)", "",
                  "| S_eval | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for s in s_values:
            cells = [d["cells"].get(lb, {}).get(s) for lb in labels]
            lines.append(f"| {s} | " + " | ".join(f"{c['success']:.3f} [{c['low']:.2f}, {c['high']:.2f}] (n={c['n']})"
                                                  if c else "–" for c in cells) + " |")
        for s, c in d.get("val_warm_start", {}).items():
            lines += ["", f"Warm start on val (S_eval = {s}): {c['success']:.3f} [{c['low']:.2f}, {c['high']:.2f}] "
                          f"(n={c['n']}) — the headroom wanted is 0.20-0.60"]
        misses = {lb: max((v or 0.0) for v in d["format_miss"][lb].values()) for lb in labels}
        lines += ["", "Tool-call format misses (share of actions, worst S_eval): "
                  + ", ".join(f"{lb} {v:.2f}" for lb, v in misses.items()), ""]
        if d["train"]:
            lines += ["| arm | RL steps | rollout tok/s (generated) | train tok/s (forward, packed) | trained tok/s "
                      "(loss tokens) | weight sync s | step s | reward first → last | reward first 3 → last 3 |",
                      "|---" * 9 + "|"]
            for arm, t in d["train"].items():
                lines.append(f"| {arm} | {t['steps']} | {t['rollout_tokens_per_s']:.1f} | "
                             f"{t['train_forward_tokens_per_s']:.1f} | {t['trained_tokens_per_s']:.1f} | "
                             f"{t['weight_sync_seconds']:.1f} | {t['step_seconds']:.1f} | "
                             f"{t['mean_reward_first']:.3f} → {t['mean_reward_last']:.3f} | "
                             f"{t['reward_first3']:.3f} → {t['reward_last3']:.3f} |")
            lines.append("")
        if d["sft"]:
            lines += [f"SFT: {d['sft'].get('sft_steps')} steps on {d['sft'].get('sft_rows')} rows in "
                      f"{d['sft'].get('sft_seconds', 0):.0f} s, final loss (EMA) {d['sft'].get('sft_final_loss_ema', 0):.3f}",
                      ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    run, envs = Path(argv[0]), argv[1:]
    data = collect(run, envs)
    (run / "summary.json").write_text(json.dumps(data, indent=1) + "\n")
    text = render(data, "the smollm2-gpu profile (engine hf, trainer local)" if "gpu" in run.name
                  else "the smollm2-cpu profile")
    (run / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
