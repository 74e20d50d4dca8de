"""What happens to overlong rollouts (R4, R9) — a named choice behind a registry, pure functions.

A rollout is *overlong* when it ends without an answer: H actions, a trigger with S summaries used, or a generation that
cannot fit the engine. Overlong rollouts are of two kinds, and a treatment may tell them apart:

* an **error loop**: it met at least one ``Error:`` observation (malformed calls, calls out of range, ...): the policy
  broke, and ran out of budget repeating itself;
* a **budget cut**: no error: it was solving the task, and the length budget ended it.

A treatment maps each rollout to the reward it enters the advantage with, whether it is trained (keeps its loss mask)
and whether it counts in its group's mean/std:

* ``loss-mask`` (default; the paper, and its author's code): masked, counted in the statistics with reward 0;
* ``loss-mask-exclude-stats`` (the ECHO reimplementation): masked, and left out of the statistics;
* ``penalty``: trained, with reward ``overlong_penalty`` (a negative number) — something pushes against never
  finishing (the reason DAPO's authors dropped pure masking);
* ``budget-only``: only budget cuts are masked (counted with reward 0); an error loop is trained with its reward 0;
* ``none``: every overlong rollout is trained with its reward 0 (the ``supo-no-mask`` ablation).

Finished rollouts are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from supo.registry import registrar


@dataclass(frozen=True)
class OverlongTreatment:
    """Per rollout: the reward it enters the advantage with, whether it keeps its loss mask, whether it counts in its
    group's statistics."""

    rewards: np.ndarray  # float
    trainable: np.ndarray  # bool
    in_stats: np.ndarray  # bool


OverlongFn = Callable[..., OverlongTreatment]
OVERLONG_TREATMENTS: dict[str, OverlongFn] = {}
register_overlong = registrar(OVERLONG_TREATMENTS, "overlong treatment")


def _arrays(rewards, overlong, error_loop):
    return (np.asarray(rewards, dtype=np.float64), np.asarray(overlong, dtype=bool),
            np.asarray(error_loop, dtype=bool))


@register_overlong("loss-mask")
def loss_mask(rewards, overlong, error_loop, penalty: float = -1.0) -> OverlongTreatment:
    """Overlong: loss mask 0; counted in the statistics with its reward (0)."""
    r, o, _ = _arrays(rewards, overlong, error_loop)
    return OverlongTreatment(r, ~o, np.ones_like(o))


@register_overlong("loss-mask-exclude-stats")
def loss_mask_exclude_stats(rewards, overlong, error_loop, penalty: float = -1.0) -> OverlongTreatment:
    """Overlong: loss mask 0, and not in its group's statistics."""
    r, o, _ = _arrays(rewards, overlong, error_loop)
    return OverlongTreatment(r, ~o, ~o)


@register_overlong("penalty")
def penalty(rewards, overlong, error_loop, penalty: float = -1.0) -> OverlongTreatment:
    """Overlong: trained, with reward ``penalty``."""
    r, o, _ = _arrays(rewards, overlong, error_loop)
    return OverlongTreatment(np.where(o, float(penalty), r), np.ones_like(o), np.ones_like(o))


@register_overlong("budget-only")
def budget_only(rewards, overlong, error_loop, penalty: float = -1.0) -> OverlongTreatment:
    """Only a budget cut (overlong without an ``Error:`` observation) is masked; an error loop is trained with its
    reward (0). Both count in the statistics."""
    r, o, e = _arrays(rewards, overlong, error_loop)
    return OverlongTreatment(r, ~(o & ~e), np.ones_like(o))


@register_overlong("none")
def no_treatment(rewards, overlong, error_loop, penalty: float = -1.0) -> OverlongTreatment:
    """Overlong rollouts are trained and counted like any other, with their reward (0)."""
    r, o, _ = _arrays(rewards, overlong, error_loop)
    return OverlongTreatment(r, np.ones_like(o), np.ones_like(o))


def treat_overlong(name: str, rewards, overlong, error_loop, penalty: float = -1.0) -> OverlongTreatment:
    if name not in OVERLONG_TREATMENTS:
        raise ValueError(f"unknown overlong treatment {name!r}; choose one of {', '.join(OVERLONG_TREATMENTS)}")
    return OVERLONG_TREATMENTS[name](rewards, overlong, error_loop, penalty=penalty)
