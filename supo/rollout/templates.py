"""Token-id chunks of the chat template, built once per tokenizer.

Every piece the rollout loop inserts (observation wrappers, the summary instruction, the continuation line) is encoded
here once, as ids; model outputs are never decoded and re-encoded (R6). The layout, in ChatML:

    initial prompt  = <|im_start|>system\\n{tools}<|im_end|>\\n<|im_start|>user\\n{task}<|im_end|>\\n<|im_start|>assistant\\n
    action          = (sampled) ... <|im_end|>
    observation     = \\n<|im_start|>tool\\n{observation}<|im_end|>\\n<|im_start|>assistant\\n
    summary request = \\n<|im_start|>system\\n{v_sum}<|im_end|>\\n<|im_start|>assistant\\n
    reset prompt    = (initial prompt without its last assistant header)
                      <|im_start|>user\\n{continuation}\\n{summary content}<|im_end|>\\n<|im_start|>assistant\\n
"""

from __future__ import annotations

from dataclasses import dataclass

from supo.models import IM_END, IM_START, SUMMARY_CLOSE, SUMMARY_OPEN
from supo.types import Task

ASSISTANT_HEADER = f"{IM_START}assistant\n"


@dataclass
class Templates:
    eos_id: int
    obs_prefix: list[int]
    obs_suffix: list[int]
    summary_request: list[int]
    continuation_prefix: list[int]
    continuation_suffix: list[int]
    assistant_header: list[int]
    summary_open: list[int]  # the ids of "<summary>" (one id with the tiny tokenizer, several with others)
    summary_close: list[int]

    @classmethod
    def build(cls, tokenizer, summary_instruction: str, continuation: str) -> "Templates":
        enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
        return cls(
            eos_id=tokenizer.convert_tokens_to_ids(IM_END),
            obs_prefix=enc(f"\n{IM_START}tool\n"),
            obs_suffix=enc(f"{IM_END}\n{ASSISTANT_HEADER}"),
            summary_request=enc(f"\n{IM_START}system\n{summary_instruction}{IM_END}\n{ASSISTANT_HEADER}"),
            continuation_prefix=enc(f"{IM_START}user\n{continuation}\n"),
            continuation_suffix=enc(f"{IM_END}\n{ASSISTANT_HEADER}"),
            assistant_header=enc(ASSISTANT_HEADER),
            summary_open=enc(SUMMARY_OPEN),
            summary_close=enc(SUMMARY_CLOSE),
        )

    @property
    def obs_overhead(self) -> int:
        return len(self.obs_prefix) + len(self.obs_suffix)

    @property
    def continuation_overhead(self) -> int:
        return len(self.continuation_prefix) + len(self.continuation_suffix)


def prompt_ids(tokenizer, task: Task) -> list[int]:
    """The initial prompt (system + task, with the assistant header) as ids."""
    ids = tokenizer.apply_chat_template(task.prompt, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def find_ids(seq: list[int], sub: list[int], start: int = 0) -> int:
    """Index of the first occurrence of ``sub`` in ``seq`` at or after ``start``, or -1."""
    n = len(sub)
    for i in range(start, len(seq) - n + 1):
        if seq[i : i + n] == sub:
            return i
    return -1


def summary_content(ids: list[int], t: Templates) -> tuple[list[int], bool]:
    """The ids between ``<summary>`` and ``</summary>`` in a sampled summary, and whether the tags were well formed.

    The tags are found as id sequences in the sampled ids (no decoding and re-encoding). A summary without an opening
    tag is used whole (minus the end-of-turn token) and counts as a format miss (R3); a summary with an opening but no
    closing tag keeps what follows the opening tag and also counts as a miss.
    """
    body = ids[:-1] if ids and ids[-1] == t.eos_id else list(ids)
    i = find_ids(body, t.summary_open)
    if i >= 0:
        start = i + len(t.summary_open)
        end = find_ids(body, t.summary_close, start)
        if end >= 0:
            return body[start:end], True
        return body[start:], False
    end = find_ids(body, t.summary_close)
    if end >= 0:
        body = body[:end] + body[end + len(t.summary_close) :]
    return body, False
