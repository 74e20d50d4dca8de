"""Tests for supo.models: the locally trained BPE tokenizer and the tiny Qwen2 (fixtures in conftest.py)."""

from __future__ import annotations

import json
import re
import string

import pytest
from env_contract import fuzz_settings
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from supo.envs.base import format_tool_call
from supo.models import (
    IM_END,
    IM_START,
    PAD,
    SUMMARY_CLOSE,
    SUMMARY_OPEN,
    TAG_TOKENS,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    build_model,
    load_policy,
    load_tokenizer,
    num_parameters,
)

FUZZ = fuzz_settings(200, HealthCheck.function_scoped_fixture)
ATOMIC = [IM_START, IM_END, TOOL_CALL_OPEN, TOOL_CALL_CLOSE, SUMMARY_OPEN, SUMMARY_CLOSE]


def _enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def _round_trip(tok, text: str) -> str:
    return tok.decode(_enc(tok, text), skip_special_tokens=False)


# ---------------------------------------------------------------------------------------------------------------------
# tokenizer


def test_tokenizer_round_trips_every_corpus_piece(tiny_tokenizer, tiny_corpus):
    bad = [t for t in set(tiny_corpus) if _round_trip(tiny_tokenizer, t) != t]
    assert not bad, bad[:3]


@FUZZ
@given(data=st.data())
def test_tokenizer_round_trips_joined_corpus_pieces(tiny_tokenizer, tiny_corpus, data):
    pieces = data.draw(st.lists(st.sampled_from(sorted(set(tiny_corpus))), min_size=1, max_size=6))
    sep = data.draw(st.sampled_from(["", "\n", " ", IM_END + "\n" + IM_START]))
    text = sep.join(pieces)
    assert _round_trip(tiny_tokenizer, text) == text


@FUZZ
@given(text=st.text(alphabet=string.printable, max_size=200))
def test_tokenizer_round_trips_random_printable_text(tiny_tokenizer, text):
    assert _round_trip(tiny_tokenizer, text) == text


@FUZZ
@given(text=st.text(max_size=100))
def test_tokenizer_round_trips_random_unicode_text(tiny_tokenizer, text):
    assert _round_trip(tiny_tokenizer, text) == text


@FUZZ
@given(parts=st.lists(st.one_of(st.sampled_from(ATOMIC + [PAD]), st.text(alphabet=string.printable, max_size=8)),
                      max_size=10))
def test_tokenizer_round_trips_text_around_tags(tiny_tokenizer, parts):
    text = "".join(parts)
    assert _round_trip(tiny_tokenizer, text) == text


@pytest.mark.parametrize("tag", ATOMIC + [PAD])
def test_markup_and_tags_are_single_tokens(tiny_tokenizer, tag):
    ids = _enc(tiny_tokenizer, tag)
    assert len(ids) == 1
    assert tiny_tokenizer.convert_ids_to_tokens(ids[0]) == tag
    # also inside running text, glued to its neighbours
    ids_in_text = _enc(tiny_tokenizer, f"abc{tag}{{12")
    assert ids[0] in ids_in_text


def test_tag_ids_are_distinct_and_special_tokens_set(tiny_tokenizer):
    ids = [_enc(tiny_tokenizer, t)[0] for t in ATOMIC + [PAD]]
    assert len(set(ids)) == len(ids)
    assert tiny_tokenizer.eos_token == IM_END
    assert tiny_tokenizer.pad_token == PAD
    assert tiny_tokenizer.eos_token_id == _enc(tiny_tokenizer, IM_END)[0]
    assert tiny_tokenizer.bos_token is None
    # no BOS/EOS is added around plain text
    assert tiny_tokenizer.encode("length 5") == _enc(tiny_tokenizer, "length 5")


def test_numbers_in_corpus_are_single_tokens(tiny_tokenizer, tiny_corpus):
    numbers = {int(m) for t in tiny_corpus for m in re.findall(r"\d+", t)}
    assert set(range(100)) <= numbers  # the fixture corpus shows every value 0..99
    multi = {n: _enc(tiny_tokenizer, str(n)) for n in range(100) if len(_enc(tiny_tokenizer, str(n))) != 1}
    assert not multi
    # digits are split off as their own pre-tokens: a number inside text keeps its single token
    ids_57 = _enc(tiny_tokenizer, "57")
    assert ids_57[0] in _enc(tiny_tokenizer, "running max 57")
    assert ids_57[0] in _enc(tiny_tokenizer, format_tool_call("Get", i=57))


def test_load_tokenizer_keeps_trained_pre_tokenizer(tiny_tokenizer_dir, tiny_tokenizer, tiny_corpus):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    tok = load_tokenizer(tiny_tokenizer_dir)
    texts = [
        format_tool_call("Get", i=3),
        format_tool_call("Max", a=17, b=93),
        f"{SUMMARY_OPEN}next index 4, running sum 61{SUMMARY_CLOSE}",
        f"{IM_START}assistant\n{format_tool_call('Observe')}{IM_END}\n",
        *tiny_corpus[:50],
    ]
    for text in texts:
        assert _enc(tok, text) == raw.encode(text, add_special_tokens=False).ids, text


def test_chat_template_is_chatml(tiny_tokenizer, tiny_tasks):
    task = tiny_tasks[0]
    text = tiny_tokenizer.apply_chat_template(task.prompt, tokenize=False, add_generation_prompt=True)
    sys_msg, user_msg = task.prompt
    assert text == (f"{IM_START}system\n{sys_msg['content']}{IM_END}\n{IM_START}user\n{user_msg['content']}{IM_END}\n"
                    f"{IM_START}assistant\n")


def test_load_tokenizer_on_empty_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_tokenizer(tmp_path)


def test_load_tokenizer_without_chat_markup_raises(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["hello world"] * 10, trainers.BpeTrainer(vocab_size=50, special_tokens=["<unk>"],
                                                                        show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="lacks the chat-markup tokens"):
        load_tokenizer(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# model


def test_model_folder_has_model_and_tokenizer(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "tokenizer.json"} <= names
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "qwen2"
    assert cfg["tie_word_embeddings"] is True


def test_model_saves_and_loads_with_load_policy(tiny_model_dir, tiny_tokenizer, tiny_model_config):
    import torch

    model = load_policy(tiny_model_dir)
    again = load_policy(tiny_model_dir)
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.vocab_size == len(tiny_tokenizer)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.eos_token_id == tiny_tokenizer.eos_token_id
    assert model.config.pad_token_id == tiny_tokenizer.pad_token_id
    sd1, sd2 = model.state_dict(), again.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    # the saved weights are the built ones (same seed → same init)
    built = build_model(tiny_tokenizer, tiny_model_config, seed=0)
    sd0 = built.state_dict()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd1)
    # the loaded tokenizer of the model folder is the trained one
    tok = load_tokenizer(tiny_model_dir)
    text = format_tool_call("Get", i=3)
    assert _enc(tok, text) == _enc(tiny_tokenizer, text)


def test_model_head_dim_is_64(tiny_model_dir):
    model = load_policy(tiny_model_dir)
    attn = model.model.layers[0].self_attn
    assert attn.head_dim == 64
    assert model.config.hidden_size // model.config.num_attention_heads == 64
    assert tuple(attn.q_proj.weight.shape) == (64, 64)


def test_model_has_tied_embeddings(tiny_model_dir):
    import torch

    model = load_policy(tiny_model_dir)
    assert model.config.tie_word_embeddings
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.data_ptr() == head.data_ptr()
    with torch.no_grad():
        emb[0, 0] += 1.0
    assert head[0, 0] == emb[0, 0]
    n = num_parameters(model)
    assert n == sum(p.numel() for p in model.parameters())  # tied weights counted once
    assert n < 200_000


def test_model_forward_on_chat_prompt(tiny_model_dir, tiny_tokenizer, tiny_tasks):
    import torch

    model = load_policy(tiny_model_dir)
    ids = tiny_tokenizer.apply_chat_template(tiny_tasks[0].prompt, tokenize=True, add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    assert out.logits.shape == (1, len(ids), len(tiny_tokenizer))
    assert torch.isfinite(out.logits).all()


def test_build_model_is_seeded(tiny_tokenizer, tiny_model_config):
    import torch

    a = build_model(tiny_tokenizer, tiny_model_config, seed=1).state_dict()
    b = build_model(tiny_tokenizer, tiny_model_config, seed=1).state_dict()
    c = build_model(tiny_tokenizer, tiny_model_config, seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_load_policy_on_empty_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_policy(tmp_path)


def test_tag_tokens_constant_matches_envs():
    assert TAG_TOKENS == [TOOL_CALL_OPEN, TOOL_CALL_CLOSE, SUMMARY_OPEN, SUMMARY_CLOSE]
