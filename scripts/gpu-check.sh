#!/usr/bin/env bash
# The teacher's variants on an NVIDIA GPU: served on CUDA and TensorRT (fp16), checked for
# parity and accuracy against the CPU, timed at batch 1 and 32. Built to finish within
# 10 minutes on a machine with the GPU driver.
#
#   scripts/gpu-check.sh [MODELS]
#
# MODELS: variant folders of the SST-2 teacher (default: benchmarks/results/gpu-models,
# built here with the compressor from ../shared/models/minilm-l6-sst2: original, int8,
# int8-static). The GPU runtime goes into its own environment, .venv-gpu:
# onnxruntime-gpu replaces the CPU onnxruntime, and the TensorRT libraries come from
# PyPI's tensorrt-cu12-libs. Offline, point pip at a folder of wheels:
# PIP_FIND_LINKS=/wheels PIP_NO_INDEX=1 scripts/gpu-check.sh.
# Writes benchmarks/results/gpu.json and gpu-check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results
LOG=$OUT/gpu-check.log
MODELS=${1:-$OUT/gpu-models}
SHARED=${SHARED:-../shared}
mkdir -p "$OUT"
exec > >(tee "$LOG") 2>&1

if ! nvidia-smi -L; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi found none)"
  exit 2
fi
started=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - started )) s)"; }

if [ ! -f "$MODELS/original/model.onnx" ]; then
  step "building the teacher's variants into $MODELS"
  make -s venv
  for recipe in "original" "int8 --quantize int8" "int8-static --quantize int8-static"; do
    set -- $recipe
    timeout 300 .venv/bin/compressor compress "$SHARED/models/minilm-l6-sst2" --method none --name "$1" \
      "${@:2}" --calibration "$SHARED/data/sst2/train.tsv" --out "$MODELS"
  done
fi

step "the GPU runtime in .venv-gpu"
python3 -m venv .venv-gpu
timeout 420 .venv-gpu/bin/pip install -q onnxruntime-gpu tokenizers numpy "pydantic>=2.6" fastapi "uvicorn[standard]" \
  prometheus-client pydantic-settings httpx
.venv-gpu/bin/pip install -q -e . --no-deps
timeout 300 .venv-gpu/bin/pip install -q tensorrt-cu12-libs || echo "gpu-check: no TensorRT libraries; its rows fall back"
TRT_LIBS=$(.venv-gpu/bin/python -c "import tensorrt_libs, os; print(os.path.dirname(tensorrt_libs.__file__))" 2>/dev/null || true)
export LD_LIBRARY_PATH="${TRT_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
.venv-gpu/bin/python -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

for provider in cuda tensorrt; do
  step "serving $MODELS on $provider"
  port=$((18000 + RANDOM % 1000))
  SLIMSERVE_EXECUTION_PROVIDER=$provider SLIMSERVE_PORT=$port SLIMSERVE_MODELS="$MODELS" \
    timeout 240 .venv-gpu/bin/python -m service & server=$!
  ready=0
  for _ in $(seq 1 200); do
    if curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; then ready=1; break; fi
    kill -0 $server 2>/dev/null || break
    sleep 1
  done
  if [ $ready = 1 ]; then
    curl -s "http://127.0.0.1:$port/v1/models" | .venv-gpu/bin/python -c \
      "import json,sys; [print(' ', m['name'], m.get('runtime')) for m in json.load(sys.stdin)['models']]"
    curl -s -H 'content-type: application/json' -d '{"inputs": ["a gripping, beautifully acted film"]}' \
      "http://127.0.0.1:$port/v1/models/original/classify"; echo
  else
    echo "gpu-check: the service did not get ready on $provider"
  fi
  kill $server 2>/dev/null || true
  wait $server 2>/dev/null || true
done

step "parity, accuracy and speed per provider"
timeout 300 .venv-gpu/bin/python benchmarks/gpu.py "$MODELS" --shared "$SHARED" --out "$OUT"
step "done"
