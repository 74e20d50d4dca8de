#!/usr/bin/env bash
# SmolLM2-135M-Instruct learning on one GPU, without vLLM, Ray, MLflow or DVC (README "Your own model" — on a GPU):
# profiles/smollm2-gpu.yaml runs the transformers engine and the in-process trainer (engine.backend: hf,
# trainer.backend: local), tracking falls back to JSON files. Per env: import the model (once), prepare, evaluate the
# imported model as it is (the "before", test), warm-start (SFT), evaluate the warm start on val (its headroom, where the
# env has a val split), train every arm (GRPO-W, SUPO), evaluate the warm start and the arms over the S_eval sweep on
# test; then the report and summary.md (success before/after with 95 % intervals, tokens/s of generation and of the
# update, step time, CPU and GPU memory per stage).
#
# The model travels in two parts (a call carries at most 64 MiB; the Q4_1 GGUF is 98 MB):
#   here:            bash scripts/split_smollm2.sh                        # .gguf/smollm2.gguf.part-aa, -ab (≤ 48 MiB)
#   device, call 1:  carry .gguf/…-aa:  mkdir -p /tmp/supo-gguf && cp .gguf/smollm2.gguf.part-* /tmp/supo-gguf/
#   device, call 2:  carry .gguf/…-ab and .whl (gguf 0.19.0, 118 kB: the one wheel the machine lacks), made back to
#                    back on the same warm machine:  OUT=$OUT bash scripts/gpu_smollm2.sh
# The parts are joined from GGUF_PARTS (default: /tmp/supo-gguf and .gguf) and checked against scripts/smollm2.sha256.
# MINI=1: the CPU-sized miniature of the very same steps (tests/test_gpu_smollm2.py); SET adds settings to every stage.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then PY=python3; if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi; fi
RUN=runs/smollm2-gpu
OUT=${OUT:-$RUN/out}
P=profiles/smollm2-gpu.yaml
ENVS=${ENVS:-"array funcall"}
EXTRA=${SET:-}
if [ -n "${MINI:-}" ]; then  # the same steps at CPU size: one env, a handful of tasks, one step of everything
  ENVS=${ENVS_MINI:-array}
  EXTRA="-S env.num_train=8 -S env.num_val=2 -S env.num_test=2 -S expert.num_demos=4 -S sft.steps=1 -S sft.batch_size=2
 -S train.steps=1 -S rollout.tasks_per_step=1 -S rollout.group_size=2 -S budget.max_steps=2 -S budget.max_turn_tokens=16
 -S eval.num_tasks=2 -S eval.sweep=[0,2] -S engine.max_num_seqs=4 $EXTRA"
fi
read -r -a SETS <<< "$(echo $EXTRA)"
export SUPO_PROGRESS=${SUPO_PROGRESS:-0} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$RUN" "$OUT"
LOG=$RUN/stages.jsonl
: > "$LOG"

# the packages: wheels carried in .whl are installed without an index; then every needed one must import
if ls .whl/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/supo-site .whl/*.whl
  export PYTHONPATH=/tmp/supo-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
$PY scripts/gpu_stack.py | tee "$OUT/stack.txt"
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" || true

# the model: the installed wheel's GGUF, or the parts joined and checked
if [ ! -f models/smollm2/supo_import.json ]; then
  GGUF=$($PY -c "from supo.import_model import find_smollm2_gguf as f; print(f() or '')")
  if [ -z "$GGUF" ] || [ -n "${FORCE_PARTS:-}" ]; then
    TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
    declare -A seen=()
    for d in ${GGUF_PARTS:-/tmp/supo-gguf .gguf}; do  # each part once (by name), in name order
      for p in "$d"/smollm2.gguf.part-*; do
        if [ -f "$p" ] && [ -z "${seen[$(basename "$p")]:-}" ]; then seen[$(basename "$p")]=$p; fi
      done
    done
    [ ${#seen[@]} -gt 0 ] || { echo "error: no SmolLM2 GGUF and no parts in ${GGUF_PARTS:-/tmp/supo-gguf .gguf} (scripts/split_smollm2.sh)" >&2; exit 2; }
    mapfile -t names < <(printf '%s\n' "${!seen[@]}" | sort)
    for b in "${names[@]}"; do cat "${seen[$b]}"; done > "$TMP/SmolLM2-135M-Instruct.Q4_1.gguf"
    (cd "$TMP" && sha256sum -c "$OLDPWD/scripts/smollm2.sha256") || { echo "error: the joined parts are not the GGUF (sha256 differs): a part is missing or cut short" >&2; exit 2; }
    GGUF=$TMP/SmolLM2-135M-Instruct.Q4_1.gguf
  fi
  $PY scripts/measure_stage.py "$LOG" import $PY -m cli.main import-model "$GGUF" --out models/smollm2 --force
fi

stage() { local name=$1; shift; $PY scripts/measure_stage.py "$LOG" "$name" "$@"; }
CLI=($PY -m cli.main)
status=0
for env in $ENVS; do
  stage "prepare@$env" "${CLI[@]}" prepare -c "$P" "${SETS[@]}" --env "$env"
  stage "eval_base@$env" "${CLI[@]}" eval -c "$P" "${SETS[@]}" --env "$env" --checkpoint "$RUN/models/base/$env" \
    --arm base --seed 0 --sweep --out "$RUN/base_evals/$env"
  stage "sft@$env" "${CLI[@]}" sft -c "$P" "${SETS[@]}" --env "$env"
  if [ -f "$RUN/data/$env/val.parquet" ]; then  # the warm start's headroom, read on val
    stage "eval_val@$env" "${CLI[@]}" eval -c "$P" "${SETS[@]}" -S eval.split=val --env "$env" \
      --checkpoint "$RUN/models/sft/$env" --arm sft --seed 0 --out "$RUN/val_evals/$env"
  fi
  stage "train@$env" "${CLI[@]}" train -c "$P" "${SETS[@]}" --env "$env" --all-arms --all-seeds || status=$?
  stage "eval@$env" "${CLI[@]}" eval -c "$P" "${SETS[@]}" --env "$env" --all-arms --warm-start --all-seeds --sweep \
    || status=$?
done
stage report "${CLI[@]}" report -c "$P" "${SETS[@]}" || status=$?
$PY scripts/smollm2_summary.py "$RUN" $ENVS

cp "$RUN"/stages.jsonl "$RUN"/summary.md "$RUN"/summary.json "$OUT"/ 2>/dev/null || true
mkdir -p "$OUT/metrics" "$OUT/reports"
cp -r "$RUN"/metrics/. "$OUT/metrics/" 2>/dev/null || true
cp "$RUN"/reports/*.md "$RUN"/reports/*.json "$OUT/reports/" 2>/dev/null || true
cp -r "$RUN"/reports/figures "$OUT/reports/" 2>/dev/null || true
echo "results in $OUT (exit $status)"
exit "$status"
