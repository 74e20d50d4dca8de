"""The numbers of a smollm2-cpu run (scripts/run_smollm2_cpu.sh) in one page: ``RUN/summary.md`` and ``summary.json``.

Usage: ``python scripts/smollm2_summary.py RUN ENV...`` (RUN = runs/smollm2-cpu). Everything is read from the stage
outputs: each stage's wall time and peak memory (``RUN/stages.jsonl``), test success before training (the imported
model as it is, ``RUN/base_evals/<env>``), after the warm start (label ``sft``) and after RL (each arm) at every S_eval
(``RUN/evals/<env>/seed0/<label>/s<N>/metrics.json``), and per arm the rollout and training throughput of its steps
(``RUN/checkpoints/<env>/seed0/<arm>/train_metrics.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from supo.layout import EVAL_METRICS_FILE, TRAIN_METRICS_FILE, metrics_file, seed_dir


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def sweep(folder: Path) -> dict[int, dict]:
    """``{S_eval: metrics}`` of an eval folder holding ``s<N>/metrics.json``."""
    out = {}
    for sub in sorted(folder.glob(f"s*/{EVAL_METRICS_FILE}")):
        out[int(sub.parent.name[1:])] = json.loads(sub.read_text())
    return out


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
        out["envs"][env] = {"success": {label: {s: m["success_rate"] for s, m in sw.items()}
                                        for label, sw in success.items()},
                            "format_miss": {label: {s: m.get("tool_call_format_miss_rate") for s, m in sw.items()}
                                            for label, sw in success.items()},
                            "train": train, "sft": _json(metrics_file(run / "metrics" / env, "sft")),
                            "prepare": _json(metrics_file(run / "metrics" / env, "prepare"))}
    return out


def render(data: dict) -> str:
    lines = ["# SmolLM2-135M-Instruct on CPU: the smollm2-cpu profile", ""]
    if data["stages"]:
        total = sum(s["seconds"] for s in data["stages"])
        lines += ["## Stages", "", "| stage | minutes | peak memory (GiB, PSS of the process tree) |", "|---|---|---|"]
        lines += [f"| {s['stage']} | {s['seconds'] / 60:.1f} | {s['peak_gib']:.2f} |" for s in data["stages"]]
        lines += [f"| **total** | **{total / 60:.1f}** | {max(s['peak_gib'] for s in data['stages']):.2f} (max) |",
                  ""]
    for env, d in data["envs"].items():
        labels = [lb for lb in ["base", "sft", *sorted(k for k in d["success"] if k not in ("base", "sft"))]
                  if d["success"].get(lb)]
        s_values = sorted({s for lb in labels for s in d["success"][lb]})
        lines += [f"## {env}: test success (pass@1, temperature 1)", "",
                  "| S_eval | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for s in s_values:
            lines.append(f"| {s} | " + " | ".join(f"{d['success'][lb].get(s, float('nan')):.3f}" for lb in labels)
                         + " |")
        misses = {lb: max((v or 0.0) for v in d["format_miss"][lb].values()) for lb in labels}
        lines += ["", "Tool-call format misses (share of actions, worst S_eval): "
                  + ", ".join(f"{lb} {v:.2f}" for lb, v in misses.items()), ""]
        if d["train"]:
            lines += ["| arm | RL steps | rollout tok/s (generated) | train tok/s (forward, packed) | trained tok/s "
                      "(loss tokens) | weight sync s | step s | reward first → last |", "|---" * 8 + "|"]
            for arm, t in d["train"].items():
                lines.append(f"| {arm} | {t['steps']} | {t['rollout_tokens_per_s']:.1f} | "
                             f"{t['train_forward_tokens_per_s']:.1f} | {t['trained_tokens_per_s']:.1f} | "
                             f"{t['weight_sync_seconds']:.1f} | {t['step_seconds']:.0f} | "
                             f"{t['mean_reward_first']:.3f} → {t['mean_reward_last']:.3f} |")
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
    text = render(data)
    (run / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
