"""`supo-cli import-model` (supo.import_model): a GGUF file or an HF folder → a standard HF folder that transformers
and vLLM load unchanged; a missing, foreign or truncated file, a folder without weights or tokenizer, and a chat
template lacking a role the loop needs are each one error naming the file (exit code 2 on the command line)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supo.config import PAPER_CONTINUATION, PAPER_SUMMARY_INSTRUCTION
from supo.import_model import ModelImportError, import_model, link_model, read_gguf
from supo.models import load_tokenizer

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"SUPO_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cli.main", "import-model", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _truncated(src: Path, dst: Path, nbytes: int) -> Path:
    with open(src, "rb") as f:
        dst.write_bytes(f.read(nbytes))
    return dst


def test_read_gguf_facts(smollm2_gguf):
    info = read_gguf(smollm2_gguf)
    assert info["architecture"] == "llama" and info["tensors"] == 272
    assert info["pre_tokenizer"] == "smollm" and "<|im_start|>" in info["chat_template"]


@pytest.mark.parametrize("make,why", [
    (lambda tmp, gguf: tmp / "nowhere.gguf", "does not exist"),
    (lambda tmp, gguf: (tmp / "notes.gguf").write_text("hello") and tmp / "notes.gguf", "is not a GGUF file"),
    (lambda tmp, gguf: _truncated(gguf, tmp / "head.gguf", 64), r"\(64 bytes\) is not a readable GGUF file"),
    (lambda tmp, gguf: _truncated(gguf, tmp / "half.gguf", 8 << 20), r"is not a readable GGUF file \(truncated"),
], ids=["missing", "not-gguf", "truncated-header", "truncated-tensors"])
def test_bad_model_files_are_named(tmp_path, smollm2_gguf, make, why):
    path = make(tmp_path, smollm2_gguf)
    with pytest.raises(ModelImportError, match=why) as e:
        import_model(path, tmp_path / "out")
    assert str(path) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_the_command_names_a_bad_file_in_one_line(tmp_path, smollm2_gguf):
    bad = _truncated(smollm2_gguf, tmp_path / "half.gguf", 8 << 20)
    proc = _cli(str(bad), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model file") and str(bad) in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_an_hf_folder_is_imported_and_loads_unchanged(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "tiny"
    facts = import_model(tiny_model_dir, out, log=lambda *_: None)
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "supo_import.json",
            "chat_template.jinja"} <= {p.name for p in out.iterdir()}
    assert facts["format"] == "hf" and json.loads((out / "supo_import.json").read_text())["end_of_turn"] == "<|im_end|>"
    a = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    b = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"][0] == load_tokenizer(out).convert_tokens_to_ids("<|im_end|>")
    with pytest.raises(ModelImportError, match="exists and is not empty"):
        import_model(tiny_model_dir, out)
    import_model(tiny_model_dir, out, force=True, log=lambda *_: None)


def test_bad_hf_folders_are_named(tmp_path, tiny_model_dir):
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_model_dir, no_tok)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / name).unlink()
    with pytest.raises(ModelImportError, match=r"no_tokenizer holds no tokenizer"):
        import_model(no_tok, tmp_path / "out")
    cut = tmp_path / "cut_weights"
    shutil.copytree(tiny_model_dir, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelImportError, match=r"model.safetensors: .* \(truncated\)"):
        import_model(cut, tmp_path / "out")


def test_a_template_lacking_a_role_the_loop_needs_is_named_at_import(tmp_path, tiny_model_dir):
    from supo.models import CHAT_TEMPLATE

    folder = tmp_path / "no_tool_role"
    shutil.copytree(tiny_model_dir, folder)
    template = CHAT_TEMPLATE.replace("{% for m in messages %}", "{% for m in messages %}{% if m['role'] == 'tool' %}"
                                     "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}")
    (folder / "chat_template.jinja").write_text(template)
    with pytest.raises(ModelImportError, match=r"no_tool_role: .*cannot render the roles \[.*tool\].*alternate"):
        import_model(folder, tmp_path / "out")
    (folder / "chat_template.jinja").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelImportError, match="has no chat template"):
        import_model(folder, tmp_path / "out")


def test_model_source_is_linked_as_paths_model(tmp_path, tiny_model_dir):
    src = tmp_path / "models" / "imported"
    shutil.copytree(tiny_model_dir, src)
    dst = tmp_path / "models" / "profile" / "array"
    link_model(src, dst, log=lambda *_: None)
    assert dst.is_symlink() and not Path(dst.readlink()).is_absolute()
    assert load_tokenizer(dst).chat_template == load_tokenizer(src).chat_template
    link_model(src, dst, log=lambda *_: None)  # again: re-pointed, no error
    with pytest.raises(ModelImportError, match="model.source .*missing is not a model folder"):
        link_model(tmp_path / "missing", tmp_path / "models" / "other")


@pytest.mark.slow
def test_smollm2_imports_and_loads_in_transformers_and_vllm_unchanged(smollm2_dir, smollm2_gguf):
    """The imported folder: transformers reads the same weights the GGUF holds, and vLLM serves it as written, its
    greedy continuation of a chat prompt equal to transformers'."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from supo.config import EngineConfig
    from supo.contracts import GenRequest
    from supo.engines.vllm_engine import VLLMPolicy
    from supo.rollout.templates import Templates

    facts = json.loads((smollm2_dir / "supo_import.json").read_text())
    assert facts["parameters"] == 134515008 and facts["digit_split_restored"] and facts["end_of_turn_id"] == 2
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    direct = AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name,
                                                  dtype=torch.float32)
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    for name, p in direct.state_dict().items():
        assert torch.equal(model.state_dict()[name], p), name
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    with torch.no_grad():
        hf = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids):].tolist()
    t = Templates.build(load_tokenizer(smollm2_dir), PAPER_SUMMARY_INSTRUCTION, PAPER_CONTINUATION)
    engine = VLLMPolicy(smollm2_dir, EngineConfig(max_model_len=256, max_num_seqs=4, kv_cache_gib=1.0),
                        temperature=0.0)
    (res,) = engine.generate([GenRequest(0, ids, "action", 6, 0)])
    assert res.token_ids[:3] == hf[:3]
    assert "Paris" in tok.decode(hf) and t.eos_id == 2
