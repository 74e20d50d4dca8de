"""What a machine offers the GPU run (scripts/gpu_smollm2.sh): Python, torch and its device, and every package the
``engine.backend: hf`` / ``trainer.backend: local`` path imports — present (with its version) or missing. vLLM, Ray,
MLflow and DVC are listed for information only: that path needs none of them.

Usage: ``python scripts/gpu_stack.py`` — exit code 2 when a needed package is missing, naming the wheels to carry
(``pip download --no-deps`` them here into ``.whl/``; the script installs ``.whl/*.whl`` without an index).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys

NEEDED = {  # import name -> distribution name: what prepare, sft, train, eval and report import on the hf/local path
    "torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
    "accelerate": "accelerate", "gguf": "gguf", "numpy": "numpy", "pandas": "pandas", "pyarrow": "pyarrow",
    "yaml": "pyyaml", "typer": "typer", "rich": "rich", "matplotlib": "matplotlib", "filelock": "filelock",
    "psutil": "psutil",
}
OPTIONAL = {"vllm": "vllm", "ray": "ray", "mlflow": "mlflow", "dvc": "dvc"}


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> int:
    print(f"python {sys.version.split()[0]}")
    missing = []
    for module, dist in NEEDED.items():
        try:
            importlib.import_module(module)
            print(f"  {dist:14s} {version(dist) or '(version unknown)'}")
        except ImportError as e:
            missing.append(dist)
            print(f"  {dist:14s} MISSING ({e})")
    for module, dist in OPTIONAL.items():
        there = importlib.util.find_spec(module) is not None
        print(f"  {dist:14s} {(version(dist) or 'present') if there else 'absent'} (not needed)")
    import torch

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"torch {torch.__version__}, cuda {torch.version.cuda if cuda else '-'}, device {device}")
    if missing:
        print(f"error: missing {', '.join(missing)}: carry their wheels in .whl/ (README 'Your own model')",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
