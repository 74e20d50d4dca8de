"""Token-id chunks of the chat template, built once per tokenizer.

Every piece the rollout loop inserts (observation wrappers, the summary instruction, the continuation line) is encoded
here once, as ids; model outputs are never decoded and re-encoded (R6). The layout, in ChatML:

    initial prompt  = <|im_start|>system\\n{tools}<|im_end|>\\n<|im_start|>user\\n{task}<|im_end|>\\n<|im_start|>assistant\\n
    action          = (sampled) ... <|im_end|>
    observation     = \\n<|im_start|>tool\\n{observation}<|im_end|>\\n<|im_start|>assistant\\n
    summary request = \\n<|im_start|>system\\n{v_sum}<|im_end|>\\n<|im_start|>assistant\\n
    reset prompt    = (initial prompt without its last assistant header)
                      <|im_start|>user\\n{continuation}\\n{summary content}<|im_end|>\\n<|im_start|>assistant\\n

That layout is supo's own (the tiny models' ``supo.models.CHAT_TEMPLATE``). Any other model's chunks are derived from
its own chat template (:mod:`supo.rollout.chat_chunks`): conversations are rendered with ``apply_chat_template`` and
the chunks are the differences between them, so an observation is a ``tool`` message, the summary instruction a
``user`` message after the (empty) assistant turn the trigger interrupted, and the continuation a second ``user``
message — each exactly as the model's template writes it. The tool-call format (``model.tool_parser``) travels with
the chunks: the loop reads actions through it and the prompts show its example.
"""

from __future__ import annotations

from dataclasses import dataclass

from supo.envs.tool_parsers import DEFAULT_TOOL_PARSER, ToolParser, get_tool_parser
from supo.models import CHAT_TEMPLATE, IM_END, IM_START, SUMMARY_CLOSE, SUMMARY_OPEN
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
    tool_parser: str = DEFAULT_TOOL_PARSER  # the model's tool-call format (supo.envs.tool_parsers.TOOL_PARSERS)

    @classmethod
    def build(cls, tokenizer, summary_instruction: str, continuation: str,
              tool_parser: str = DEFAULT_TOOL_PARSER) -> "Templates":
        """The chunks for ``tokenizer``: supo's ChatML layout for the tiny models' template, else derived from the
        tokenizer's own chat template (a template that cannot render a role the loop needs raises
        :class:`~supo.rollout.chat_chunks.ChatTemplateError` naming it)."""
        get_tool_parser(tool_parser)  # an unknown name fails here, not at the first action
        if not uses_supo_template(tokenizer):
            from supo.rollout.chat_chunks import derive_chunks

            return cls(**derive_chunks(tokenizer, summary_instruction, continuation), tool_parser=tool_parser)
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
            tool_parser=tool_parser,
        )

    @classmethod
    def from_config(cls, tokenizer, cfg) -> "Templates":
        """The chunks for a run config: its summary instruction, continuation line and ``model.tool_parser``."""
        return cls.build(tokenizer, cfg.prompts.summary_instruction, cfg.prompts.continuation,
                         tool_parser=cfg.model.tool_parser)

    @property
    def parser(self) -> ToolParser:
        return get_tool_parser(self.tool_parser)

    def prompt_ids(self, tokenizer, task: Task) -> list[int]:
        """The task's initial prompt, its format example in this tool-call format (:func:`prompt_ids`)."""
        return prompt_ids(tokenizer, task, self.tool_parser)

    @property
    def obs_overhead(self) -> int:
        return len(self.obs_prefix) + len(self.obs_suffix)

    @property
    def continuation_overhead(self) -> int:
        return len(self.continuation_prefix) + len(self.continuation_suffix)


def uses_supo_template(tokenizer) -> bool:
    """True for a tokenizer carrying supo's own ChatML template (the tiny models built by ``supo-cli prepare``)."""
    return getattr(tokenizer, "chat_template", None) == CHAT_TEMPLATE


def prompt_ids(tokenizer, task: Task, tool_parser: str = DEFAULT_TOOL_PARSER) -> list[int]:
    """The initial prompt (system + task, with the assistant header) as ids, rendered by the tokenizer's chat
    template; with another tool-call format than supo's, the prompts' format example is that format's."""
    messages = get_tool_parser(tool_parser).rewrite_prompt(task.prompt)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
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
