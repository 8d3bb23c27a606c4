#!/usr/bin/env bash
# The GPU check for the TensorRT path, for a machine with an NVIDIA GPU:
#   1. whether the installed TensorRT is the one the deployed Triton image loads (trainer/tensorrt.py);
#   2. the Q/DQ INT8 graph on CPU (tests/trainer/test_quantize.py) and the TensorRT tests (engine I/O = plan
#      config; FP16 and INT8 parity with ONNX Runtime; the INT8 plan built from the Q/DQ graph keeps the
#      general tagger's tags on sample photos), which skip with the reason where TensorRT or CUDA is missing;
#   3. bench/gpu_check.py: PyTorch CUDA throughput by batch size (FP32/FP16, CUDA graphs) and, with TensorRT,
#      FP16 and INT8 (Q/DQ) engine builds, parity and throughput -> bench/results/gpu.json ($OUT/gpu.json).
# Uses .venv/bin/python when there is one, else python3 (a GPU image's own PyTorch with CUDA).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RESULT=${OUT:-bench/results}/gpu.json
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not available"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
"$PY" -c '
from trainer.tensorrt import TENSORRT_VERSION, TRITON_IMAGE, same_release
try:
    import tensorrt
except ImportError:
    print("tensorrt: not installed (TensorRT part will be skipped)")
else:
    ok = same_release(tensorrt.__version__)
    print("tensorrt", tensorrt.__version__, "- plans load in" if ok else "- plans will NOT load in",
          TRITON_IMAGE, "(TensorRT %s)" % TENSORRT_VERSION)
'
status=0
if "$PY" -c 'import pytest' 2>/dev/null; then
  "$PY" -m pytest -q -rs -s -p no:cacheprovider tests/trainer/test_quantize.py \
    tests/trainer/test_export_tensorrt.py || status=$?
else
  echo "pytest: not installed; skipping the tests"
fi
"$PY" bench/gpu_check.py --out "$RESULT" || status=$?
exit $status
