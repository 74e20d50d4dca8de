"""Pure parts of the training loop: the warning when the overlong (never-finish) rate doubles within a run."""

from __future__ import annotations

from supo.metrics import overlong_warning


def _h(*rates):
    return [{"step": i, "overlong_rate": r, "error_loop_rate": r / 2, "budget_cut_rate": r / 2}
            for i, r in enumerate(rates)]


def test_overlong_warning_fires_when_the_rate_doubles():
    assert overlong_warning(_h(0.2)) is None
    assert overlong_warning(_h(0.2, 0.3, 0.39)) is None
    w = overlong_warning(_h(0.2, 0.3, 0.4))
    assert w and "0.200 at step 0 -> 0.400 at step 2" in w and "error loops 0.200" in w


def test_overlong_warning_ignores_noise_near_zero():
    assert overlong_warning(_h(0.0, 0.03)) is None  # doubled from 0, but by less than the floor
    assert overlong_warning(_h(0.0, 0.06)) is not None
