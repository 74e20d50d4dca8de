"""The rollout loop's inserted chunks, derived from a model's own chat template.

A model trained elsewhere comes with its own chat template (Jinja, rendered by ``apply_chat_template``). The loop
inserts pieces between sampled tokens — an observation, the summary instruction, the continuation line of a reset
prompt — and must insert them exactly as the template would write the conversation, or the model sees markup it was
never trained on. The pieces are read off the template: a conversation is rendered, then rendered again with one
more message, and the chunk is the difference (each rendering must extend the previous one, which is what a chat
template does when a message is appended). Placeholders stand for the content that varies (an observation, a
summary) and split a difference into the part before and the part after it.

The conversations, with H the template's generation prompt (the assistant header) and E its end of an assistant
turn (the first token of E must be a single token: the one the engine stops on):

* initial prompt   ``[system, user]`` + H;
* action           ``[..., assistant A]``: the sampled text A, then E;
* observation      ``[..., assistant A, tool O]`` + H: E's rest after its first token, the tool header, O, H;
* summary request  ``[..., tool O, assistant "", user v_sum]`` + H: the trigger drops the last (action,
  observation) pair and leaves an open assistant turn; the request closes it empty and asks for the summary;
* continuation     ``[system, user, user continuation + "\\n" + S]`` + H after the initial prompt without H.

Everything is ids from the tokenizer; nothing sampled is re-encoded (R6).
"""

from __future__ import annotations

from typing import Any

from supo.errors import DataError
from supo.models import SUMMARY_CLOSE, SUMMARY_OPEN

_SYS, _USER, _ACT, _OBS, _SUM = "SUPOSYSTEMTEXT", "SUPOUSERTEXT", "SUPOACTIONTEXT", "SUPOOBSERVATIONTEXT", "SUPOSUMMARY"


class ChatTemplateError(DataError):
    """A model's chat template cannot write a conversation the rollout loop needs (a role it lacks or drops)."""


def _name(tokenizer) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or "the tokenizer")


def _render(tokenizer, messages: list[dict[str, str]], generation: bool) -> str:
    roles = ", ".join(m["role"] for m in messages)
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    except Exception as e:  # jinja's raise_exception, a missing template, an unknown role
        raise ChatTemplateError(f"{_name(tokenizer)}: the chat template cannot render the roles [{roles}] the "
                                f"rollout loop needs ({e.__class__.__name__}: {str(e)[:160]})") from None
    if not isinstance(text, str):
        raise ChatTemplateError(f"{_name(tokenizer)}: apply_chat_template returned {type(text).__name__}, not text")
    for m in messages:
        if m["content"] and m["content"] not in text:
            raise ChatTemplateError(f"{_name(tokenizer)}: the chat template drops the content of a {m['role']!r} "
                                    f"message (roles [{roles}]); the rollout loop needs that role")
    return text


def _after(longer: str, shorter: str, what: str, tokenizer) -> str:
    if not longer.startswith(shorter):
        raise ChatTemplateError(f"{_name(tokenizer)}: the chat template rewrites the conversation when {what} is "
                                f"appended (the rendering does not extend the previous one); supo inserts chunks "
                                f"after sampled tokens and needs templates that only append")
    return longer[len(shorter):]


def _split(text: str, marker: str, what: str, tokenizer) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise ChatTemplateError(f"{_name(tokenizer)}: the chat template does not write the {what} once as given")
    before, after = text.split(marker)
    return before, after


def derive_chunks(tokenizer, summary_instruction: str, continuation: str) -> dict[str, Any]:
    """The fields of :class:`~supo.rollout.templates.Templates` (all but ``tool_parser``) for ``tokenizer``'s own
    chat template; raises :class:`ChatTemplateError` naming what the template cannot do."""
    enc = lambda s: list(tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(f"{_name(tokenizer)}: the tokenizer has no chat template (import the model with "
                                f"`supo-cli import-model`, which keeps the model's own)")
    base = [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER}]
    prompt = _render(tokenizer, base, True)
    header = _after(prompt, _render(tokenizer, base, False), "the generation prompt", tokenizer)
    if not header:
        raise ChatTemplateError(f"{_name(tokenizer)}: the chat template writes no assistant header for "
                                f"add_generation_prompt=True")
    with_action = base + [{"role": "assistant", "content": _ACT}]
    turn = _after(_render(tokenizer, with_action, False), prompt, "an assistant message", tokenizer)
    if not turn.startswith(_ACT):
        raise ChatTemplateError(f"{_name(tokenizer)}: the chat template writes more than the generation prompt "
                                f"before an assistant message's content ({turn[:40]!r}...)")
    end = turn[len(_ACT):]
    end_ids = enc(end)
    if not end_ids or not tokenizer.convert_ids_to_tokens(end_ids[0]) or \
            not end.startswith(tokenizer.convert_ids_to_tokens(end_ids[0])):
        raise ChatTemplateError(f"{_name(tokenizer)}: the chat template ends an assistant turn with {end!r}, which "
                                f"does not start with a single end-of-turn token the engine can stop on")
    eos_text = tokenizer.convert_ids_to_tokens(end_ids[0])
    end_rest = end[len(eos_text):]
    action_text = _render(tokenizer, with_action, False)
    with_obs = with_action + [{"role": "tool", "content": _OBS}]
    obs_text = _after(_render(tokenizer, with_obs, True), action_text, "a 'tool' message", tokenizer)
    obs_before, obs_after = _split(obs_text, _OBS, "observation", tokenizer)
    if not obs_after.endswith(header):
        raise ChatTemplateError(f"{_name(tokenizer)}: a 'tool' message is not followed by the assistant header")
    with_request = with_obs + [{"role": "assistant", "content": ""},
                               {"role": "user", "content": summary_instruction}]
    request = _after(_render(tokenizer, with_request, True), _render(tokenizer, with_obs, True),
                     "the summary request (an empty assistant turn, then a 'user' message)", tokenizer)
    with_cont = base + [{"role": "user", "content": f"{continuation}\n{_SUM}"}]
    cont = _after(_render(tokenizer, with_cont, True), _render(tokenizer, base, False),
                  "a second 'user' message (the continuation)", tokenizer)
    cont_before, cont_after = _split(cont, _SUM, "continuation", tokenizer)
    prompt_ids = enc(prompt)
    if prompt_ids[len(prompt_ids) - len(enc(header)):] != enc(header):
        raise ChatTemplateError(f"{_name(tokenizer)}: the assistant header {header!r} does not tokenize the same at "
                                f"the end of a prompt as on its own")
    return dict(
        eos_id=end_ids[0],
        obs_prefix=enc(end_rest + obs_before),
        obs_suffix=enc(obs_after),
        summary_request=enc(request),
        continuation_prefix=enc(cont_before),
        continuation_suffix=enc(cont_after),
        assistant_header=enc(header),
        summary_open=enc(SUMMARY_OPEN),
        summary_close=enc(SUMMARY_CLOSE),
    )
