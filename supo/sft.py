"""`supo-cli sft`: warm-start the tiny model on the expert demonstrations.

Cross-entropy on the policy tokens (actions, summaries, trigger actions) of every demonstration row, AdamW with a
linear warm-up and cosine decay to 10%. The result is a policy that calls tools in the right format and summarizes
when asked, but copies the expert's summary mistakes at roughly the expert's rate, so RL has room to improve it.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch

from supo.config import Config
from supo.data import read_demos
from supo.layout import metrics_file
from supo.models import load_policy, load_tokenizer
from supo.results import SftResult
from supo.trainer.policy_trainer import sft_loss
from supo.types import TrainingSample


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def run_sft(cfg: Config, *, tracker=None, progress=None, log=print) -> SftResult:
    """Train on ``paths.data/demos.parquet`` starting from ``paths.model``; save to ``paths.sft``."""
    s = cfg.sft
    torch.manual_seed(cfg.seed)
    tok = load_tokenizer(cfg.paths.model)
    model = load_policy(cfg.paths.model)
    if torch.cuda.is_available():  # a GPU machine (scripts/gpu_smollm2.sh): the warm start trains there
        model = model.to("cuda")
    segs = read_demos(Path(cfg.paths.data) / "demos.parquet", vocab_size=len(tok))
    samples = [TrainingSample(sg.prompt_ids, sg.response_ids, sg.response_mask, sg.logprobs,
                              [0.0] * len(sg.response_ids), rollout=i) for i, sg in enumerate(segs)]
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(s.warmup_steps, s.steps))
    rng = random.Random(cfg.seed)
    history = []
    ema = None
    t0 = time.perf_counter()
    model.train()
    for step in range(s.steps):
        batch = rng.sample(samples, min(s.batch_size, len(samples)))
        loss = sft_loss(model, batch, tok.pad_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
        opt.step()
        sched.step()
        v = float(loss.detach())
        ema = v if ema is None else 0.95 * ema + 0.05 * v
        if step % 10 == 0 or step == s.steps - 1:
            rec = {"step": step, "sft_loss": v, "sft_loss_ema": ema, "grad_norm": float(norm),
                   "lr": sched.get_last_lr()[0]}
            history.append(rec)
            if tracker is not None:
                tracker.log_metrics({k: x for k, x in rec.items() if k != "step"}, step=step)
        if progress is not None:
            progress(step + 1, ema)
    seconds = time.perf_counter() - t0
    out = Path(cfg.paths.sft)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    result = SftResult(sft_steps=s.steps, sft_rows=len(samples), sft_final_loss_ema=ema, sft_seconds=seconds)
    result.write(metrics_file(cfg.paths.metrics, "sft"))
    log(f"sft: {s.steps} steps on {len(samples)} rows in {seconds:.0f}s on {next(model.parameters()).device.type}, "
        f"loss {ema:.4f} -> {out}")
    return result
