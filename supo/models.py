"""Local tokenizer and model building (no hub): the tiny profile's BPE tokenizer and randomly initialised Qwen2.

The tokenizer is a byte-level BPE trained on the task text. Digits are split off as their own pre-tokens (so numbers
become whole tokens) and nothing else is split, so the repeated template strings of the task merge into few tokens.
Chat markup follows ChatML (``<|im_start|>role\\n...<|im_end|>``); ``<|im_end|>`` is the end-of-turn (eos) token.
Tool-call and summary tags are atomic tokens, so the rollout loop can find them in sampled token ids without decoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
SUMMARY_OPEN, SUMMARY_CLOSE = "<summary>", "</summary>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]
TAG_TOKENS = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE, SUMMARY_OPEN, SUMMARY_CLOSE]

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None):
    """Train a byte-level BPE on ``texts`` and wrap it as a ``PreTrainedTokenizerFast`` (saved to ``out_dir``)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern=Regex(r"\d+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, bos_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1 << 20
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(path: str | Path):
    """Load a tokenizer folder written by :func:`build_tokenizer`, or any HF tokenizer folder with a chat template of
    its own (a model brought in by ``supo-cli import-model``: the rollout chunks are then derived from its template,
    :mod:`supo.rollout.chat_chunks`).

    Loaded as ``PreTrainedTokenizerFast`` from ``tokenizer.json``: ``AutoTokenizer`` maps a qwen2 model folder to
    ``Qwen2Tokenizer``, which replaces the trained pre-tokenizer with Qwen's regex and so tokenizes differently from
    what was trained. A tokenizer without a template of its own must carry supo's ChatML markup tokens.
    """
    from transformers import PreTrainedTokenizerFast

    p = Path(path)
    if not (p / "tokenizer.json").exists() and not (p / "tokenizer_config.json").exists():
        raise FileNotFoundError(f"{p} holds no tokenizer (no tokenizer.json); run `supo-cli prepare` first")
    tok = PreTrainedTokenizerFast.from_pretrained(str(p))
    own = isinstance(tok.chat_template, str) and tok.chat_template != CHAT_TEMPLATE
    missing = [t for t in [IM_START, IM_END] if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing and not own:
        raise ValueError(f"tokenizer at {p} lacks the chat-markup tokens {missing} (supo's templates are ChatML) and "
                         f"has no chat template of its own")
    return tok


def build_model(tokenizer, model_cfg, seed: int, out_dir: str | Path | None = None):
    """A randomly initialised Qwen2 sized by ``model_cfg`` (``supo.config.ModelConfig``), saved in HF format."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.num_kv_heads,
        max_position_embeddings=model_cfg.max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
    return model


def load_policy(path: str | Path):
    """Load an HF causal LM (the torch policy) in float32 for training."""
    import torch
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"{p} is not a model folder (no config.json)")
    return AutoModelForCausalLM.from_pretrained(str(p), dtype=torch.float32)


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
