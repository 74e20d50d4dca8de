"""A rollout's segment bookkeeping (R2, R3, R5, R5b), as pure operations on the segment being written.

The agent loop (``supo.rollout.agent_loop``) decides *when*; these functions say *what happens to the tokens*, with no
engine, environment or tokenizer involved:

* :meth:`OpenSegment.extend` — append tokens to the response: sampled ones with mask 1 and their behaviour log-probs
  (R6), inserted ones (observations, instructions, template tokens) with mask 0 and log-prob 0;
* :func:`drop_last_pair` — R2: the last (action, observation) pair leaves the context; with ``train_trigger_action``
  the action is kept as a training sample of its own (R5b: its prompt is the context it was sampled from);
* :func:`close_with_summary` — R3: the summary closes the segment, and the next one starts from the given prompt
  (initial prompt + continuation + the summary's content);
* :func:`finish` — the rollout ends (answered, or overlong R4): its last segment is closed; a segment without a token
  (the rollout ended right after a reset) is not written, and the one before it is the last;
* :func:`ended_copy` — the rollout as it would end here, leaving the open one untouched (a summary sweep's view).

Each closed segment records its working-context length at its peak (R1), measured before a dropped pair left.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from supo.types import Rollout, Segment


@dataclass
class OpenSegment:
    """The segment being written: its prompt, the response so far (ids, mask, behaviour log-probs), its index in the
    rollout, and the largest working context it reached."""

    prompt: list[int]
    resp: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)
    index: int = 0
    peak: int = 0

    @property
    def context_len(self) -> int:
        """R1: the working context — prompt plus everything after it."""
        return len(self.prompt) + len(self.resp)

    def extend(self, ids: list[int], mask: int, lps: list[float] | None = None) -> None:
        self.resp.extend(ids)
        self.mask.extend([mask] * len(ids))
        self.lps.extend(lps if lps is not None else [0.0] * len(ids))

    def mark_peak(self) -> None:
        self.peak = max(self.peak, self.context_len)

    def copy(self) -> OpenSegment:
        return OpenSegment(list(self.prompt), list(self.resp), list(self.mask), list(self.lps), self.index, self.peak)


def drop_last_pair(seg: OpenSegment, rollout: Rollout, pair_start: int, action_len: int,
                   train_trigger_action: bool) -> None:
    """R2: remove the last (action, observation) — from ``pair_start`` on, the action ``action_len`` tokens long —
    from the context; R5b: with ``train_trigger_action`` the action becomes a trigger-action sample of the rollout."""
    if train_trigger_action:
        rollout.segments.append(
            Segment(
                prompt_ids=seg.prompt + seg.resp[:pair_start],
                response_ids=seg.resp[pair_start : pair_start + action_len],
                response_mask=seg.mask[pair_start : pair_start + action_len],
                logprobs=seg.lps[pair_start : pair_start + action_len],
                index=seg.index,
                kind="trigger_action",
            )
        )
    del seg.resp[pair_start:], seg.mask[pair_start:], seg.lps[pair_start:]


def close_segment(seg: OpenSegment, rollout: Rollout, is_last: bool) -> None:
    """Write the open segment into the rollout (with its peak context) and open the next, empty one."""
    if seg.resp:
        rollout.context_lengths.append(max(seg.peak, seg.context_len))
        rollout.segments.append(
            Segment(prompt_ids=list(seg.prompt), response_ids=seg.resp, response_mask=seg.mask, logprobs=seg.lps,
                    index=seg.index, is_last=is_last)
        )
    elif is_last:  # the rollout ended before its new segment held a token: no empty segment, the one before is last
        context = rollout.context_segments
        if context:
            context[-1].is_last = True
    seg.resp, seg.mask, seg.lps = [], [], []
    seg.index += 1
    seg.peak = 0


def close_with_summary(seg: OpenSegment, rollout: Rollout, ids: list[int], lps: list[float],
                       next_prompt: list[int]) -> None:
    """R3: the summary's tokens (sampled: mask 1) end the segment; the next segment's prompt is ``next_prompt``."""
    seg.extend(ids, 1, lps)
    seg.mark_peak()
    close_segment(seg, rollout, is_last=False)
    seg.prompt = next_prompt


def finish(seg: OpenSegment, rollout: Rollout, reward: float, overlong: str | None) -> None:
    """End the rollout: its reward (R7), answered or overlong (R4, ``overlong`` says why), its last segment closed."""
    rollout.reward = reward
    rollout.finished = overlong is None
    rollout.overlong = overlong is not None
    rollout.overlong_reason = overlong
    seg.mark_peak()
    close_segment(seg, rollout, is_last=True)


def ended_copy(seg: OpenSegment, rollout: Rollout, overlong: str = "max_summaries") -> Rollout:
    """A copy of the rollout ended here overlong (reward 0), leaving ``seg`` and ``rollout`` as they are."""
    out = copy.deepcopy(rollout)
    finish(seg.copy(), out, reward=0.0, overlong=overlong)
    return out
