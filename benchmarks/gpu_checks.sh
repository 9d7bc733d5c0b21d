#!/usr/bin/env bash
# The GPU checks in one go, for a CUDA machine with PyTorch preinstalled and no network (the device tool's image):
# optional wheels in .whl/ (packages that image lacks) go to /tmp/site first. Writes logs under $OUT when set.
#   bash benchmarks/gpu_checks.sh
set -u -o pipefail
OUT=${OUT:-/tmp/gpu_checks}; mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:.
else
  export PYTHONPATH=.
fi
export PYTHONUNBUFFERED=1 INFIMM_TEST_DEVICE=${INFIMM_TEST_DEVICE:-cuda}  # cuda: skip rather than fall back to CPU
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers, accelerate, timm, open_clip; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| accelerate', accelerate.__version__, '| timm', timm.__version__, '| open_clip', open_clip.__version__)"
timeout ${TEST_TIMEOUT:-240} python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
timeout ${BENCH_TIMEOUT:-300} python3 benchmarks/bench_gpu.py 2>&1 | tee "$OUT/bench_gpu.log"
