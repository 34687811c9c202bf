#!/usr/bin/env bash
# The speed targets of issues #11, #12 and #13 on a lent GPU (H100/H200), one call per part, each
# sized to stay under 8 minutes (the budget is an estimate until a GPU session times it):
#
#     bash bench/gpu_targets.sh v1    # tiny/small/base: batch 256 fp16 and bf16; batch 1 fp16 and fp32
#     bash bench/gpu_targets.sh v2    # B0/B4 at 224 batch 256 fp16; B4 at 640×640 batch 1 fp16
#
# Every row of `python -m hgnet_kernels bench` checks its output against float64 first; results
# (JSON, CSV, PNG) go to $OUT when set, else bench/results/, to be committed. Run
# `bash bench/gpu_check.sh` first in a fresh session: it builds the CUDA extension and tunes.
# HGNET_GPU_CHECK_DRY_RUN=1 runs the same steps on the CPU, shrunk, to check the script.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PART=${1:-}
DRY=${HGNET_GPU_CHECK_DRY_RUN:-0}
OUT_DIR=${OUT:-bench/results}
STAMP=$(date -u +%Y-%m-%d)
mkdir -p "$OUT_DIR"
source bench/gpu_check_steps.sh

if [ "$PART" != v1 ] && [ "$PART" != v2 ]; then
  echo "usage: bash bench/gpu_targets.sh v1|v2" >&2
  exit 2
fi
if [ "$DRY" = 1 ]; then  # the same command lines, shrunk: tiny sizes, one round, no compile
  export TRITON_INTERPRET=1 HGNET_KERNELS_CUDA_EMULATE=1
  MODELS_V1="tiny" MODELS_V2="b0" BIG=2 SIZE=32 DET=64 EXTRA="--no-compile --rounds 1 --iters 1 --backends torch"
  DTYPES_LOW="float32"
else
  export HGNET_KERNELS_CUDA_ARCHS=${HGNET_KERNELS_CUDA_ARCHS:-9.0}
  MODELS_V1="tiny small base" MODELS_V2="b0 b4" BIG=256 SIZE=224 DET=640 EXTRA="" DTYPES_LOW="float16 bfloat16"
fi
TAG="gpu-targets-$PART-$STAMP"
if [ "$PART" = v1 ]; then
  # >= 2x cuDNN channels_last and >= 1.5x the best torch.compile at batch 256; bf16 within 10 % of fp16.
  step "v1 batch $BIG" 230 python -m hgnet_kernels bench --models $MODELS_V1 --batches $BIG --size $SIZE \
    --dtypes $DTYPES_LOW --compile-modes max-autotune-no-cudagraphs --compile-budget 150 --rounds 3 --iters 5 \
    --out "$OUT_DIR" --tag "$TAG-b$BIG" $EXTRA
  # batch 1 with graphs: fp16 <= 0.30/0.40/0.80 ms and >= 2x reduce-overhead; fp32 <= 1.0/1.4/3.0 ms at 1e-5.
  step "v1 batch 1" 230 python -m hgnet_kernels bench --models $MODELS_V1 --batches 1 --size $SIZE \
    --dtypes float16 float32 --compile-modes reduce-overhead --compile-budget 150 --rounds 5 --iters 20 \
    --out "$OUT_DIR" --tag "$TAG-b1" $EXTRA
else
  # >= 1.5x cuDNN channels_last at batch 256, 224×224.
  step "v2 batch $BIG" 230 python -m hgnet_kernels bench --models $MODELS_V2 --batches $BIG --size $SIZE \
    --dtypes float16 --compile-modes max-autotune-no-cudagraphs --compile-budget 150 --rounds 3 --iters 5 \
    --out "$OUT_DIR" --tag "$TAG-b$BIG" $EXTRA
  # detection: B4 at 640×640 batch 1 with graphs >= 2x torch.compile reduce-overhead.
  step "v2 detection" 200 python -m hgnet_kernels bench --models ${MODELS_V2##* } --batches 1 --size $DET \
    --dtypes float16 --compile-modes reduce-overhead --compile-budget 120 --rounds 5 --iters 20 \
    --out "$OUT_DIR" --tag "$TAG-det" $EXTRA
fi
echo "results in $OUT_DIR (tag $TAG)"
finish
