#!/usr/bin/env bash
# Runs a command while N processes burn a CPU each, as on a busy shared CI host, and stops the
# burners by PID however the command ends (issue 11, "tests under load").
#   bash scripts/with-cpu-burners.sh [-n N] -- COMMAND [ARGS...]
#   bash scripts/with-cpu-burners.sh -n 2 -- bash .ci/run
# N defaults to 2. Exit status: the command's. The burners are plain busy loops in their own
# processes (nice 0, like any other tenant of the host); nothing else is changed.
set -euo pipefail
n=2
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "usage: $0 [-n N] -- COMMAND [ARGS...]" >&2
  exit 2
fi
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop EXIT
for _ in $(seq 1 "$n"); do
  bash -c 'while :; do :; done' &
  pids+=($!)
done
echo "with-cpu-burners: ${#pids[@]} burner(s) running (pids ${pids[*]})" >&2
status=0
"$@" || status=$?
exit "$status"
