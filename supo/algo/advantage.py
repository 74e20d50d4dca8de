"""Advantage estimators (R8) and their broadcast onto segments — pure functions behind a small registry.

The contract, checked by :func:`check_groups` and by the tests:

* a group is the G rollouts of one task in one step (``Rollout.group_id``), never a segment or a row;
* each rollout has one outcome (its reward), computed while the rollout is one record;
* the rollout's advantage is broadcast to every segment of that rollout, onto *that segment's own* loss mask;
* what happens to an overlong rollout — mask 0 on all its segments (R9), a penalty, or nothing — and whether it
  still counts in its group's mean/std is a named treatment (``supo.algo.overlong``).

Estimators take per-rollout arrays and return per-rollout advantages:

* ``rollout`` (paper Eq. 3, default): ``A_j = (R_j − mean_g) / (std_g + eps)`` over the rollouts of group g;
* ``segment`` (Eq. 4 ablation): the same, but the mean/std run over segments — rollout j's reward is repeated once per
  context segment — so rollouts with more summaries weigh more in the statistics (a rollout that is not trained
  counts once; see :func:`compute_advantages`).

``std`` is the population standard deviation. A group with no rollout in its statistics gets advantage 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from supo.registry import registrar
from supo.types import Rollout, TrainingSample

AdvantageFn = Callable[..., np.ndarray]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}


register_advantage = registrar(ADVANTAGE_ESTIMATORS, "advantage estimator")


def _group_normalize(rewards: np.ndarray, groups: Sequence[str], weights: np.ndarray, eps: float) -> np.ndarray:
    """(R − weighted mean) / (weighted population std + eps), per group; weight 0 = not in the statistics."""
    rewards = np.asarray(rewards, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    out = np.zeros_like(rewards)
    groups_arr = np.asarray(groups)
    for g in dict.fromkeys(groups):
        idx = np.flatnonzero(groups_arr == g)
        w = weights[idx]
        if w.sum() <= 0:
            continue
        mean = float(np.sum(w * rewards[idx]) / w.sum())
        std = float(np.sqrt(np.sum(w * (rewards[idx] - mean) ** 2) / w.sum()))
        out[idx] = (rewards[idx] - mean) / (std + eps)
    return out


@register_advantage("rollout")
def rollout_advantage(rewards, groups, num_segments, include_in_stats, eps: float = 1e-6) -> np.ndarray:
    """Paper Eq. 3: group statistics over rollouts (each rollout counts once, whatever its segment count)."""
    return _group_normalize(rewards, groups, np.asarray(include_in_stats, dtype=np.float64), eps)


@register_advantage("segment")
def segment_advantage(rewards, groups, num_segments, include_in_stats, eps: float = 1e-6) -> np.ndarray:
    """Eq. 4 ablation: group statistics over segments (a rollout's reward repeated once per context segment)."""
    w = np.asarray(include_in_stats, dtype=np.float64) * np.asarray(num_segments, dtype=np.float64)
    return _group_normalize(rewards, groups, w, eps)


@dataclass(frozen=True)
class RolloutAdvantages:
    """Per-rollout results: the advantage and whether the rollout's segments are trained (mask kept)."""

    advantages: np.ndarray
    trainable: np.ndarray  # bool: False = every segment's loss mask is zeroed (overlong masking, R9)
    degenerate_groups: int  # groups whose rewards (in the statistics) are all equal
    num_groups: int


def check_groups(rollouts: Sequence[Rollout]) -> None:
    """Raise ``ValueError`` if a group mixes tasks or repeats a rollout index (the grouping contract)."""
    seen: dict[str, str] = {}
    indices: dict[str, set[int]] = {}
    for r in rollouts:
        task = seen.setdefault(r.group_id, r.task_id)
        if task != r.task_id:
            raise ValueError(f"group {r.group_id!r} mixes tasks {task!r} and {r.task_id!r}")
        idx = indices.setdefault(r.group_id, set())
        if r.index in idx:
            raise ValueError(f"group {r.group_id!r} has two rollouts with index {r.index}")
        idx.add(r.index)


def compute_advantages(
    rollouts: Sequence[Rollout],
    estimator: str = "rollout",
    *,
    overlong: str = "loss-mask",
    overlong_penalty: float = -1.0,
    eps: float = 1e-6,
) -> RolloutAdvantages:
    """Per-rollout advantages with the chosen estimator, plus which rollouts keep their loss mask.

    ``overlong`` names the treatment of overlong rollouts (``supo.algo.overlong``): the reward each rollout enters the
    statistics with, whether it is trained, whether it counts in its group's mean/std.

    Eq. 4 and masked rollouts: a rollout that is not trained enters the ``segment`` estimator's statistics *once*, as
    under Eq. 3, and only trained rollouts count once per segment. An overlong rollout has used every summary, so
    counting it per segment would put S + 1 zeros into its group's baseline for each masked rollout — a hidden bonus
    for finishing that has nothing to do with per-segment normalisation; this way Eq. 4 differs from Eq. 3 only in
    how the rollouts it trains are weighted.
    """
    from supo.algo.overlong import treat_overlong

    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {', '.join(ADVANTAGE_ESTIMATORS)}")
    check_groups(rollouts)
    groups = [r.group_id for r in rollouts]
    treated = treat_overlong(overlong, [r.reward for r in rollouts], [r.overlong for r in rollouts],
                             [r.overlong and r.error_observations > 0 for r in rollouts], penalty=overlong_penalty)
    rewards, include, trainable = treated.rewards, treated.in_stats, treated.trainable
    nseg = np.array([max(1, len(r.context_segments)) for r in rollouts], dtype=np.float64)
    stat_segments = np.where(trainable, nseg, 1.0)
    adv = ADVANTAGE_ESTIMATORS[estimator](rewards, groups, stat_segments, include, eps=eps)
    degenerate = 0
    ga = np.asarray(groups)
    unique = list(dict.fromkeys(groups))
    for g in unique:
        idx = np.flatnonzero((ga == g) & include)
        if len(idx) == 0 or np.all(rewards[idx] == rewards[idx][0]):
            degenerate += 1
    return RolloutAdvantages(adv, trainable, degenerate, len(unique))


def broadcast(rollouts: Sequence[Rollout], result: RolloutAdvantages) -> list[TrainingSample]:
    """Broadcast each rollout's advantage onto each of its segments' *own* loss masks (trigger samples included)."""
    samples = []
    for j, r in enumerate(rollouts):
        a = float(result.advantages[j])
        keep = bool(result.trainable[j])
        for seg in r.segments:
            mask = list(seg.response_mask) if keep else [0] * len(seg.response_mask)
            samples.append(
                TrainingSample(
                    prompt_ids=list(seg.prompt_ids),
                    response_ids=list(seg.response_ids),
                    loss_mask=mask,
                    old_logprobs=list(seg.logprobs),
                    advantages=[a * m for m in mask],
                    rollout=j,
                    sampled_mask=list(seg.response_mask),
                )
            )
    return samples
