"""Rollout metrics in the one vocabulary shared by MLflow, DVC metrics and reports (docs/design.md §6)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from supo.results import FAILURES, failure_kind
from supo.types import Rollout


def rollout_metrics(rollouts: Sequence[Rollout], *, working_context: int, max_summaries: int) -> dict[str, float]:
    """Success, context, summary and token metrics of a batch of rollouts.

    ``summary_state_accuracy`` (the share of judged summaries that carried the state needed to continue) is present
    only when the env's oracle judged at least one summary; ``failure_<class>_rate`` splits the failed rollouts by
    ``supo.results.FAILURES`` (with ``success_rate`` they sum to 1); ``over_w_segment_frac`` is the share of context
    segments in which the policy generated in a context longer than W (the summary turn included)."""
    if not rollouts:
        raise ValueError("no rollouts to measure")
    n = len(rollouts)
    summaries = sum(r.num_summaries for r in rollouts)
    tool_calls = sum(r.tool_calls for r in rollouts)
    contexts = [c for r in rollouts for c in r.context_lengths] or [0]
    peaks = [p for r in rollouts for p in r.generation_peaks]
    judged = sum(r.summaries_judged for r in rollouts)
    kinds = [failure_kind(r) for r in rollouts]
    groups: dict[str, list[float]] = {}
    for r in rollouts:
        groups.setdefault(r.group_id, []).append(r.reward)
    out = {
        "success_rate": float(np.mean([1.0 if (r.finished and r.reward > 0) else 0.0 for r in rollouts])),
        "mean_reward": float(np.mean([r.reward for r in rollouts])),
        "mean_tool_calls": float(np.mean([r.tool_calls for r in rollouts])),
        "mean_summaries": summaries / n,
        "summary_format_miss_rate": (sum(r.summary_format_misses for r in rollouts) / summaries) if summaries else 0.0,
        "mean_working_context_tokens": float(np.mean(contexts)),
        "max_working_context_tokens": float(max(contexts)),
        "effective_context_tokens": float(working_context * (max_summaries + 1)),
        "overlong_rate": float(np.mean([r.overlong for r in rollouts])),  # the never-finish rate: no answer given
        "error_loop_rate": float(np.mean([r.overlong and r.error_observations > 0 for r in rollouts])),
        "budget_cut_rate": float(np.mean([r.overlong and r.error_observations == 0 for r in rollouts])),
        "max_steps_rate": float(np.mean([r.overlong_reason == "max_steps" for r in rollouts])),  # ended by H
        "error_observation_rate": (sum(r.error_observations for r in rollouts) / tool_calls) if tool_calls else 0.0,
        "tool_call_format_miss_rate": (sum(r.tool_format_misses for r in rollouts) / tool_calls) if tool_calls else 0.0,
        "degenerate_group_frac": float(np.mean([len(set(v)) == 1 for v in groups.values()])),
        "segments_per_rollout": float(np.mean([len(r.context_segments) for r in rollouts])),
        "tokens_generated": float(sum(r.tokens_generated for r in rollouts)),
        "tokens_processed": float(sum(r.tokens_processed for r in rollouts)),
        **{f"failure_{k}_rate": kinds.count(k) / n for k in FAILURES},
    }
    if peaks:  # absent, not 0, where no generation was recorded
        out["over_w_segment_frac"] = float(np.mean([p > working_context for p in peaks]))
        out["max_generation_peak_tokens"] = float(max(peaks))
    if judged:
        out["summary_state_accuracy"] = sum(r.summaries_correct for r in rollouts) / judged
    return out


def overlong_warning(history: list[dict], floor: float = 0.05) -> str | None:
    """A warning when the latest step's overlong (never-finish) rate is at least twice the first step's (and at least
    ``floor`` above it, so that noise around a rate near 0 is not a doubling); None otherwise."""
    if len(history) < 2:
        return None
    first, last = history[0], history[-1]
    a, b = first["overlong_rate"], last["overlong_rate"]
    if b >= 2 * a and b >= a + floor:
        return (f"the overlong rate doubled: {a:.3f} at step {first['step']} -> {b:.3f} at step {last['step']} "
                f"(error loops {last.get('error_loop_rate', 0.0):.3f}, budget cuts {last.get('budget_cut_rate', 0.0):.3f}); "
                f"the policy is learning not to finish (see train.overlong)")
    return None
