"""`supo-cli import-model`: a local GGUF file or HF folder → a standard HF model folder (:mod:`supo.import_model`).

Registered on the app by ``cli/main.py``'s import. A missing, truncated or unreadable source, or a chat template
that cannot write a role the rollout loop needs, is one ``error:`` line naming the file, exit code 2.
"""

from __future__ import annotations

import os

import typer

from cli.app import app, clean_errors, fail


@app.command("import-model")
@clean_errors
def import_model_(
    source: str = typer.Argument(..., help="a .gguf file (weights, tokenizer and chat template in one) or an HF "
                                           "model folder"),
    out: str = typer.Option(..., "--out", help="the HF folder to write, e.g. models/smollm2 (then set "
                                               "model.build: false and model.source to it)"),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
) -> None:
    """Import a local model (no hub): safetensors, config, tokenizer and the model's own chat template, loadable by
    transformers and vLLM unchanged."""
    from supo.import_model import ModelImportError, import_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if os.environ.get("SUPO_PROGRESS", "1") == "0":
        os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantization bar is plain tqdm
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        import_model(source, out, force=force, log=typer.echo)
    except ModelImportError as e:
        fail(str(e))
