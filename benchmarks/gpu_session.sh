#!/usr/bin/env bash
# One call on a machine with one NVIDIA H100 produces the committed GPU results:
#   benchmarks/results/bench_h100_celeba_hq.{json,md,png}
#   benchmarks/results/bench_h100_imagenet256_uncond.{json,md,png}
#   benchmarks/results/ort_cuda_validation.txt (when onnxruntime-gpu is installed: the fp16 exports of both priors
#   validated against PyTorch fp32 on the CUDA execution provider, batch 1 and 8)
# (random weights: timing does not depend on them; the fp16-vs-fp32 PSNR check then only measures agreement).
#
# Usage, from the repository root:  bash benchmarks/gpu_session.sh
# Environment: PRIORS (default "celeba_hq imagenet256_uncond"), BATCHES (default 1,8,32), STEPS (default 100),
#   CONFIGS (default: the fast path without and with torch.compile, the eager fp32 baseline, and ONNX Runtime fp16
#   when its CUDA provider is installed), PYTHON (default python3),
#   OUT (set by the device tool): the final reports are copied to $OUT as each prior finishes, and every 30 s a
#   snapshot of all per-run files goes to $OUT/bench_raw.tgz, so they come back even when the call is cut off.
# Every (configuration, batch) run is saved as soon as it finishes (<stem>.raw/<config>__b<batch>.json) and reused
# on the next run (--resume): after a cut-off call, unpack what came back into benchmarks/results/
# (tar xzf bench_raw.tgz -C benchmarks/results; untracked files travel with the working tree) and run again.
# Python packages: the package runs from src/ (PYTHONPATH); wheels in .wheels/ (e.g. platformdirs, carried with
# the tool's `carry`) are installed to /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ls .wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .wheels/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
$PY -c "import platformdirs" 2>/dev/null || { echo "error: platformdirs missing: put its wheel in .wheels/" >&2; exit 2; }
RESULTS=benchmarks/results
mkdir -p "$RESULTS"

$PY - <<'EOF'
import torch
assert torch.cuda.is_available(), "gpu_session.sh needs a CUDA GPU"
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
EOF
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv || true

DEFAULT_CONFIGS="fp16-graph,plain,fp16-compile-graph"
if $PY -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" \
    2>/dev/null; then
  DEFAULT_CONFIGS="$DEFAULT_CONFIGS,ort-fp16"
fi
CONFIGS=${CONFIGS:-$DEFAULT_CONFIGS}
BATCHES=${BATCHES:-1,8,32}
STEPS=${STEPS:-100}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/ddpg_inductor_cache}

snapshot() {  # every per-run file made so far, into $OUT (atomically)
  [ -n "${OUT:-}" ] || return 0
  (cd "$RESULTS" && ls -d bench_h100_*.raw >/dev/null 2>&1 && tar czf "$OUT/.bench_raw.tgz" bench_h100_*.raw \
    && mv "$OUT/.bench_raw.tgz" "$OUT/bench_raw.tgz") || true
}
if [ -n "${OUT:-}" ]; then
  (while sleep 30; do snapshot; done) &
  SNAPSHOTTER=$!
  trap 'kill $SNAPSHOTTER 2>/dev/null || true' EXIT
fi

status=0
if [[ "$CONFIGS" == *ort-* ]]; then  # issue 6: full-size fp16 exports validate on the CUDA EP
  for prior in ${PRIORS:-celeba_hq imagenet256_uncond}; do
    echo "\$ ddpg export --prior $prior --random-weights --precision fp16 --batch 1:1:8 --device cuda" \
      | tee -a "$RESULTS/ort_cuda_validation.txt"
    $PY -m ddpg export --prior "$prior" --random-weights --precision fp16 --batch 1:1:8 --device cuda \
      -o "/tmp/${prior}_fp16.onnx" 2>&1 | tee -a "$RESULTS/ort_cuda_validation.txt" || status=$?
  done
  if [ -n "${OUT:-}" ]; then cp "$RESULTS/ort_cuda_validation.txt" "$OUT"/ || true; fi
fi
for prior in ${PRIORS:-celeba_hq imagenet256_uncond}; do
  $PY benchmarks/bench_restore.py --prior "$prior" --configs "$CONFIGS" --batches "$BATCHES" --steps "$STEPS" \
    --max-plain-batch 8 --iters 20 --warmup 5 --repeats 2 --device cuda --resume \
    --out "$RESULTS/bench_h100_$prior" || status=$?
  snapshot
  if [ -n "${OUT:-}" ]; then cp "$RESULTS/bench_h100_$prior".{json,md,png} "$OUT"/ 2>/dev/null || true; fi
done
exit $status
