"""Exact shared-prefix packing of training samples ("prefix grouper"): each shared token is computed once.

Many samples of one step start alike: a trigger-action sample (R5b) is its segment's first tokens plus a short action;
the G rollouts of a task share the task prompt and often their first turns. Samples are packed into rows as token
*trees*: a trie over the samples' token sequences, laid out depth-first. Every token attends exactly to its ancestors
(its own sample's earlier tokens) and gets the position it has in its own sample, so its hidden state — and every
log-prob read from it — is the one an unpacked forward pass of that sample computes. The loss and its gradient are
therefore those of the plain computation (``tests/test_packing.py`` checks both in float64).

Log-probs are read as a flat list of *predictions* ``(row, position, target)``: where two samples branch after a
shared token, each gets its own next-token prediction from it. Only predictions that carry a gradient are kept (loss
mask 1 and, unless ``keep_zero_advantage``, a non-zero advantage — the policy loss of a token with advantage 0 is 0
and it is never clipped); a sample left without predictions is not packed at all. The token-mean denominator still
counts every mask-1 token of the mini-batch (the caller passes it), so nothing changes but the work.

Rows hold at most ``max_row_tokens`` tree nodes (a sample longer than that gets a row of its own): dense attention
over a packed row costs its length squared, so the cap trades shared work against attention over other branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from supo.types import TrainingSample


@dataclass
class PackedBatch:
    """Rows of token trees and the predictions read from them.

    ``attention_mask[b, 0, i, j]`` is True where token ``i`` of row ``b`` may attend to token ``j`` (``j`` is ``i`` or
    one of its ancestors); padding tokens attend to themselves only and are never read.
    """

    input_ids: torch.Tensor  # [B, T] long
    position_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, 1, T, T] bool
    pred_row: torch.Tensor  # [N] long
    pred_pos: torch.Tensor  # [N] long: the token whose output predicts the target
    targets: torch.Tensor  # [N] long
    loss_mask: torch.Tensor  # [N] float (all 1 unless keep_masked)
    old_logprobs: torch.Tensor  # [N] float
    advantages: torch.Tensor  # [N] float
    seq_ids: torch.Tensor  # [N] long: the prediction's sample, its index in the samples packed

    @property
    def num_tokens(self) -> float:
        return float(self.loss_mask.sum())

    @property
    def num_predictions(self) -> int:
        return int(self.targets.numel())

    def to(self, device: torch.device) -> PackedBatch:
        if self.input_ids.device == device:
            return self
        return PackedBatch(*(t.to(device) for t in (self.input_ids, self.position_ids, self.attention_mask,
                                                    self.pred_row, self.pred_pos, self.targets, self.loss_mask,
                                                    self.old_logprobs, self.advantages, self.seq_ids)))


@dataclass
class _Row:
    """One token tree: node tokens, parents (-1 for a root) and depths (= position ids), plus its predictions."""

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    children: list[dict[int, int]]
    roots: dict[int, int]
    preds: list[tuple[int, int, float, float, float, int]]  # (node, target, mask, old logprob, advantage, sample)

    @classmethod
    def empty(cls) -> _Row:
        return cls([], [], [], [], {}, [])

    def __len__(self) -> int:
        return len(self.tokens)

    def new_nodes(self, seq: Sequence[int]) -> int:
        """How many nodes inserting ``seq`` would add."""
        level = self.roots
        for k, tok in enumerate(seq):
            nxt = level.get(tok)
            if nxt is None:
                return len(seq) - k
            level = self.children[nxt]
        return 0

    def insert(self, seq: Sequence[int]) -> list[int]:
        """Insert ``seq`` as a path from a root; return the node index of each of its tokens."""
        path, level, parent = [], self.roots, -1
        for depth, tok in enumerate(seq):
            node = level.get(tok)
            if node is None:
                node = len(self.tokens)
                self.tokens.append(int(tok))
                self.parents.append(parent)
                self.depths.append(depth)
                self.children.append({})
                level[tok] = node
            path.append(node)
            parent, level = node, self.children[node]
        return path


def _predictions(s: TrainingSample, keep_zero_advantage: bool, sampled: bool = False) -> list[int]:
    """Indices into ``s.response_ids`` of the predictions that carry a gradient (``sampled``: of every token the policy
    sampled, trained or not — for measurements)."""
    if sampled:
        return [k for k, m in enumerate(s.sampled) if m]
    return [k for k, (m, a) in enumerate(zip(s.loss_mask, s.advantages)) if m and (keep_zero_advantage or a != 0.0)]


def pack_rows(samples: Sequence[TrainingSample], max_row_tokens: int, *,
              keep_zero_advantage: bool = False, sampled: bool = False) -> list[_Row]:
    """Pack the samples that carry a gradient into token-tree rows of at most ``max_row_tokens`` nodes (``sampled``:
    every sampled token instead, masked or not, each prediction with mask 1 — for measurements, never for the loss).

    Samples are visited in the lexicographic order of their token sequences, so samples with a common prefix are
    neighbours, and each joins the current row while the tree stays within the cap. Each prediction carries its
    sample's index in ``samples`` (for sequence-level loss terms; a sample's predictions are all in one row).
    """
    todo = []
    for sid, s in enumerate(samples):
        keep = _predictions(s, keep_zero_advantage, sampled)
        if keep:
            todo.append((s.prompt_ids + s.response_ids, s, keep, sid))
    todo.sort(key=lambda t: t[0])
    rows: list[_Row] = []
    row = _Row.empty()
    for seq, s, keep, sid in todo:
        if len(row) and len(row) + row.new_nodes(seq) > max_row_tokens:
            rows.append(row)
            row = _Row.empty()
        path = row.insert(seq)
        P = len(s.prompt_ids)
        for k in keep:
            row.preds.append((path[P + k - 1], s.response_ids[k], 1.0 if sampled else float(s.loss_mask[k]),
                              float(s.old_logprobs[k]), float(s.advantages[k]), sid))
    if len(row):
        rows.append(row)
    return rows


def _ancestor_mask(parents: list[int], T: int) -> np.ndarray:
    """[T, T] bool: node i sees j iff j is i or an ancestor of i (parents precede children in depth-first order)."""
    n = len(parents)
    mask = np.zeros((T, T), dtype=bool)
    for i, p in enumerate(parents):
        if p >= 0:
            mask[i, :n] = mask[p, :n]
        mask[i, i] = True
    for i in range(n, T):  # padding sees itself only (never read)
        mask[i, i] = True
    return mask


def collate_rows(rows: Sequence[_Row], pad_id: int, dtype: torch.dtype = torch.float32) -> PackedBatch:
    """Right-pad token-tree rows into one :class:`PackedBatch`."""
    if not rows:
        raise ValueError("no rows to collate")
    T = max(len(r) for r in rows)
    B = len(rows)
    ids = np.full((B, T), pad_id, dtype=np.int64)
    pos = np.zeros((B, T), dtype=np.int64)
    attn = np.zeros((B, 1, T, T), dtype=bool)
    prow, ppos, tgt, mask, old, adv, sids = [], [], [], [], [], [], []
    for b, r in enumerate(rows):
        n = len(r)
        ids[b, :n] = r.tokens
        pos[b, :n] = r.depths
        attn[b, 0] = _ancestor_mask(r.parents, T)
        for node, target, m, o, a, sid in r.preds:
            prow.append(b)
            ppos.append(node)
            tgt.append(target)
            mask.append(m)
            old.append(o)
            adv.append(a)
            sids.append(sid)
    as_long = lambda x: torch.as_tensor(np.asarray(x, dtype=np.int64))  # noqa: E731
    as_float = lambda x: torch.tensor(x, dtype=dtype)  # noqa: E731
    return PackedBatch(torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(attn), as_long(prow),
                       as_long(ppos), as_long(tgt), as_float(mask), as_float(old), as_float(adv), as_long(sids))


def row_batches(rows: Sequence[_Row], rows_per_batch: int) -> list[list[_Row]]:
    """Micro-batches of at most ``rows_per_batch`` rows, similar lengths together (less padding)."""
    ordered = sorted(rows, key=len)
    return [ordered[i : i + rows_per_batch] for i in range(0, len(ordered), rows_per_batch)]


def padding_row(pad_id: int) -> _Row:
    """A one-token row without predictions: runs forward and backward and changes nothing (FSDP ranks need the same
    number of passes)."""
    row = _Row.empty()
    row.insert([pad_id])
    return row


def packed_tokens(rows: Sequence[_Row]) -> int:
    return sum(len(r) for r in rows)
