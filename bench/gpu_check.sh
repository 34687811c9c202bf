#!/usr/bin/env bash
# One call on a lent GPU machine (H100/H200; Python 3.12, torch 2.11, triton 3.6 preinstalled, no
# network), run from the repository root:
#
#     bash bench/gpu_check.sh            # results into $OUT when set, else bench/results/
#
# Steps, each under its own time limit (they add up to 465 s, so the whole stays under 8 minutes;
# each is killed at its limit and the script goes on, then exits 1 if any step failed): machine
# facts; the CUDA extension's JIT build for sm_90; the whole `gpu`-marked suite plus every kernel
# test file run for real (PTX fragment layouts, the mma.sync and Triton convs, the general op
# forms) on 4 pytest workers; a short Triton tuning pass at batch 1; the plan's launch grids on
# this GPU; and a short end-to-end benchmark (tiny, batch 1 and 256), whose table is printed last.
# The speed targets need longer runs: bench/gpu_targets.sh v1 | v2, one call each.
#
# HGNET_GPU_CHECK_DRY_RUN=1 runs the same steps on a machine without a GPU, shrunk to seconds
# (tiny model, small sizes, fp32, the interpreter and emulator), to check the script.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DRY=${HGNET_GPU_CHECK_DRY_RUN:-0}
OUT_DIR=${OUT:-bench/results}
STAMP=$(date -u +%Y-%m-%d)
mkdir -p "$OUT_DIR"
source bench/gpu_check_steps.sh

KERNEL_TESTS="tests/test_ops.py tests/test_ops_general.py tests/test_cuda_ptx.py tests/test_cuda_conv_mma.py \
  tests/test_triton_conv.py tests/test_triton_general.py tests/test_tf32x3_bound.py"
if [ "$DRY" = 1 ]; then
  export TRITON_INTERPRET=1 HGNET_KERNELS_CUDA_EMULATE=1
  TAG="dryrun-cpu-$STAMP"
  step "machine" 30 python -c "import torch, platform; print(platform.platform(), 'torch', torch.__version__)"
  step "gpu tests (collect)" 120 python -m pytest -q -m gpu --collect-only tests $KERNEL_TESTS
  step "tuning (dry run)" 120 bash -c "python -m hgnet_kernels tune --family triton --dry-run --models tiny b0 && \
    python -m hgnet_kernels tune --family cuda --dry-run --models tiny b0"
  step "plan" 60 bash -c "python -m hgnet_kernels plan --model tiny --gpu H100 --json > '$OUT_DIR/plan-tiny-b1-$TAG.json'"
  step "end-to-end bench" 300 python -m hgnet_kernels bench --models tiny --batches 1 --size 64 \
    --no-compile --rounds 2 --iters 1 --out "$OUT_DIR" --tag "$TAG"
else
  export HGNET_TEST_GPU=1  # conftest.py: real Triton and CUDA, not the interpreter / emulator
  export HGNET_KERNELS_CUDA_ARCHS=${HGNET_KERNELS_CUDA_ARCHS:-9.0} MAX_JOBS=${MAX_JOBS:-16}
  TAG="gpu-$(python -c 'import torch; print(torch.cuda.get_device_name().split()[1].lower())' 2>/dev/null || echo unknown)-$STAMP"
  step "machine" 15 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; \
    python -c 'import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__)'"
  step "cuda extension (JIT)" 150 python -c "from hgnet_kernels.kernels.cuda import extension; print(extension.jit_build(verbose=True))"
  # pytest-xdist is on the lent machines: 4 workers compile Triton kernels and run tests side by side.
  # The files holding gpu-marked tests (collecting the others would need every [dev] package, e.g.
  # ultralytics, which the lent machines lack); the kernel test files run whether or not they pass.
  GPU_TEST_FILES=$(grep -l "mark.gpu" tests/*.py | tr '\n' ' ')
  step "gpu tests" 150 bash -c "set -o pipefail; { python -m pytest -q -n 4 --durations=15 -m gpu $GPU_TEST_FILES; \
    gpu=\$?; python -m pytest -q -n 4 --durations=15 $KERNEL_TESTS && exit \$gpu; } 2>&1 | tee '$OUT_DIR/tests-$TAG.log'"
  step "triton tuning" 50 python -m hgnet_kernels tune --family triton --models tiny --dtypes float16 --batches 1 \
    --ops conv_bn_act --budget 40 --out "$OUT_DIR"
  step "plan" 15 bash -c "python -m hgnet_kernels plan --model tiny --json > '$OUT_DIR/plan-tiny-b1-$TAG.json'"
  step "end-to-end bench" 85 python -m hgnet_kernels bench --models tiny --batches 1 256 --dtypes float16 float32 \
    --compile-modes reduce-overhead --compile-budget 35 --rounds 3 --iters 5 --out "$OUT_DIR" --tag "$TAG"
fi
echo "results in $OUT_DIR (tag $TAG)"
finish
