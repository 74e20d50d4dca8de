"""Typed data contracts between the environment, the rollout loop and the trainer (docs/design.md §3).

Four records cross module boundaries:

* :class:`Task` — one problem instance, as stored in the train/test parquet splits.
* :class:`Segment` — one training row: a prompt, the response that followed it, and which response tokens the policy
  sampled. A rollout with ``I`` summaries yields ``I + 1`` segments (R5), plus one extra segment per dropped trigger
  action when ``train_trigger_action`` is on (R5b).
* :class:`Rollout` — one attempt at one task: its outcome (one reward, R7) and its segments.
* :class:`TrainingSample` — one segment ready for the loss: masks and per-token advantages (R8–R10).

Token ids and behaviour log-probs are stored exactly as the engine returned them (R6); nothing here is re-tokenized.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

OVERLONG_REASONS = ("max_steps", "max_summaries", "engine_limit")


@dataclass
class Task:
    """One problem instance.

    Attributes:
        id: unique id within its split, e.g. ``"train-00042"``.
        env: name of the environment in the env registry (``supo.envs.ENVS``).
        env_config: JSON-serialisable dict the environment needs to rebuild the hidden state (seeded, so ``reset``
            is deterministic).
        split: ``"train"`` or ``"test"``.
        prompt: chat messages (``[{"role": ..., "content": ...}]``): system (tool specs) and user (the task). This is the
            *initial prompt* that every segment of a rollout starts from (R3).
        reference: the hidden answer, never shown to the policy; used for the reward and for reports.
        difficulty: the number of calls the expert needs (for reporting; not used by the policy).
    """

    id: str
    env: str
    env_config: dict[str, Any]
    split: str
    prompt: list[dict[str, str]]
    reference: str
    difficulty: int = 0

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["env_config"] = json.dumps(self.env_config, sort_keys=True)
        row["prompt"] = json.dumps(self.prompt)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Task":
        return cls(
            id=str(row["id"]),
            env=str(row["env"]),
            env_config=json.loads(row["env_config"]),
            split=str(row["split"]),
            prompt=json.loads(row["prompt"]),
            reference=str(row["reference"]),
            difficulty=int(row.get("difficulty", 0)),
        )


@dataclass
class Segment:
    """One training row (R5).

    Attributes:
        prompt_ids: the segment's prompt: the initial prompt for segment 0; initial prompt + continuation line + summary
            for later segments; for a trigger-action sample, the whole context the action was sampled from.
        response_ids: every token after the prompt, in order: actions, observations, the summary instruction, the
            summary (or the final answer).
        response_mask: 1 exactly on tokens the policy sampled (actions, summaries), 0 on observations, instructions and
            template tokens. Same length as ``response_ids``.
        logprobs: behaviour log-probs of ``response_ids`` under the policy that sampled them (0.0 where the mask is 0).
        index: position of the segment within its rollout (trigger-action samples carry the index of the segment
            they were sampled in).
        is_last: True for the rollout's final segment.
        kind: ``"segment"`` for a context segment, ``"trigger_action"`` for a dropped trigger action (R5b).
    """

    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[int]
    logprobs: list[float]
    index: int = 0
    is_last: bool = False
    kind: str = "segment"

    def __post_init__(self) -> None:
        check_segment(self)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    @property
    def num_trainable(self) -> int:
        return int(sum(self.response_mask))


def check_segment(seg: Segment) -> None:
    """Raise ``ValueError`` naming the broken invariant of a segment."""
    n = len(seg.response_ids)
    if len(seg.response_mask) != n or len(seg.logprobs) != n:
        raise ValueError(
            f"segment {seg.index} ({seg.kind}): response_ids has {n} tokens but response_mask has "
            f"{len(seg.response_mask)} and logprobs {len(seg.logprobs)}"
        )
    if any(m not in (0, 1) for m in seg.response_mask):
        raise ValueError(f"segment {seg.index} ({seg.kind}): response_mask must hold only 0 and 1")
    if not seg.prompt_ids:
        raise ValueError(f"segment {seg.index} ({seg.kind}): empty prompt")
    if seg.kind not in ("segment", "trigger_action"):
        raise ValueError(f"segment {seg.index}: unknown kind {seg.kind!r}")


@dataclass
class Rollout:
    """One attempt at one task (docs/design.md §3).

    Attributes:
        task_id: the task's id.
        group_id: the GRPO group key = task id + training step. All rollouts of a group are attempts at the same task
            in the same step (R8).
        index: position of the rollout within its group (0..G-1).
        reward: one scalar outcome for the whole rollout, shared by all its segments (R7).
        finished: True when the rollout ended with a final answer.
        overlong: True when it ended without an answer (R4); ``overlong_reason`` says why (``OVERLONG_REASONS``).
        num_summaries: summaries made in this rollout.
        summary_format_misses: summaries that lacked ``<summary>`` tags (used whole, R3).
        tool_calls: actions taken (valid or not), including dropped trigger actions.
        error_observations: actions whose observation was an ``Error: ...`` (malformed or impossible calls); an
            overlong rollout with any is an *error loop*, one without a *budget cut* (``supo.algo.overlong``).
        summaries_judged: summaries the environment's oracle could judge (``EnvSpec.summary_oracle``; 0 without one).
        summaries_correct: of those, summaries that carried the state needed to continue.
        first_failure: the first thing that went wrong, in the rollout's own order: ``"wrong_summary"`` (a summary the
            oracle judged wrong) or ``"action_error"`` (an ``Error:`` observation); None while neither happened.
        tool_format_misses: actions holding no call in the model's tool-call format at all (``model.tool_parser``)
            that the environment refused (``Error:``), so a syntax the environment reads besides is no miss.
        context_lengths: the working-context length (R1) each segment reached, one entry per context segment, measured
            at its peak (before the trigger pair was dropped).
        generation_peaks: per context segment, the longest context the policy generated in: the largest (context +
            generated tokens) over the segment's generations, the summary turn included (C2's working context).
        tokens_generated: tokens the engine sampled for this rollout.
        tokens_processed: prefill + decode tokens the engine had to process for this rollout (uncached view: each
            generation call processes its full context once plus its new tokens).
        segments: the training rows, context segments first then trigger-action samples, in sampling order.
        answer: the final answer text, if any.
        transcript: a human-readable decoded transcript (for inspection artifacts only; never used for training).
    """

    task_id: str
    group_id: str
    index: int
    reward: float = 0.0
    finished: bool = False
    overlong: bool = False
    overlong_reason: str | None = None
    num_summaries: int = 0
    summary_format_misses: int = 0
    tool_calls: int = 0
    error_observations: int = 0
    tool_format_misses: int = 0
    summaries_judged: int = 0
    summaries_correct: int = 0
    first_failure: str | None = None
    context_lengths: list[int] = field(default_factory=list)
    generation_peaks: list[int] = field(default_factory=list)
    tokens_generated: int = 0
    tokens_processed: int = 0
    segments: list[Segment] = field(default_factory=list)
    answer: str | None = None
    transcript: list[str] = field(default_factory=list)

    @property
    def context_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.kind == "segment"]

    def to_record(self, with_tokens: bool = False) -> dict[str, Any]:
        """A JSON-serialisable summary of the rollout (token ids only when ``with_tokens``)."""
        rec = {k: v for k, v in asdict(self).items() if k != "segments"}
        rec["num_segments"] = len(self.context_segments)
        if with_tokens:
            rec["segments"] = [asdict(s) for s in self.segments]
        return rec


@dataclass
class TrainingSample:
    """One segment ready for the loss (R8–R10): its token ids, the loss mask after overlong masking (R9), the
    behaviour log-probs (R6) and per-token advantages (the rollout's advantage on the segment's own mask, R8) —
    what ``supo.algo.advantage.broadcast`` makes of a :class:`Segment` and the trainer consumes."""

    prompt_ids: list[int]
    response_ids: list[int]
    loss_mask: list[int]
    old_logprobs: list[float]
    advantages: list[float]
    rollout: int  # index of the rollout in the step's list (for checks and metrics)
    sampled_mask: list[int] | None = None  # 1 on tokens the policy sampled, before overlong masking (None: loss_mask)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    @property
    def sampled(self) -> list[int]:
        return self.loss_mask if self.sampled_mask is None else self.sampled_mask
