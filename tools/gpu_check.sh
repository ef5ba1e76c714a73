#!/usr/bin/env bash
# One prepared check of skelang on a machine with a CUDA GPU and a CUDA build of torch, within
# 10 minutes: build skelang against that torch, run every CUDA test (the op registry's CUDA
# parity in float32, float64, bfloat16 and float16, and the op files' CUDA tests), a short
# training on the GPU in each precision, and the benchmarks (bench.yaml's shapes) on the GPU;
# write a report.
# Never run yet: no session has had a GPU machine since it was written.
#
#   tools/gpu_check.sh [REPORT_DIR]          (default: $OUT where set, else gpu_report)
#
# Packages the device lacks (pydantic, pytest, hypothesis, ...) travel as wheels in .whl/ (see
# the device tool's README): they are installed from there, never from the network.
set -uo pipefail
cd "$(dirname "$0")/.."
report="${1:-${OUT:-gpu_report}}"
mkdir -p "$report" && report=$(cd "$report" && pwd)  # absolute: the trainings below run from /tmp
log() { echo "== $*" | tee -a "$report/report.txt"; }
export PYTHONUNBUFFERED=1 SKELANG_DEBUG=1
PY=${PYTHON:-python3}

log "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$PY" -c \
  "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } \
  2>&1 | tee -a "$report/report.txt"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" || { log "no CUDA device"; exit 3; }

if [ -d .whl ]; then
  log "wheels from .whl/"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

log "build (CUDA kernels for this GPU's architecture)"
arch=$("$PY" -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}.{n}')")
start=$(date +%s)
TORCH_CUDA_ARCH_LIST="$arch" timeout 240 "$PY" -m pip install -q --no-build-isolation --no-deps --target /tmp/skelang . \
  > "$report/build.txt" 2>&1 || { log "build failed (see build.txt)"; tail -40 "$report/build.txt"; exit 1; }
export PYTHONPATH=/tmp/skelang${PYTHONPATH:+:$PYTHONPATH}
log "built in $(( $(date +%s) - start )) s"
(cd /tmp && "$PY" -m skelang info) 2>&1 | tee -a "$report/report.txt"

log "CUDA tests"
timeout 150 "$PY" -m pytest tests/test_op_registry.py tests/test_graph_aggregate.py tests/test_encoder_ops.py \
  tests/test_vst_ops.py tests/test_lora_ops.py tests/test_fusion.py tests/test_lm_adapters.py -q -p no:cacheprovider -k "cuda or CUDA" \
  --junitxml="$report/cuda_tests.xml" > "$report/cuda_tests.txt" 2>&1
status=$?
tail -15 "$report/cuda_tests.txt" | tee -a "$report/report.txt"

log "CUDA training: the synthetic HGLNet, 1 epoch in fp32, bf16 and fp16 (with the gradient scaler)"
for precision in fp32 bf16 fp16; do
  (cd /tmp && timeout 40 "$PY" -m skelang train --config synthetic_stgcn model.type=hglnet "model.channels=[16,32]" \
    "model.strides=[1,2]" model.attention_heads=2 data.train=synthetic:4:0 data.test=synthetic:2:1 train.epochs=1 \
    train.device=cuda train.precision=$precision --out "$report/train_$precision") > "$report/train_$precision.txt" 2>&1 \
    && tail -1 "$report/train_$precision.txt" | tee -a "$report/report.txt" \
    || { log "training in $precision failed (see train_$precision.txt)"; tail -5 "$report/train_$precision.txt"; status=1; }
done

log "benchmarks on the GPU"
timeout 90 "$PY" benchmarks/run.py --device cuda --json > "$report/bench.json" 2> "$report/bench.txt" \
  && "$PY" - "$report/bench.json" <<'PYEOF' | tee -a "$report/report.txt"
import json, sys
result = json.load(open(sys.argv[1]))
print(result["machine"])
for row in result["results"]:
    print(f"{row['name'][:40]:<40} {row['params'][:44]:<44} {row['skelang_ms']:>9.2f} ms  {row['speedup']:>6.2f}x")
PYEOF
log "done: tests exit $status"
exit $status
