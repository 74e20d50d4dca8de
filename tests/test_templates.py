"""The rollout chunks (supo.rollout.templates, supo.rollout.chat_chunks): supo's own ChatML layout for the tiny models,
unchanged; for any other chat template, chunks read off the template so that what the loop assembles from ids decodes
to exactly what ``apply_chat_template`` writes for the same conversation; a template that cannot write a role the
loop needs is named."""

from __future__ import annotations

import pytest

from supo.config import PAPER_CONTINUATION, PAPER_SUMMARY_INSTRUCTION
from supo.models import CHAT_TEMPLATE, IM_END, load_tokenizer
from supo.rollout.chat_chunks import ChatTemplateError
from supo.rollout.templates import Templates, prompt_ids, uses_supo_template

V, C = PAPER_SUMMARY_INSTRUCTION, PAPER_CONTINUATION

# a template that is not supo's: other role headers, an end-of-turn newline after the marker, a default system line
COLON_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system:\nBe brief.<|im_end|>\n\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ':\n' + m['content'] + '<|im_end|>\n\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant:\n' }}{% endif %}"
)
# SmolLM2-Instruct's (ChatML with a default system line when the conversation has none)
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NO_TOOL_ROLE = CHAT_TEMPLATE.replace(
    "{% for m in messages %}",
    "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('Only user and assistant roles') }}"
    "{% endif %}")
DROPS_TOOL = CHAT_TEMPLATE.replace("{% for m in messages %}", "{% for m in messages if m['role'] != 'tool' %}")
REWRITES = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
            "{% endfor %}{{ '<|im_start|>end\n' }}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
            "{% endif %}")


def _with_template(tiny_tokenizer_dir, template):
    tok = load_tokenizer(tiny_tokenizer_dir)
    tok.chat_template = template
    return tok


def test_tiny_models_keep_supos_chatml_chunks(tiny_tokenizer):
    t = Templates.build(tiny_tokenizer, V, C)
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    assert uses_supo_template(tiny_tokenizer)
    assert t.obs_prefix == enc("\n<|im_start|>tool\n")
    assert t.obs_suffix == enc("<|im_end|>\n<|im_start|>assistant\n")
    assert t.summary_request == enc(f"\n<|im_start|>system\n{V}<|im_end|>\n<|im_start|>assistant\n")
    assert t.continuation_prefix == enc(f"<|im_start|>user\n{C}\n")
    assert t.eos_id == tiny_tokenizer.convert_tokens_to_ids(IM_END)


def _conversation(tok, t, task):
    """Ids as the loop assembles them, and the same conversation rendered by the template as text."""
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    msgs = task.prompt
    p = prompt_ids(tok, task)
    act, obs, summary = "Observe 12", "ready 7", "<summary>3 calls done</summary>"
    after_obs = p + enc(act) + [t.eos_id] + t.obs_prefix + enc(obs) + t.obs_suffix
    conv = msgs + [{"role": "assistant", "content": act}, {"role": "tool", "content": obs}]
    request = after_obs + t.summary_request
    conv_request = conv + [{"role": "assistant", "content": ""}, {"role": "user", "content": V}]
    base = p[: len(p) - len(t.assistant_header)]
    reset = base + t.continuation_prefix + enc(summary) + t.continuation_suffix
    conv_reset = msgs + [{"role": "user", "content": f"{C}\n{summary}"}]
    render = lambda m: tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)  # noqa: E731
    return [(after_obs, render(conv)), (request, render(conv_request)), (reset, render(conv_reset))]


@pytest.mark.parametrize("template", [COLON_TEMPLATE, SMOLLM2_TEMPLATE], ids=["colon", "smollm2"])
def test_derived_chunks_write_the_conversation_as_the_template_does(tiny_tokenizer_dir, tiny_tasks, template):
    tok = _with_template(tiny_tokenizer_dir, template)
    assert not uses_supo_template(tok)
    t = Templates.build(tok, V, C)
    for ids, text in _conversation(tok, t, tiny_tasks[0]):
        assert tok.decode(ids, skip_special_tokens=False) == text


def test_derived_chunks_for_a_foreign_template(tiny_tokenizer_dir):
    tok = _with_template(tiny_tokenizer_dir, COLON_TEMPLATE)
    t = Templates.build(tok, V, C)
    dec = lambda ids: tok.decode(ids, skip_special_tokens=False)  # noqa: E731
    assert t.eos_id == tok.convert_tokens_to_ids(IM_END)  # the template's end of an assistant turn
    assert dec(t.assistant_header) == "<|im_start|>assistant:\n"
    assert dec(t.obs_prefix) == "\n\n<|im_start|>tool:\n"  # the rest of the end of turn, then the tool header
    assert dec(t.obs_suffix) == "<|im_end|>\n\n<|im_start|>assistant:\n"
    assert dec(t.summary_request) == f"<|im_end|>\n\n<|im_start|>user:\n{V}<|im_end|>\n\n<|im_start|>assistant:\n"
    assert dec(t.continuation_prefix) == f"<|im_start|>user:\n{C}\n"


@pytest.mark.parametrize("template,why", [
    (NO_TOOL_ROLE, r"cannot render the roles \[system, user, assistant, tool\].*Only user and assistant roles"),
    (DROPS_TOOL, "drops the content of a 'tool' message"),
    (REWRITES, "rewrites the conversation"),
    ("{{ messages[0]['content'] }}", "no assistant header|drops the content"),
    (CHAT_TEMPLATE + " ", "rewrites the conversation when the generation prompt"),  # text after the generation prompt
])
def test_a_template_lacking_what_the_loop_needs_is_named(tiny_tokenizer_dir, template, why):
    tok = _with_template(tiny_tokenizer_dir, template)
    with pytest.raises(ChatTemplateError, match=why):
        Templates.build(tok, V, C)


def test_load_tokenizer_takes_a_foreign_template_without_chatml_markup(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["hello world"] * 10, trainers.BpeTrainer(vocab_size=50, special_tokens=["<unk>", "<eot>"],
                                                                        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eot>")
    (tmp_path / "bare").mkdir()
    fast.save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(ValueError, match="lacks the chat-markup tokens .* and has no chat template of its own"):
        load_tokenizer(tmp_path / "bare")
    fast.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '<eot>' }}{% endfor %}"
    fast.save_pretrained(str(tmp_path / "own"))
    assert load_tokenizer(tmp_path / "own").chat_template == fast.chat_template
