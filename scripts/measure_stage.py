"""Run one pipeline stage as a command and record its wall time and peak memory.

Usage: ``python scripts/measure_stage.py LOG.jsonl NAME COMMAND...``. Memory is the proportional set size (PSS: shared
pages split between the processes that map them) summed over the command's whole process tree — Ray's raylet and its
actors (the vLLM engine, the trainer ranks) are descendants of the driver — sampled every 5 s; the peak is appended
to ``LOG.jsonl`` as ``{"stage", "seconds", "peak_gib", "returncode"}``. The command's exit code is passed on.
"""

from __future__ import annotations

import json
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


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    log, stage, cmd = argv[0], argv[1], argv[2:]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(root))
        time.sleep(5.0)  # reading every process's smaps is not free (~15 % of a core at 1 s)
    seconds = time.perf_counter() - t0
    rec = {"stage": stage, "seconds": round(seconds, 1), "peak_gib": round(peak / 2**30, 2), "returncode": proc.returncode}
    with open(log, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"[{stage}] {seconds / 60:.1f} min, peak {peak / 2**30:.2f} GiB, exit {proc.returncode}", flush=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
