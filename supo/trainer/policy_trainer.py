"""The torch side: token log-probs, the RL update (R10) and the SFT step, on one HF causal LM.

The RL update runs ``ppo_epochs × mini_batches`` optimizer steps over a step's samples. Inside a mini-batch, rows are
processed in micro-batches with gradient accumulation; the loss of every micro-batch is divided by the token count of
the whole mini-batch, so micro-batching does not change the loss or the gradient (token-mean over the mini-batch).

Data parallel (``world_size > 1``, the policy sharded with FSDP2 ``fully_shard``): every rank sees the whole step's
samples and forms the same mini-batches (same seed). Each mini-batch is padded with zero-mask rows to a multiple of
``world_size`` and rank ``r`` takes rows ``r::world_size``, so every rank runs the same number of micro-batches (FSDP's
collectives need the same number of forward/backward passes on every rank). A rank's loss is divided by the token count
of the *whole* mini-batch and multiplied by ``world_size`` before backward, because FSDP2 averages gradients over
ranks: the reduced gradient is then the single-process one. Reported statistics are all-reduced (summed) over ranks.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import torch

from supo.algo.loss import entropy_from_logits
from supo.algo.objective import MiniBatchCounts, Objective, micro_batch_loss
from supo.trainer.batch import Batch, collate, micro_batches, padding_sample, split_minibatches
from supo.trainer.fsdp import is_fsdp, reshard
from supo.trainer.packing import PackedBatch, collate_rows, pack_rows, padding_row, row_batches
from supo.types import TrainingSample

# model types whose logits are exactly ``lm_head(final hidden state)``: for these only the predicting positions go
# through the output head; any other model computes every position's logits, then gathers
PLAIN_HEAD_MODEL_TYPES = frozenset({"qwen2", "qwen3", "llama", "mistral"})


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Half-precision logits in float32 (float64 stays float64), divided by the sampling temperature: the log-probs
    are then those of the distribution the engine sampled from (it returns its post-temperature log-probs)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def token_logprobs(model, batch: Batch, with_entropy: bool = False, temperature: float = 1.0):
    """Log-probs of ``batch.targets`` under ``model`` at ``temperature`` ([B, T-1]); also per-position entropy when
    asked."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    logits = _scaled(out.logits[:, :-1, :], temperature)
    logp = torch.log_softmax(logits, dim=-1)
    lp = torch.gather(logp, -1, batch.targets.unsqueeze(-1)).squeeze(-1)
    ent = entropy_from_logits(logits) if with_entropy else None
    return lp, ent


def packed_logprobs(model, batch: PackedBatch, with_entropy: bool = False, temperature: float = 1.0):
    """Log-probs of ``batch``'s predictions under ``model`` at ``temperature`` ([N]); also the entropy at each when
    asked."""
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                  use_cache=False)
    if getattr(model.config, "model_type", None) in PLAIN_HEAD_MODEL_TYPES:
        captured = {}
        hook = model.get_decoder().register_forward_hook(
            lambda _m, _i, out: captured.__setitem__("h", out.last_hidden_state))
        try:
            model(**kwargs, logits_to_keep=1)  # the head runs on one position per row; the rest is read below
        finally:
            hook.remove()
        logits = model.get_output_embeddings()(captured["h"][batch.pred_row, batch.pred_pos])
    else:
        logits = model(**kwargs).logits[batch.pred_row, batch.pred_pos]
    logits = _scaled(logits, temperature)
    logp = torch.log_softmax(logits, dim=-1)
    lp = torch.gather(logp, -1, batch.targets.unsqueeze(-1)).squeeze(-1)
    ent = entropy_from_logits(logits) if with_entropy else None
    return lp, ent


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if batch.input_ids.device == device:
        return batch
    return Batch(*(t.to(device) for t in (batch.input_ids, batch.attention_mask, batch.targets, batch.loss_mask,
                                          batch.old_logprobs, batch.advantages, batch.seq_ids)))


Row = TypeVar("Row")


def rank_share(rows: Sequence[Row], rank: int, world_size: int, pad: Callable[[], Row]) -> list[Row]:
    """Rank ``rank``'s share of a mini-batch's rows (samples, or packed rows): rows ``rank::world_size`` after padding
    with ``pad()`` rows (zero-mask, no predictions) to a multiple of ``world_size``, so every rank gets the same number
    of rows."""
    rows = list(rows)
    rows += [pad() for _ in range((-len(rows)) % world_size)]
    return rows[rank::world_size]


def _norm_value(norm) -> float:
    """``clip_grad_norm_``'s result as a float (a DTensor on FSDP2-sharded parameters: take the full value)."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    value = float(norm)
    return value if math.isfinite(value) else float("nan")


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
    forward_tokens: int = 0  # token positions the model computed (padding and packed rows included)
    kl_to_init: float = float("nan")  # KL(behaviour ‖ initial policy) on the sampled tokens; NaN when not measured


def needs_reference(train_cfg) -> bool:
    """Whether the trainer keeps a frozen copy of the initial policy: for the KL term, or to measure the drift."""
    return train_cfg.kl_coef > 0 or train_cfg.log_kl_to_init


def measures_kl_to_init(train_cfg, updates: int) -> bool:
    """Whether update number ``updates`` (0-based; the trainer's counter, restored on resume) measures
    ``kl_to_init``: with ``train.log_kl_to_init``, every ``train.kl_to_init_every``-th update from the first (1, the
    default: every update). The measurement is a forward of the initial policy over every sampled token of the step —
    more tokens than the update trains when most advantages are 0 — so a period > 1 divides its cost; the updates in
    between report NaN, as with the metric off, and the update's numbers never depend on it."""
    return bool(train_cfg.log_kl_to_init) and updates % train_cfg.kl_to_init_every == 0


def objective_of(train_cfg) -> Objective:
    """The objective's terms (R10), read from ``train.*`` once: the algorithm functions take these values."""
    return Objective(policy_loss=train_cfg.policy_loss, clip_low=train_cfg.clip_low, clip_high=train_cfg.clip_high,
                     loss_agg=train_cfg.loss_agg, kl_coef=train_cfg.kl_coef, entropy_coef=train_cfg.entropy_coef)


class PolicyTrainer:
    """Holds the policy, its optimizer and (when ``kl_coef > 0`` or ``log_kl_to_init``) a frozen reference policy.

    ``temperature``: the rollouts' sampling temperature; log-probs are computed at it (R10's ratio is against the
    distribution actually sampled from). ``rank``/``world_size``: this process's place in a data-parallel group
    (``torch.distributed`` initialised and the model sharded with FSDP2 by the caller, see ``supo.distributed``).
    ``ref_model``: the frozen reference policy for the KL term; by default a deep copy of ``model`` (a sharded caller
    passes its own sharded copy).
    """

    def __init__(self, model, train_cfg, pad_id: int, max_seq_len: int | None = None, seed: int = 0, *,
                 rank: int = 0, world_size: int = 1, ref_model=None, temperature: float = 1.0) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad data-parallel place: rank {rank} of world size {world_size}")
        self.model = model
        self.cfg = train_cfg
        self.objective = objective_of(train_cfg)
        self.pad_id = pad_id
        self.max_seq_len = max_seq_len
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        if temperature <= 0:
            raise ValueError(f"the sampling temperature must be > 0 for training, got {temperature}")
        self.temperature = float(temperature)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        self.ref = None
        if needs_reference(train_cfg):
            self.ref = (ref_model if ref_model is not None else copy.deepcopy(model)).eval()
            for p in self.ref.parameters():
                p.requires_grad_(False)
        self.updates = 0
        first = next(model.parameters())
        self.dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
        self.device = first.device
        # FSDP-sharded (any world size): every forward needs its backward, so no micro-batch is skipped (see update)
        self.sharded = world_size > 1 or is_fsdp(model)

    def update(self, samples: Sequence[TrainingSample]) -> UpdateStats:
        """One RL update: exactly ``mini_batches × ppo_epochs`` optimizer steps.

        With ``world_size > 1`` every rank must call this with the same samples (the statistics returned are the
        global ones, the same on every rank)."""
        t0 = time.perf_counter()
        cfg = self.cfg
        if self.max_seq_len is not None:  # check up front: no partial update, and every rank raises alike
            longest = max((s.length for s in samples), default=0)
            if longest > self.max_seq_len:
                raise ValueError(f"a segment of {longest} tokens exceeds the trainer's sequence limit "
                                 f"{self.max_seq_len}")
        kl_init = self.kl_to_init(samples) if measures_kl_to_init(cfg, self.updates) else float("nan")
        self.model.train()
        per_step: list[tuple[float, float, float, float]] = []  # each optimizer step's loss, clip, KL and entropy
        norms: list[float] = []
        total_tokens = forward_tokens = 0
        for epoch in range(cfg.ppo_epochs):
            chunks = split_minibatches(samples, cfg.mini_batches, seed=self.seed * 1_000 + self.updates * 10 + epoch,
                                       pad_id=self.pad_id)
            for chunk in chunks:
                counts = MiniBatchCounts.of(chunk)  # the whole mini-batch's normalisers, on every rank
                if epoch == 0:
                    total_tokens += int(counts.num_tokens)
                sums, norm, tokens = self._optimizer_step(chunk, counts)
                per_step.append(sums)
                norms.append(norm)
                forward_tokens += tokens
        losses, clips, kls, ents = (list(col) for col in zip(*per_step)) if per_step else ([], [], [], [])
        if self.world_size > 1:  # each rank holds its rows' share of every mini-batch statistic: sum them
            import torch.distributed as dist

            local = torch.tensor([losses, clips, kls, ents], dtype=torch.float64, device=self._collective_device())
            dist.all_reduce(local, op=dist.ReduceOp.SUM)
            losses, clips, kls, ents = (row.tolist() for row in local.cpu())
        self.updates += 1
        mean = lambda xs: float(sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
        return UpdateStats(mean(losses), mean(clips), mean(norms), len(per_step), len(samples), total_tokens,
                           mean(kls), mean(ents), time.perf_counter() - t0, forward_tokens, kl_init)

    def _optimizer_step(self, chunk: Sequence[TrainingSample], counts: MiniBatchCounts
                        ) -> tuple[tuple[float, float, float, float], float, int]:
        """One mini-batch's gradient accumulation and optimizer step: this rank's sums of the micro-batches' loss,
        clip fraction, KL and entropy shares, the gradient norm and the token positions computed."""
        n_tokens = counts.num_tokens
        self.optimizer.zero_grad(set_to_none=True)
        chunk_loss = chunk_clip = chunk_kl = chunk_ent = 0.0
        forward_tokens = 0
        ran = False
        for batch in self._micro_batches(chunk, n_tokens):
            batch = batch.to(self.device) if isinstance(batch, PackedBatch) else _to_device(batch, self.device)
            loss, st = self._loss(batch, counts)
            chunk_clip += st["clip_frac"]
            chunk_kl += st["kl"]
            chunk_ent += st["entropy"]
            forward_tokens += int(batch.input_ids.numel())
            if self.sharded:
                (loss * self.world_size).backward()  # FSDP2 divides the reduced gradient by the world size
                ran = True
            elif batch.num_tokens > 0:
                loss.backward()
                ran = True
            chunk_loss += float(loss.detach())
        if not ran and n_tokens > 0:
            # every token of this mini-batch has advantage 0 (packing left nothing to run): the plain
            # computation's gradient is exactly zero, and AdamW must take that zero step too
            for p in self.model.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        return (chunk_loss, chunk_clip, chunk_kl, chunk_ent), _norm_value(norm), forward_tokens

    def _micro_batches(self, chunk: Sequence[TrainingSample], n_tokens: float) -> list[Batch | PackedBatch]:
        """This rank's micro-batches of one mini-batch.

        FSDP: every rank must run the same passes and every forward its backward (FSDP2 hooks), so what runs is
        decided per mini-batch, the same on every rank (each holds the whole mini-batch): a mini-batch without tokens
        is skipped whole (no forward, no collective), which leaves the gradients None exactly as the unsharded run
        does; otherwise every micro-batch runs forward and backward (a token-less one adds exact zeros). Unsharded: a
        micro-batch without tokens skips its backward."""
        if self.cfg.packing:
            return self._packed_micro_batches(chunk, n_tokens)
        rows = chunk
        if self.world_size > 1:
            rows = rank_share(chunk, self.rank, self.world_size, partial(padding_sample, self.pad_id))
        if self.sharded and n_tokens == 0:
            rows = []
        index = {id(s): k for k, s in enumerate(chunk)}  # padding rows: -1
        return [collate(m, self.pad_id, self.max_seq_len, dtype=self.dtype, seq_ids=[index.get(id(s), -1) for s in m])
                for m in micro_batches(rows, self.cfg.micro_batch_size)]

    @torch.no_grad()
    def kl_to_init(self, samples: Sequence[TrainingSample]) -> float:
        """KL(π_behaviour ‖ π_initial), the k3 estimate over every token the behaviour policy sampled in ``samples``
        (trained or masked: a policy that only loops still moved), whose behaviour log-probs they carry: how far the
        policy that generated this step has moved from the warm start. One forward pass of the frozen initial policy
        over the packed samples."""
        world = self.world_size
        rows = self._packed_share(pack_rows(samples, self.cfg.pack_tokens, sampled=True))
        total = torch.zeros(2, dtype=torch.float64)
        for micro in row_batches(rows, self.cfg.micro_batch_size):
            batch = collate_rows(micro, self.pad_id, dtype=self.dtype).to(self.device)
            ref_lp, _ = packed_logprobs(self.ref, batch, temperature=self.temperature)
            r = (ref_lp - batch.old_logprobs).double()
            total += torch.stack([(torch.exp(r) - r - 1.0).sum().cpu(), torch.tensor(float(r.numel()))])
        if self.sharded:
            reshard(self.ref)
        if world > 1:
            import torch.distributed as dist

            total = total.to(self._collective_device())
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            total = total.cpu()
        return float(total[0] / total[1]) if total[1] > 0 else 0.0

    def _packed_micro_batches(self, chunk: Sequence[TrainingSample], n_tokens: float) -> list[PackedBatch]:
        """This rank's packed micro-batches of one mini-batch (every rank packs the whole mini-batch the same way,
        then takes every ``world_size``-th row; padding rows even the counts out)."""
        cfg = self.cfg
        if n_tokens == 0:
            return []
        rows = pack_rows(chunk, cfg.pack_tokens, keep_zero_advantage=self.objective.reads_zero_advantage)
        if not rows:
            return []
        rows = self._packed_share(rows)
        return [collate_rows(m, self.pad_id, dtype=self.dtype) for m in row_batches(rows, cfg.micro_batch_size)]

    def _packed_share(self, rows: list) -> list:
        """This rank's packed rows: with ``world_size > 1`` sorted by length (similar rows on every rank), then
        :func:`rank_share`; every row otherwise."""
        if self.world_size == 1:
            return rows
        return rank_share(sorted(rows, key=len), self.rank, self.world_size, partial(padding_row, self.pad_id))

    def _loss(self, batch, counts: MiniBatchCounts):
        """The micro-batch's share of the mini-batch loss: the model's log-probs (and entropy, and the reference's
        log-probs, when the objective weighs them) handed to :func:`supo.algo.objective.micro_batch_loss`."""
        objective = self.objective
        logprobs = packed_logprobs if isinstance(batch, PackedBatch) else token_logprobs
        lp, ent = logprobs(self.model, batch, with_entropy=objective.needs_entropy, temperature=self.temperature)
        ref_lp = None
        if objective.needs_reference_logprobs:
            with torch.no_grad():
                ref_lp, _ = logprobs(self.ref, batch, temperature=self.temperature)
        return micro_batch_loss(objective, lp, batch.old_logprobs, batch.advantages, batch.loss_mask, batch.seq_ids,
                                counts, entropy=ent, ref_logprobs=ref_lp)

    def _collective_device(self) -> torch.device:
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.model.state_dict().items()}


def sft_loss(model, samples: Sequence[TrainingSample], pad_id: int, max_seq_len: int | None = None, *,
             packing: bool = True, pack_tokens: int = 512) -> torch.Tensor:
    """Cross-entropy on the mask-1 (policy) tokens, token-mean over the batch (packed: shared prefixes computed once
    and the output head only where a token is predicted — the same loss), on the model's device."""
    first = next(model.parameters())
    dtype, device = first.dtype, first.device
    if packing:
        rows = pack_rows(samples, pack_tokens, keep_zero_advantage=True)
        if not rows:
            return sum(p.sum() * 0.0 for p in model.parameters())
        batch = collate_rows(rows, pad_id, dtype=dtype).to(device)
        lp, _ = packed_logprobs(model, batch)
    else:
        batch = _to_device(collate(samples, pad_id, max_seq_len, dtype=dtype), device)
        lp, _ = token_logprobs(model, batch)
    return -(lp * batch.loss_mask).sum() / batch.loss_mask.sum().clamp_min(1.0)
