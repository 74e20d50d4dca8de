"""Run one pipeline stage as a command and record its wall time and peak memory.

Usage: ``python scripts/measure_stage.py LOG.jsonl NAME COMMAND...``. Memory is the proportional set size (PSS: shared
pages split between the processes that map them) summed over the command's whole process tree — Ray's raylet and its
actors (the vLLM engine, the trainer ranks) are descendants of the driver — sampled every 5 s; the peak is appended
to ``LOG.jsonl`` as ``{"stage", "seconds", "peak_gib", "returncode"}`` — with ``"gpu_peak_gib"`` (the GPU memory in
use, as ``nvidia-smi`` reports it, at its highest sample) where ``nvidia-smi`` is on the PATH. The command's exit code
is passed on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import psutil


def tree_pss(root: psutil.Process) -> int:
    """PSS (RSS where PSS cannot be read) of ``root`` and every descendant, in bytes."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            continue
    return total


def gpu_used_bytes() -> int | None:
    """The memory in use on the GPUs (summed), from ``nvidia-smi``; None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return sum(int(x) for x in out.split()) * 2**20
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    log, stage, cmd = argv[0], argv[1], argv[2:]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    root = psutil.Process(proc.pid)
    peak, gpu_peak = 0, None
    while proc.poll() is None:
        peak = max(peak, tree_pss(root))
        used = gpu_used_bytes()
        if used is not None:
            gpu_peak = max(gpu_peak or 0, used)
        time.sleep(5.0)  # reading every process's smaps is not free (~15 % of a core at 1 s)
    seconds = time.perf_counter() - t0
    rec = {"stage": stage, "seconds": round(seconds, 1), "peak_gib": round(peak / 2**30, 2), "returncode": proc.returncode}
    if gpu_peak is not None:
        rec["gpu_peak_gib"] = round(gpu_peak / 2**30, 2)
    with open(log, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"[{stage}] {seconds / 60:.1f} min, peak {peak / 2**30:.2f} GiB, exit {proc.returncode}", flush=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
