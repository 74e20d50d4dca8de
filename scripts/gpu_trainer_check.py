"""The trainer's CUDA paths checked against the CPU, on one real RL step's samples.

Two modes:

* ``dump`` (here, on the CPU machine; needs the profile's warm start, ``dvc repro sft@array``, and vLLM): runs three
  RL steps of the tiny profile from its warm start and writes every step's training samples, the trainer settings and
  a copy of the warm start to ``--dir`` (default ``.gpucheck``, about 6 MB);
* ``check`` (on a CUDA machine; needs torch and transformers only, no vLLM, no Ray): one update of each trainer from
  the warm start on the same samples, and the differences of the updated weights:

  - the plain trainer on the CPU (the reference) and on the GPU;
  - on the GPU, packed (``train.packing``) against unpacked (every sample its own padded row);
  - on the GPU, a world-size-1 ``TrainerRank`` (NCCL process group, FSDP2 ``fully_shard``) against the plain trainer;
  - ``kl_to_init`` (a forward of the frozen warm start) on the GPU against the CPU;

  and the update's seconds for each (the median of ``--repeats`` fresh updates after one warm-up). The differences
  are relative to the update itself: ‖θ_a − θ_b‖ / ‖θ_b − θ_0‖ (0 = identical updates). Writes ``check.json`` and
  ``check.md`` to ``--out``.

    python scripts/gpu_trainer_check.py dump [--dir .gpucheck]
    python scripts/gpu_trainer_check.py check [--dir .gpucheck] [--out OUT] [--device cuda] [--repeats 3]

``--device cpu`` runs the check's logic on the CPU (gloo instead of NCCL), a smoke test of the script itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def dump(folder: Path, steps: int = 3) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import load_profile, set_threads

    set_threads(2)
    import step_breakdown as sb

    from supo.data import read_tasks, split_path
    from supo.engines.vllm_engine import VLLMPolicy
    from supo.envs import get_env_spec
    from supo.runtime import build_runtime
    from supo.step import LocalLearner, LocalRollouts, StepContext, run_step

    cfg = load_profile(str(ROOT / "params.yaml"), "array", [])
    tasks = read_tasks(split_path(cfg.paths.data, "train"))
    rt = build_runtime(cfg, cfg.paths.sft, tasks, max_summaries=cfg.train_max_summaries,
                       working_context=cfg.budget.working_context)
    engine = VLLMPolicy(cfg.paths.sft, cfg.engine, seed=cfg.seed, temperature=cfg.rollout.temperature)
    trainer = sb._trainer(cfg, rt, True)
    source = LocalRollouts(engine, rt, get_env_spec(cfg.env.name)["make_env"], keep_transcript=False)
    ctx = StepContext(cfg, tasks, rt.settings, source, LocalLearner(trainer, engine))
    per_step = []
    for s in range(steps):
        res = run_step(ctx, s)
        per_step.append(res.samples)
        print(f"step {s}: {len(res.samples)} samples, {res.stats.forward_tokens} forward tokens in the packed update")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "samples.pkl", "wb") as f:
        pickle.dump({"steps": per_step, "train": cfg.train, "pad_id": rt.tokenizer.pad_token_id,
                     "max_seq_len": rt.budgets.trainer_needed, "temperature": cfg.rollout.temperature,
                     "seed": cfg.seed}, f)
    shutil.copytree(cfg.paths.sft, folder / "model", dirs_exist_ok=True)
    print(f"wrote {folder}/samples.pkl and {folder}/model")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flat(state: dict) -> dict:
    return {k: v.detach().float().cpu() for k, v in state.items()}


def _rel(a: dict, b: dict, init: dict) -> float:
    """‖a − b‖ / ‖b − init‖ over all parameters (how far two updates differ, relative to the update's size)."""
    import torch

    num = sum(float(torch.sum((a[k] - b[k]) ** 2)) for k in b)
    den = sum(float(torch.sum((b[k] - init[k]) ** 2)) for k in b)
    return (num ** 0.5) / max(den ** 0.5, 1e-30)


def check(folder: Path, out: Path, device: str, repeats: int, step: int) -> int:
    import torch

    from supo.models import load_policy
    from supo.trainer.policy_trainer import PolicyTrainer

    with open(folder / "samples.pkl", "rb") as f:
        data = pickle.load(f)
    samples = data["steps"][step]
    model_dir = str(folder / "model")
    base = dataclasses.replace(data["train"], log_kl_to_init=False)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for a smoke test")
        return 2
    init = _flat(load_policy(model_dir).state_dict())

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def plain(on, packing: bool):
        """(updated weights, update stats, median seconds) of fresh plain trainers' first update."""
        secs, result = [], None
        for r in range(repeats + 1):
            model = load_policy(model_dir).to(on)
            tr = PolicyTrainer(model, dataclasses.replace(base, packing=packing), data["pad_id"], data["max_seq_len"],
                               data["seed"], temperature=data["temperature"])
            sync()
            t0 = time.perf_counter()
            stats = tr.update(samples)
            sync()
            if r > 0:  # the first is a warm-up (CUDA context, kernels, allocator)
                secs.append(time.perf_counter() - t0)
            result = (_flat(tr.state_dict()), stats)
        return result[0], result[1], statistics.median(secs)

    def kl(on):
        model = load_policy(model_dir).to(on)
        tr = PolicyTrainer(model, dataclasses.replace(base, log_kl_to_init=True), data["pad_id"],
                           data["max_seq_len"], data["seed"], temperature=data["temperature"])
        tr.kl_to_init(samples)  # warm-up
        sync()
        t0 = time.perf_counter()
        value = tr.kl_to_init(samples)
        sync()
        return value, time.perf_counter() - t0

    res: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                 "samples": len(samples), "step": step, "repeats": repeats}
    ref, ref_stats, res["cpu_packed_s"] = plain(torch.device("cpu"), True)
    on_dev, dev_stats, res["dev_packed_s"] = plain(dev, True)
    unpacked, unp_stats, res["dev_unpacked_s"] = plain(dev, False)
    res["forward_tokens_packed"] = dev_stats.forward_tokens
    res["forward_tokens_unpacked"] = unp_stats.forward_tokens
    res["loss_cpu"], res["loss_dev"], res["loss_dev_unpacked"] = ref_stats.loss, dev_stats.loss, unp_stats.loss
    res["rel_dev_vs_cpu"] = _rel(on_dev, ref, init)
    res["rel_unpacked_vs_packed"] = _rel(unpacked, on_dev, init)

    res.update(_rank_check(model_dir, base, data, samples, on_dev, init, sync))
    res["kl_cpu"], res["kl_cpu_s"] = kl(torch.device("cpu"))
    res["kl_dev"], res["kl_dev_s"] = kl(dev)

    verdicts = _report(res, out, device, step)
    return 0 if all(verdicts.values()) else 1


def _rank_check(model_dir: str, base, data: dict, samples, on_dev: dict, init: dict, sync) -> dict:
    """A world-size-1 trainer rank (NCCL process group, gloo on the CPU, and FSDP2 ``fully_shard``, outside Ray)
    against the plain trainer's update ``on_dev``."""
    import torch

    from supo.distributed.trainer_rank import TrainerRank

    res: dict = {}
    rank = TrainerRank(0, 1, "127.0.0.1", _free_port(), model_dir, dataclasses.replace(base, packing=True),
                       data["pad_id"], data["max_seq_len"], data["seed"], threads=torch.get_num_threads(),
                       temperature=data["temperature"])
    res["rank"] = {k: v for k, v in rank.ping().items() if k in ("device", "world_size", "timings")}
    import torch.distributed as dist

    res["backend"] = dist.get_backend()
    sync()
    t0 = time.perf_counter()
    rank_stats = rank.update(samples)
    sync()
    res["fsdp_first_update_s"] = time.perf_counter() - t0
    full = rank.full_state_dict(cpu=False)
    res["fsdp_state_device"] = str(next(iter(full.values())).device)
    res["rel_fsdp_vs_plain"] = _rel(_flat(full), on_dev, init)
    res["loss_fsdp"] = rank_stats.loss
    dist.destroy_process_group()

    return res


def _report(res: dict, out: Path, device: str, step: int) -> dict:
    """The verdicts (every comparison within tolerance), written with the numbers to ``check.json`` and ``check.md``
    in ``out``."""
    tol = 1e-2  # float32 on both; summation order differs between kernels, and Adam's first step is sign-like
    verdicts = {"dev_vs_cpu": res["rel_dev_vs_cpu"] < tol, "unpacked_vs_packed": res["rel_unpacked_vs_packed"] < tol,
                "fsdp_vs_plain": res["rel_fsdp_vs_plain"] < tol,
                "kl": abs(res["kl_dev"] - res["kl_cpu"]) <= 1e-4 * max(1.0, abs(res["kl_cpu"]))}
    res["agree"] = verdicts
    out.mkdir(parents=True, exist_ok=True)
    (out / "check.json").write_text(json.dumps(res, indent=2, default=str))
    lines = [f"# Trainer on {res['device']} (torch {res['torch']}) vs the CPU: step {step}'s {res['samples']} samples",
             "", "| comparison | relative difference of the updates | agrees (< 1e-2) |", "|---|---|---|",
             f"| {device} plain vs CPU plain (packed) | {res['rel_dev_vs_cpu']:.2e} | {verdicts['dev_vs_cpu']} |",
             f"| {device} unpacked vs packed | {res['rel_unpacked_vs_packed']:.2e} | "
             f"{verdicts['unpacked_vs_packed']} |",
             f"| {device} TrainerRank ({res['backend']}, FSDP2, world 1) vs plain | {res['rel_fsdp_vs_plain']:.2e} | "
             f"{verdicts['fsdp_vs_plain']} |",
             f"| kl_to_init {device} vs CPU | {res['kl_dev']:.6g} vs {res['kl_cpu']:.6g} | {verdicts['kl']} |",
             "", "| update | seconds | forward tokens |", "|---|---|---|",
             f"| CPU packed | {res['cpu_packed_s']:.3f} | {res['forward_tokens_packed']} |",
             f"| {device} packed | {res['dev_packed_s']:.3f} | {res['forward_tokens_packed']} |",
             f"| {device} unpacked | {res['dev_unpacked_s']:.3f} | {res['forward_tokens_unpacked']} |",
             f"| {device} FSDP2 world 1 (first update, incl. warm-up) | {res['fsdp_first_update_s']:.3f} | |",
             f"| kl_to_init CPU / {device} | {res['kl_cpu_s']:.3f} / {res['kl_dev_s']:.3f} | |"]
    (out / "check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return verdicts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["dump", "check"])
    ap.add_argument("--dir", default=".gpucheck", help="where dump writes and check reads the samples and model")
    ap.add_argument("--out", default="runs/gpu-trainer-check", help="check: where check.json / check.md go")
    ap.add_argument("--device", default="cuda", help="check: the device compared with the CPU (cpu: smoke test)")
    ap.add_argument("--repeats", type=int, default=3, help="check: timed updates per trainer after one warm-up")
    ap.add_argument("--step", type=int, default=1, help="check: which dumped step's samples to train on")
    args = ap.parse_args()
    if args.mode == "dump":
        dump(Path(args.dir))
        return 0
    return check(Path(args.dir), Path(args.out), args.device, args.repeats, args.step)


if __name__ == "__main__":
    sys.exit(main())
