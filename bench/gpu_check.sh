#!/usr/bin/env bash
# One call on a lent GPU machine (H100/H200; Python 3.12, torch 2.11, triton 3.6 preinstalled, no
# network), run from the repository root:
#
#     bash bench/gpu_check.sh            # results into $OUT when set, else bench/results/
#
# Steps, each under its own time limit so the whole stays under 8 minutes on an H100 (sizing in
# bench/README.md): machine facts, the CUDA extension's JIT build for sm_90, GPU-marked tests, a
# short Triton tuning pass, layer microbenchmarks, and the end-to-end benchmark (tiny/small/base,
# batch 1 and 256, fp16 and fp32), whose table is printed last.
#
# HGNET_GPU_CHECK_DRY_RUN=1 runs the same steps on a machine without a GPU, shrunk to seconds
# (tiny model, 64×64, fp32), to check the script, its arguments and its output files.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DRY=${HGNET_GPU_CHECK_DRY_RUN:-0}
OUT_DIR=${OUT:-bench/results}
STAMP=$(date -u +%Y-%m-%d)
mkdir -p "$OUT_DIR"
source bench/gpu_check_steps.sh

if [ "$DRY" = 1 ]; then
  export TRITON_INTERPRET=1
  TAG="dryrun-cpu-$STAMP"
  step "machine" 30 python -c "import torch, platform; print(platform.platform(), 'torch', torch.__version__)"
  step "gpu tests (collect)" 60 python -m pytest -q -m gpu --collect-only tests
  step "layer microbench" 120 python -m pytest -q bench/test_layers.py --benchmark-enable \
    --benchmark-max-time=0.05 --benchmark-min-rounds=1 --benchmark-json="$OUT_DIR/layers-$TAG.json"
  step "end-to-end bench" 300 python -m hgnet_kernels bench --models tiny --batches 1 --size 64 \
    --no-compile --rounds 2 --iters 1 --out "$OUT_DIR" --tag "$TAG"
else
  export HGNET_TEST_GPU=1  # conftest.py: real Triton and CUDA, not the interpreter / emulator
  export HGNET_KERNELS_CUDA_ARCHS=${HGNET_KERNELS_CUDA_ARCHS:-9.0}
  TAG="gpu-$(python -c 'import torch; print(torch.cuda.get_device_name().split()[1].lower())' 2>/dev/null || echo unknown)-$STAMP"
  step "machine" 20 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; \
    python -c 'import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__)'"
  step "cuda extension (JIT)" 90 python -c "from hgnet_kernels.kernels.cuda import extension; print(extension.jit_build(verbose=True))"
  step "gpu tests" 120 bash -c "python -m pytest -q -m gpu tests 2>&1 | tee '$OUT_DIR/tests-$TAG.log'"
  step "triton tuning" 50 python bench/tune_triton.py --models tiny --dtypes float16 --budget 35 \
    --out "$OUT_DIR/triton_$(python -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"sm{m}{n}")').json"
  step "layer microbench" 50 python -m pytest -q bench/test_layers.py --benchmark-enable --layers-dtype float16 \
    --benchmark-max-time=0.02 --benchmark-min-rounds=3 --benchmark-json="$OUT_DIR/layers-$TAG.json"
  step "end-to-end bench" 150 python -m hgnet_kernels bench --models tiny small base --batches 1 256 \
    --dtypes float16 float32 --compile-modes default reduce-overhead --compile-budget 60 \
    --rounds 3 --iters 3 --out "$OUT_DIR" --tag "$TAG"
fi
echo "results in $OUT_DIR (tag $TAG)"
finish
