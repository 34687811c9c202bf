# Steps of bench/gpu_check.sh: each runs under its own time limit and the script goes on after a
# failure; `finish` prints every step's status and exits non-zero when any failed or timed out.
declare -a SUMMARY=()
FAILED=0

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s, $(date -u +%T))"
  local start=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  local status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="TIMED OUT"; elif [ "$rc" != 0 ]; then status=FAILED; fi
  [ "$status" = ok ] || FAILED=1
  SUMMARY+=("$(printf '%-22s %-9s rc=%-3s %4ss' "$name" "$status" "$rc" "$((SECONDS - start))")")
  echo "== $name: $status (rc=$rc, $((SECONDS - start))s)"
  return 0
}

finish() {
  echo "== steps"
  printf '%s\n' "${SUMMARY[@]}"
  if [ "$FAILED" != 0 ]; then
    echo "gpu_check: at least one step failed or timed out" >&2
    exit 1
  fi
  exit 0
}
