#!/usr/bin/env bash
# Create .venv (if missing) and install s2unet with the exact versions of constraints.txt (pyproject.toml
# holds the compatible ranges), offline-friendly:
# torch/torchvision come from the builds served by this machine's pip, and sam2 (an sdist with
# an optional CUDA extension) is built without CUDA and without build isolation so that it
# does not pull a second torch. Safe to re-run: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
if ! "$VPY" -c "import torch, torchvision, sam2, s2unet, pytest, fastapi, uvicorn, selenium, httpx2, kornia, wordllama, highdicom, onnx, onnxscript, onnxruntime" 2>/dev/null; then
  "$VPY" -m pip install -q --upgrade pip setuptools wheel
  "$VPY" -m pip install -q -c constraints.txt torch torchvision
  SAM2_BUILD_CUDA=0 "$VPY" -m pip install -q -c constraints.txt --no-build-isolation sam2
  "$VPY" -m pip install -q -c constraints.txt --no-build-isolation -e ".[test]"
fi
"$VPY" -c "import s2unet, torch; print('s2unet ready: torch', torch.__version__)"
