#!/usr/bin/env bash
# One script for a CUDA machine (<= 10 minutes): parity tests on the GPU, the model-speed and
# training-speed benchmarks, a short service sweep, and the backends (torch fp16/bf16, ONNX Runtime on CUDA).
# Results go to the folder given.
#   bash bench/gpu_check.sh OUT_DIR
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONUNBUFFERED=1
log() { echo "[gpu_check] $*" | tee -a "$OUT/summary.txt"; }

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "no CUDA device visible to torch: nothing to check"; exit 1
fi
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"

log "1/6 parity on the GPU (tests/model/test_gpu.py)"
timeout 180 "$PY" -m pytest tests/model/test_gpu.py -q -p no:cacheprovider 2>&1 | tee "$OUT/parity.txt" | tail -3
log "parity exit ${PIPESTATUS[0]}"

log "2/6 model speed (float32, then float16)"
timeout 120 "$PY" -m bench.model_speed --device cuda --repeats 20 --json "$OUT/model_speed_fp32.json" \
  2>&1 | tee "$OUT/model_speed_fp32.md" | tail -6
timeout 90 "$PY" -m bench.model_speed --device cuda --dtype float16 --repeats 20 --json "$OUT/model_speed_fp16.json" \
  2>&1 | tee "$OUT/model_speed_fp16.md" | tail -6

log "3/6 training speed (bf16 autocast)"
timeout 90 "$PY" -m bench.train_speed --device cuda --batch 32 --length 128 --steps 5 \
  --json "$OUT/train_speed.json" 2>&1 | tee "$OUT/train_speed.md" | tail -5

log "4/6 short service sweep on the GPU"
MODELS=artifacts
if [ ! -f artifacts/student/config.json ]; then
  MODELS="$OUT/tiny"
  "$PY" -c "from pathlib import Path; from tests.fixtures import tiny_pair; tiny_pair(Path('$MODELS'))"
fi
DISTIL_DEVICE=cuda timeout 150 "$PY" -m bench sweep --start-server --models-dir "$MODELS" --sweep quick \
  --out "$OUT/sweep" 2>&1 | tail -15 | tee -a "$OUT/summary.txt"
log "5/6 paper-size models (BERT-base teacher, 6-layer student) through the service on the GPU"
"$PY" -m bench.paper_models --out "$OUT/paper-models" --tokenizer "$MODELS/teacher" > "$OUT/paper_models.txt" 2>&1
DISTIL_DEVICE=cuda timeout 200 "$PY" -m bench sweep --start-server --models-dir "$OUT/paper-models" --sweep paper \
  --out "$OUT/paper-sweep" --accuracy "" 2>&1 | tail -16 | tee -a "$OUT/summary.txt"
rm -rf "$OUT/paper-models"  # 700 MB of random weights: not worth bringing back

log "6/6 backends on the GPU: torch fp16/bf16 and ONNX Runtime's CUDA provider against torch fp32 on CPU"
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" \
  | tee -a "$OUT/summary.txt"
timeout 120 "$PY" -m pytest tests/app/test_backends_gpu.py -q -rs -p no:cacheprovider 2>&1 \
  | tee "$OUT/backends_gpu.txt" | tail -4
log "backends exit ${PIPESTATUS[0]}"
for dtype in float32 float16 bfloat16; do  # the service on the GPU per precision (torch backend)
  DISTIL_DEVICE=cuda DISTIL_DTYPE=$dtype timeout 60 "$PY" -m bench sweep --start-server --models-dir "$MODELS" \
    --sweep quick --models student --out "$OUT/sweep-torch-$dtype" --accuracy "" 2>&1 | tail -4 | tee -a "$OUT/summary.txt"
done
log "done: $OUT"
