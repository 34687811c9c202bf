#!/usr/bin/env bash
# The full AOT report (issue #17): every Triton launch of tiny, small, base, B0 and B4 in fp16,
# bf16 and fp32 at batch 1 and 256 (224×224), and B4 at 640×640, compiled for sm_90 and sm_80
# without a GPU — with the installed Triton and with Triton 3.6.0, the lent GPUs' version (pass its
# directory, e.g. the one tests/test_aot.py installs under ~/.cache/hgnet_kernels/triton-3.6.0).
# CI runs a bounded matrix of the same check (tests/test_aot.py); this is the whole one, for
# bench/results/. Compiled, not run.
#
#     bash bench/aot_report.sh [TRITON_3_6_DIR]      # writes bench/results/aot-<date>/
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
OUT_DIR=bench/results/aot-$(date -u +%Y-%m-%d)
mkdir -p "$OUT_DIR"
JOBS=${JOBS:-$(nproc)}

report() {  # $1: a Triton directory to put first on PYTHONPATH, or "" for the installed one
  local path=$1 version
  version=$(PYTHONPATH="${path:+$path:}$PYTHONPATH" python -c "import triton; print(triton.__version__)")
  echo "== Triton $version" >&2
  PYTHONPATH="${path:+$path:}$PYTHONPATH" python -m hgnet_kernels aot --jobs "$JOBS" --max-loop-ratio 1.25 \
    --json "$OUT_DIR/triton-$version.json" > "$OUT_DIR/triton-$version.txt" || true
  PYTHONPATH="${path:+$path:}$PYTHONPATH" python -m hgnet_kernels aot --jobs "$JOBS" --max-loop-ratio 1.25 \
    --models b4 --sizes 640 --json "$OUT_DIR/triton-$version-b4-640.json" > "$OUT_DIR/triton-$version-b4-640.txt" || true
  tail -n 6 "$OUT_DIR/triton-$version.txt" "$OUT_DIR/triton-$version-b4-640.txt"
}

if [ -n "${1:-}" ]; then report "$1"; fi
report ""
