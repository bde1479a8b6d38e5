#!/usr/bin/env bash
# Every GPU check in one command, end to end within 10 minutes (issue 29, item 4):
#   here:   make gpu-wheels                     # .whl/: the cp312 wheels the GPU image lacks + the real tokenizer
#   there:  bash bench/gpu_check.sh "$OUT"      # the device tool: carry [".whl"], timeout_s 600
# A lent GPU machine is bare and offline: Python 3.12 with torch (CUDA), transformers, tokenizers, onnxruntime,
# pytest and httpx, no FastAPI/Starlette/uvicorn/pydantic (bench/gpu_wheels.py names what travels and why).
# When .whl/ holds wheels and the Python is 3.12, they go into /tmp/site first (the device README's line).
# Steps, each under `timeout` and inside one overall budget (GPU_CHECK_BUDGET_S, 540 s; a step that no longer
# fits is skipped, so the script ends before the device tool's 600 s):
#   env       the device, torch, onnxruntime's providers, the versions of what travelled
#   parity    tests/model/test_gpu.py: our classes against transformers' on the GPU, fp16/bf16 close to fp32
#   speed-*   bench.model_speed at float32, float16, bfloat16 (paper-size BERT, DistilBERT, transformers')
#   backends  tests/app/test_backends_gpu.py: torch fp16/bf16 and ONNX Runtime's CUDA provider against CPU fp32
#   models    tiny random checkpoints (tests/fixtures.py) and paper-size random ones (bench/paper_models.py,
#             .whl/tokenizer's vocabulary): nothing to download there
#   sweep-*   the service on the GPU (python -m bench sweep --start-server): paper-size models at the paper
#             sweep (dtype auto: fp16 on CUDA), the paper student at fp32 and bf16 (quick), tiny models (quick)
#   onnx-cuda the paper student served by ONNX Runtime on CUDA, where onnxruntime has CUDAExecutionProvider
#             (the image's onnxruntime is the CPU build and onnxruntime-gpu is far over what travels: skipped;
#             the CPU rehearsal runs the same step on ONNX Runtime's CPU provider)
#   train     bench.train_speed, bf16 autocast
# Results in OUT: summary.txt (each step's status, time and last lines), gpu_check.log (all it printed),
# gpu_check.tar.gz (every step's output, JSON results and service logs; rebuilt after each step, so a run cut
# short still brings back what finished). Three files: the device tool brings back at most 8.
# GPU_CHECK_ALLOW_CPU=1 rehearses on a machine without CUDA: the CUDA-only steps are skipped (the GPU tests
# still import and skip themselves), the others run on the CPU at small sizes, to prove imports and wiring.
# Rehearsed 2026-12-06 on the 2-core CPU box, as the GPU machine will run it but for the device: a Python 3.12.1
# venv with what the image holds (PyPI's torch 2.11.0+cu130 with its CUDA libraries, transformers 5.17.0,
# tokenizers 0.23.2, onnxruntime 1.30.0, numpy 2.5.2, pytest 9.2.0, httpx, matplotlib; no pydantic), then only
# .whl's 25 wheels (5.2 MiB) by the README's line, DISTIL_CACHE empty (the bundled sample texts), PY= that venv,
# GPU_CHECK_ALLOW_CPU=1: every step ok in 425 s (install 3 s, model speed fp32 74 s, models 20 s, paper student
# sweep 144 s, ONNX on CPU through --serve-config 93 s, tiny sweep 37 s, train 25 s; the GPU tests import and
# skip). What it found: matplotlib is needed by every sweep's report (the image has it), and the BERT-base teacher's
# sweep outruns its step on a CPU (student only there). Not rehearsable here: anything CUDA does.
#   bash bench/gpu_check.sh OUT_DIR
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_check.sh OUT_DIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." && ROOT=$PWD
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
BUDGET=${GPU_CHECK_BUDGET_S:-540}
CMD="bash bench/gpu_check.sh"  # the command each sweep's report names
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK/models" "$WORK/tmp"' EXIT  # the random weights (about 700 MB); the results stay in the tarball
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TMPDIR=$WORK/tmp
mkdir -p "$TMPDIR" "$WORK/results"
: > "$OUT/summary.txt"

log() { echo "[gpu_check $((SECONDS))s] $*" | tee -a "$OUT/summary.txt"; }
bundle() {  # everything but the weights and exports, into one file that comes back
  tar -czf "$OUT/gpu_check.tar.gz.part" -C "$WORK" --exclude=./models --exclude=./tmp --exclude='*.safetensors' --exclude='*.onnx' \
    --exclude='*.onnx.data' . 2>/dev/null && mv "$OUT/gpu_check.tar.gz.part" "$OUT/gpu_check.tar.gz"
}
# step NAME SECONDS CMD...: CMD under timeout (the service it starts is in its process group: stopped too),
# its output into results/NAME.txt, its status and last lines into the summary.
step() {
  local name=$1 secs=$2 left=$((BUDGET - SECONDS)) t0=$SECONDS rc
  shift 2
  if [ "$left" -lt 20 ]; then log "$name: SKIPPED (budget of ${BUDGET}s spent)"; return 0; fi
  [ "$secs" -gt "$left" ] && secs=$left
  log "$name: start (at most ${secs}s)"
  timeout -k 10 "$secs" "$@" > "$WORK/results/$name.txt" 2>&1
  rc=$?
  tail -n "${TAIL:-4}" "$WORK/results/$name.txt" | sed 's/^/    /' | tee -a "$OUT/summary.txt"
  case $rc in
    0) log "$name: ok ($((SECONDS - t0))s)" ;;
    124|137) log "$name: TIMED OUT after ${secs}s" ;;
    *) log "$name: FAILED, exit $rc ($((SECONDS - t0))s)" ;;
  esac
  cp "$TMPDIR"/bench-server-*.log "$WORK/results/" 2>/dev/null
  bundle
  return 0
}
skip() { log "$1: skipped ($2)"; }

main() {
  log "python: $PY; output: $OUT; work: $WORK"
  if ls .whl/*.whl > /dev/null 2>&1 && "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    SITE=${GPU_CHECK_SITE:-/tmp/site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      || { log "installing .whl/ into $SITE failed"; return 1; }
    export PYTHONPATH=$SITE:$ROOT
    log "installed $(ls .whl/*.whl | wc -l) wheels from .whl/ into $SITE"
  else
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
  fi
  nvidia-smi > "$WORK/results/nvidia-smi.txt" 2>&1
  DEV=cuda
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ]; then
      log "no CUDA device visible to torch: nothing to check (GPU_CHECK_ALLOW_CPU=1 rehearses on the CPU)"
      bundle; return 1
    fi
    DEV=cpu
    log "no CUDA device: rehearsal on the CPU (GPU_CHECK_ALLOW_CPU=1), CUDA-only steps skipped, small sizes"
  fi
  TAIL=12 step env 60 "$PY" -c "
import importlib.metadata as md, sys, torch, onnxruntime as ort
print('python', sys.version.split()[0], sys.executable)
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')
print('onnxruntime', ort.__version__, ort.get_available_providers())
import app.main, bench.__main__  # the service and the benchmarks import
for n in ('transformers', 'tokenizers', 'numpy', 'fastapi', 'starlette', 'uvicorn', 'pydantic', 'httpx', 'pytest'):
    print(n, md.version(n))"

  step parity 150 "$PY" -m pytest tests/model/test_gpu.py -q -rs -p no:cacheprovider
  if [ "$DEV" = cuda ]; then
    for dtype in float32 float16 bfloat16; do
      step "speed-$dtype" 60 "$PY" -m bench.model_speed --device cuda --dtype $dtype --repeats 20 \
        --json "$WORK/results/model_speed_$dtype.json"
    done
  else
    TAIL=6 step speed-float32 240 "$PY" -m bench.model_speed --device cpu --repeats 1 --warmup 0 \
      --json "$WORK/results/model_speed_float32.json"
    skip speed-float16 "CPU rehearsal"; skip speed-bfloat16 "CPU rehearsal"
  fi
  step backends 120 "$PY" -m pytest tests/app/test_backends_gpu.py -q -rs -p no:cacheprovider

  M=$WORK/models TOK=.whl/tokenizer
  [ -f "$TOK/vocab.txt" ] || TOK=$M/tiny/teacher  # no real vocabulary: the tiny one (token counts then differ)
  step models 120 "$PY" -c "
from pathlib import Path
from tests.fixtures import tiny_pair
from bench.paper_models import main
tiny_pair(Path('$M/tiny'))
main(['--out', '$M/paper', '--tokenizer', '$TOK'])"

  # Most telling first: a step that no longer fits the budget is skipped, so the tiny sweep and train go last.
  local paper=(--sweep paper)
  [ "$DEV" = cpu ] && paper=(--sweep quick --models student)  # the teacher at BERT-base size is minutes on a CPU
  TAIL=8 step sweep-paper 200 env DISTIL_DEVICE=$DEV "$PY" -m bench sweep --start-server --models-dir "$M/paper" \
    "${paper[@]}" --out "$WORK/results/sweep-paper" --accuracy "" --command-name "$CMD"
  if [ "$DEV" = cuda ]; then
    for dtype in float32 bfloat16; do  # float16 is the paper sweep's (dtype auto on CUDA)
      TAIL=6 step "sweep-paper-$dtype" 60 env DISTIL_DEVICE=cuda DISTIL_DTYPE=$dtype "$PY" -m bench sweep \
        --start-server --models-dir "$M/paper" --sweep quick --models student \
        --out "$WORK/results/sweep-paper-$dtype" --accuracy "" --command-name "$CMD"
    done
  else
    skip sweep-paper-float32 "CPU rehearsal: the paper sweep above was float32"; skip sweep-paper-bfloat16 "CPU rehearsal"
  fi
  local ort_dev=$DEV
  if [ "$DEV" = cuda ] && ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    ort_dev=""
    skip onnx-cuda "onnxruntime has no CUDAExecutionProvider here (the image's is the CPU build)"
  fi
  if [ -n "$ort_dev" ]; then  # on the CPU rehearsal: the same serve.json at device cpu (ONNX Runtime's CPU provider)
    printf '{"device": "%s", "models": [{"name": "student", "path": "%s", "role": "student", "backend": "onnx"}]}\n' \
      "$ort_dev" "$M/paper/student" > "$WORK/results/serve-onnx.json"
    TAIL=6 step "onnx-$ort_dev" 150 "$PY" -m bench sweep --start-server --serve-config "$WORK/results/serve-onnx.json" \
      --sweep quick --out "$WORK/results/sweep-onnx-$ort_dev" --accuracy "" --command-name "$CMD"
  fi
  TAIL=8 step sweep-tiny 90 env DISTIL_DEVICE=$DEV "$PY" -m bench sweep --start-server --models-dir "$M/tiny" \
    --sweep quick --out "$WORK/results/sweep-tiny" --accuracy "" --command-name "$CMD"
  if [ "$DEV" = cuda ]; then
    step train 60 "$PY" -m bench.train_speed --device cuda --batch 32 --length 128 --steps 5 \
      --json "$WORK/results/train_speed.json"
  else
    step train 120 "$PY" -m bench.train_speed --device cpu --batch 2 --length 32 --steps 1 \
      --json "$WORK/results/train_speed.json"
  fi
  log "done in ${SECONDS}s: $OUT/summary.txt, gpu_check.log, gpu_check.tar.gz"
  grep -E ': (ok|FAILED|TIMED OUT|SKIPPED|skipped)' "$OUT/summary.txt" | sed 's/^\[gpu_check [0-9]*s\] /  /'
  cp "$OUT/summary.txt" "$WORK/summary.txt"
  bundle
  ! grep -qE ': (FAILED|TIMED OUT)' "$OUT/summary.txt"
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
