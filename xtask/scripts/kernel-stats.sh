#!/usr/bin/env bash
# What the instruction count cannot see: context switches, syscalls and CPU
# time per operation in the kernel's own counters (software events, which
# work on VMs without hardware counters). Runs one default bench and
# `perf stat` over the servers for 5 s, 3 s into each phase.
#
#   cargo build --release -p xtask -p shoal-node -p shoal-gateway
#   xtask/scripts/kernel-stats.sh OUT [VAR=value ...]   # e.g. SHOAL_RUNTIME__WORKER_THREADS=1
#
# Per-operation figures divide by the phase's mean ops/s times 5 s, so they
# are approximate; compare runs alternated on the same machine.
set -euo pipefail
out=$1
shift
cd "$(dirname "$0")/../.."
env "$@" target/release/xtask bench --no-build >"$out.bench" 2>&1 &
bench=$!
for phase in writes reads; do
  for _ in $(seq 1 600); do
    grep -a -q "$phase:   3/10 s" "$out.bench" && break
    sleep 0.2
  done
  pids=$(pgrep -f 'shoal-(node|gateway) --config' | paste -sd, -)
  perf stat -x, -e context-switches,task-clock,raw_syscalls:sys_enter -p "$pids" -- sleep 5 2>"$out.$phase.perf"
done
wait "$bench"
row=$(grep '^| shoal' "$out.bench")
writes=$(echo "$row" | cut -d'|' -f3 | tr -d ' ')
reads=$(echo "$row" | cut -d'|' -f5 | tr -d ' ')
for phase in writes reads; do
  rate=$writes
  [ "$phase" = reads ] && rate=$reads
  awk -F, -v rate="$rate" -v ph="$phase" '{ v[$3] = $1 } END {
    ops = rate * 5
    printf "%s: %.0f ops/s  context switches/op %.2f  syscalls/op %.2f  CPU us/op %.0f\n",
      ph, rate, v["context-switches"] / ops, v["raw_syscalls:sys_enter"] / ops, v["task-clock"] * 1000 / ops
  }' "$out.$phase.perf"
done
echo "$row"
