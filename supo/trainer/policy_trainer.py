"""The torch side: token log-probs, the RL update (R10) and the SFT step, on one HF causal LM.

The RL update runs ``ppo_epochs × mini_batches`` optimizer steps over a step's samples. Inside a mini-batch, rows are
processed in micro-batches with gradient accumulation; the loss of every micro-batch is divided by the token count of
the whole mini-batch, so micro-batching does not change the loss or the gradient (token-mean over the mini-batch).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from supo.algo.advantage import TrainingSample
from supo.algo.loss import entropy_from_logits, kl_k3, policy_loss
from supo.trainer.batch import Batch, collate, micro_batches, split_minibatches


def token_logprobs(model, batch: Batch, with_entropy: bool = False):
    """Log-probs of ``batch.targets`` under ``model`` ([B, T-1]); also per-position entropy when asked."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    logits = out.logits[:, :-1, :]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # half-precision models: compute log-probs in float32; float64 stays float64
    logp = torch.log_softmax(logits, dim=-1)
    lp = torch.gather(logp, -1, batch.targets.unsqueeze(-1)).squeeze(-1)
    ent = entropy_from_logits(logits) if with_entropy else None
    return lp, ent


@dataclass
class UpdateStats:
    loss: float
    clip_frac: float
    grad_norm: float
    optimizer_steps: int
    num_samples: int
    num_tokens: int
    kl: float
    entropy: float
    seconds: float


class PolicyTrainer:
    """Holds the policy, its optimizer and (when ``kl_coef > 0``) a frozen reference copy."""

    def __init__(self, model, train_cfg, pad_id: int, max_seq_len: int | None = None, seed: int = 0) -> None:
        self.model = model
        self.cfg = train_cfg
        self.pad_id = pad_id
        self.max_seq_len = max_seq_len
        self.seed = seed
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        self.ref = None
        if train_cfg.kl_coef > 0:
            self.ref = copy.deepcopy(model).eval()
            for p in self.ref.parameters():
                p.requires_grad_(False)
        self.updates = 0
        self.dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32

    def update(self, samples: Sequence[TrainingSample]) -> UpdateStats:
        """One RL update: exactly ``mini_batches × ppo_epochs`` optimizer steps."""
        t0 = time.perf_counter()
        cfg = self.cfg
        self.model.train()
        losses, clips, norms, kls, ents = [], [], [], [], []
        steps = 0
        total_tokens = 0
        for epoch in range(cfg.ppo_epochs):
            chunks = split_minibatches(samples, cfg.mini_batches, seed=self.seed * 1_000 + self.updates * 10 + epoch,
                                       pad_id=self.pad_id)
            for chunk in chunks:
                n_tokens = float(sum(sum(s.loss_mask) for s in chunk))
                if epoch == 0:
                    total_tokens += int(n_tokens)
                self.optimizer.zero_grad(set_to_none=True)
                chunk_loss = chunk_clip = chunk_kl = chunk_ent = 0.0
                for micro in micro_batches(chunk, cfg.micro_batch_size):
                    batch = collate(micro, self.pad_id, self.max_seq_len, dtype=self.dtype)
                    lp, ent = token_logprobs(self.model, batch, with_entropy=cfg.entropy_coef > 0)
                    loss, st = policy_loss(cfg.policy_loss, lp, batch.old_logprobs, batch.advantages,
                                           batch.loss_mask, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                                           num_tokens=n_tokens)
                    chunk_clip += st["clip_frac"]
                    if self.ref is not None:
                        with torch.no_grad():
                            ref_lp, _ = token_logprobs(self.ref, batch)
                        kl = (kl_k3(lp, ref_lp) * batch.loss_mask).sum() / max(n_tokens, 1.0)
                        loss = loss + cfg.kl_coef * kl
                        chunk_kl += float(kl.detach())
                    if ent is not None:
                        e = (ent * batch.loss_mask).sum() / max(n_tokens, 1.0)
                        loss = loss - cfg.entropy_coef * e
                        chunk_ent += float(e.detach())
                    if batch.num_tokens > 0:
                        loss.backward()
                    chunk_loss += float(loss.detach())
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                steps += 1
                losses.append(chunk_loss)
                clips.append(chunk_clip)
                norms.append(float(norm) if math.isfinite(float(norm)) else float("nan"))
                kls.append(chunk_kl)
                ents.append(chunk_ent)
        self.updates += 1
        mean = lambda xs: float(sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
        return UpdateStats(mean(losses), mean(clips), mean(norms), steps, len(samples), total_tokens, mean(kls),
                           mean(ents), time.perf_counter() - t0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.model.state_dict().items()}


def sft_loss(model, samples: Sequence[TrainingSample], pad_id: int, max_seq_len: int | None = None) -> torch.Tensor:
    """Cross-entropy on the mask-1 (policy) tokens, token-mean over the batch."""
    batch = collate(samples, pad_id, max_seq_len, dtype=next(model.parameters()).dtype)
    lp, _ = token_logprobs(model, batch)
    return -(lp * batch.loss_mask).sum() / batch.loss_mask.sum().clamp_min(1.0)
