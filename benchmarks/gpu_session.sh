#!/usr/bin/env bash
# One call on a machine with one NVIDIA H100/H200 produces the committed GPU results:
#   benchmarks/results/bench_h100_celeba_hq.{json,md,png}
#   benchmarks/results/bench_h100_imagenet256_uncond.{json,md,png}
#   benchmarks/results/ort_cuda_validation.txt (only when onnxruntime-gpu is installed and time is left: the fp16
#   exports of both priors validated against PyTorch fp32 on the CUDA execution provider, batch 1 and 8)
# (random weights: timing does not depend on them; the fp16-vs-fp32 PSNR check then only measures agreement).
#
# Usage, from the repository root:  bash benchmarks/gpu_session.sh
# Device tool: run(command="bash benchmarks/gpu_session.sh", timeout_s=600).
#
# Time plan (a session has 15 min of device time, machine start included, and 10 min per command), estimated
# from the UNet timings in docs/performance.md §3: every run does ~30 UNet-only calls, a 3-step warm-up and
# one timed 100-step restoration (~135 NFE), plus a model build, a FLOP count and a profile (~5 s).
#   phase 1, the latency / guidance / accuracy numbers and the baseline: fp16-graph at 1,8,32 and plain at 1,8
#            celeba_hq ~90 s, imagenet256_uncond ~180 s (its fp16 batch 32 alone ~75 s)
#   phase 2, the throughput numbers: fp16-compile-graph at batch 32 only (COMPILE_BATCHES; each batch size
#            compiles anew, ~1 min for celeba_hq, ~2 min for the ADM, not measured yet)
#            celeba_hq ~85 s, imagenet256_uncond ~160 s
#   phase 3, only when ONNX Runtime's CUDA provider really runs (a CUDA session is created and run, and the
#            wheel's CUDA major equals torch's): ort-fp16
#   phase 4, the memory layout of each mode: fp16-graph-cl (channels-last, eager default is NCHW) and
#            fp16-compile-graph-nchw (NCHW, compile default is channels-last), to confirm or flip the defaults of
#            ddpg.runtime.fast_denoiser.default_channels_last; about as long as phases 1-2 again, so it usually finishes in
#            the next call (--resume); then the fp16 export validation on the CUDA provider.
# About 520 s in all for phases 1-2: every bench_restore.py call runs under `timeout` so the script ends by
# DEADLINE_S (default 570 s) and still writes the report of the finished runs (SIGTERM is handled). The
# defaults before this plan (repeats 2 and a full warm-up restoration per run, compile at every batch, the
# export validation first) needed about 16 min.
#
# Environment: PRIORS (default "celeba_hq imagenet256_uncond"), BATCHES (default 1,8,32), STEPS (default 100),
#   COMPILE_BATCHES (default 32), CONFIGS (one phase of exactly these configurations instead of the plan above),
#   DEADLINE_S (default 570), PYTHON (default python3), RESULTS (default benchmarks/results), SESSION_LOG,
#   OUT (set by the device tool): after every bench_restore.py call the reports are copied to $OUT, and every
#   30 s $OUT/bench_results.tgz gets every per-run file made so far and $OUT/session.log the log (8 files in
#   all, the device tool's limit), so results come back even when the call is cut off.
# Every (configuration, batch) run is saved as soon as it finishes (<stem>.raw/<config>__b<batch>.json) and reused
# on the next run (--resume): after a cut-off call, unpack what came back into benchmarks/results/
# (tar xzf bench_results.tgz -C benchmarks/results; untracked files travel with the working tree) and run again.
# Python packages: the package runs from src/ (PYTHONPATH). The device image has all it needs here (torch, triton,
# numpy, pillow, pyyaml, typer, rich, matplotlib, onnx, onnxruntime); wheels in .wheels/ (carried with the device
# tool's `carry`) are installed to /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-570}
PRIORS=${PRIORS:-celeba_hq imagenet256_uncond}
BATCHES=${BATCHES:-1,8,32}
STEPS=${STEPS:-100}
COMPILE_BATCHES=${COMPILE_BATCHES:-32}
RESULTS=${RESULTS:-benchmarks/results}
LOG=${SESSION_LOG:-/tmp/gpu_session.log}
mkdir -p "$RESULTS"
exec > >(tee -a "$LOG") 2>&1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/ddpg_inductor_cache}
export DDPG_CACHE=${DDPG_CACHE:-/tmp/ddpg_cache}  # the bench's ONNX exports and TensorRT engines, reused across runs

if ls .wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .wheels/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
if [ -d /tmp/ort/onnxruntime ]; then  # onnxruntime-gpu installed there by the part calls (benchmarks/README.md)
  export PYTHONPATH="/tmp/ort:$PYTHONPATH"
fi

$PY - <<'EOF'
import torch
assert torch.cuda.is_available(), "gpu_session.sh needs a CUDA GPU"
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
EOF
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv || true

ORT_CUDA=0  # a real CUDA session (get_available_providers lists CUDA even when its libraries cannot load)
if $PY -c "import sys; from ddpg.runtime.backends.onnxruntime import probe_cuda as p; ok, why = p(); print(why);
sys.exit(not ok)"; then
  ORT_CUDA=1
fi
if [ -n "${CONFIGS:-}" ]; then
  PHASES=("$CONFIGS")
else
  PHASES=("fp16-graph,plain" "fp16-graph,plain,fp16-compile-graph")
  ORT=""
  if [ "$ORT_CUDA" = 1 ]; then ORT=",ort-fp16"; PHASES+=("fp16-graph,plain,fp16-compile-graph$ORT"); fi
  PHASES+=("fp16-graph,plain,fp16-compile-graph$ORT,fp16-graph-cl,fp16-compile-graph-nchw")
fi

publish() {  # reports, every per-run file (one tarball, renamed into place) and the log, into $OUT
  [ -n "${OUT:-}" ] || return 0
  (
    cp "$RESULTS"/bench_h100_*.json "$RESULTS"/bench_h100_*.md "$RESULTS"/bench_h100_*.png "$OUT"/ 2>/dev/null
    cd "$RESULTS" && tar czf "$OUT/.bench_results.$BASHPID.tgz" --ignore-failed-read bench_h100_* \
      $(ls ort_cuda_validation.txt 2>/dev/null) && mv "$OUT/.bench_results.$BASHPID.tgz" "$OUT/bench_results.tgz"
  ) || true
  cp "$LOG" "$OUT/session.log" 2>/dev/null || true
}
left() { echo $((DEADLINE_S - SECONDS - 20)); }  # seconds a command may still take (20 s kept for publishing)
limited() {  # limited CMD...: CMD under `timeout` (SIGTERM, then SIGKILL 15 s later) within the time left
  if command -v timeout >/dev/null; then timeout -s TERM -k 15 "$(left)" "$@"; else "$@"; fi
}

if [ -n "${OUT:-}" ]; then
  (while sleep 30; do publish; done) >/dev/null 2>&1 &
  PUBLISHER=$!
  trap 'kill $PUBLISHER 2>/dev/null || true; publish' EXIT
fi

status=0
for configs in "${PHASES[@]}"; do
  for prior in $PRIORS; do
    if [ "$(left)" -lt 60 ]; then
      echo "-- skipped $prior [$configs]: $(left) s left before DEADLINE_S=$DEADLINE_S" >&2
      status=1
      continue
    fi
    echo "== $(date -u +%T) ($SECONDS s) $prior: $configs" >&2
    limited $PY benchmarks/bench_restore.py --prior "$prior" --configs "$configs" --batches "$BATCHES" \
      --compile-batches "$COMPILE_BATCHES" --steps "$STEPS" --max-plain-batch 8 --iters 20 --warmup 5 \
      --repeats 1 --device cuda --resume --out "$RESULTS/bench_h100_$prior" || status=$?
    publish
  done
done

if [ "$ORT_CUDA" = 1 ] && [ -z "${CONFIGS:-}" ]; then  # full-size fp16 exports validate on the CUDA EP
  for prior in $PRIORS; do
    if [ "$(left)" -lt 60 ]; then echo "-- skipped the $prior export validation: no time left" >&2; continue; fi
    echo "\$ ddpg export --prior $prior --random-weights --precision fp16 --batch 1:1:8 --device cuda" \
      | tee -a "$RESULTS/ort_cuda_validation.txt"
    limited $PY -m ddpg export --prior "$prior" --random-weights --precision fp16 --batch 1:1:8 --device cuda \
      -o "/tmp/${prior}_fp16.onnx" 2>&1 | tee -a "$RESULTS/ort_cuda_validation.txt" || status=$?
  done
fi
echo "== done in $SECONDS s, status $status" >&2
exit $status
