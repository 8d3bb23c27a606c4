#!/usr/bin/env bash
# The GPU check for the TensorRT path (issue 5), for a machine with an NVIDIA GPU:
#   1. the TensorRT tests (engine I/O = plan config; FP16/INT8 parity with ONNX Runtime), which skip with the
#      reason where TensorRT or CUDA is missing;
#   2. bench/gpu_check.py: PyTorch CUDA throughput by batch size (FP32/FP16, CUDA graphs) and, with TensorRT,
#      engine builds, parity and throughput -> bench/results/gpu.json (or $OUT/gpu.json when $OUT is set).
# Uses .venv/bin/python when there is one, else python3 (a GPU image's own PyTorch with CUDA).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RESULT=${OUT:-bench/results}/gpu.json
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not available"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
"$PY" -c 'import tensorrt; print("tensorrt", tensorrt.__version__)' || echo "tensorrt: not installed (TensorRT part will be skipped)"
status=0
if "$PY" -c 'import pytest' 2>/dev/null; then
  "$PY" -m pytest -q -rs -p no:cacheprovider tests/trainer/test_export_tensorrt.py || status=$?
else
  echo "pytest: not installed; skipping the TensorRT tests"
fi
"$PY" bench/gpu_check.py --out "$RESULT" || status=$?
exit $status
