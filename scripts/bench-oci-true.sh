#!/usr/bin/env bash
# spec → exec of /bin/true in a fresh container (crius-oci's `true_container` example):
# the built-in runtime next to runc and crun, each both through crius's BinaryRuntime
# (create/start/delete) and through the CLI's own `run`. Root only.
#
# The modes run interleaved: ROUNDS rounds of PER counted iterations per mode (each
# process also runs 2 untimed warm-up iterations), the mode order rotating every round, so
# drift of a shared machine hits every mode alike. Prints the load average per round, then
# n, p50 and p99 (nearest rank, microseconds) per mode over all rounds.
#
#   cargo build --release -p crius-oci --example true_container
#   scripts/bench-oci-true.sh [path/to/true_container]
#
# Environment: ROUNDS (default 10), PER (20), MODES ("builtin runc runc-run crun crun-run").
set -euo pipefail

bin=${1:-${CARGO_TARGET_DIR:-target}/release/examples/true_container}
rounds=${ROUNDS:-10}
per=${PER:-20}
read -r -a modes <<<"${MODES:-builtin runc runc-run crun crun-run}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for ((r = 0; r < rounds; r++)); do
    echo "round $((r + 1))/$rounds, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    for ((k = 0; k < ${#modes[@]}; k++)); do
        m=${modes[$(((k + r) % ${#modes[@]}))]}
        "$bin" "$per" "$m" 2 2>/dev/null | grep " run " >>"$out/$m"
    done
done
echo "done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

printf '%-10s %5s %10s %10s\n' mode n p50_us p99_us
for m in "${modes[@]}"; do
    sort -n -k4 "$out/$m" | awk -v m="$m" '
        { v[NR] = $4 }
        END {
            r50 = int((NR * 50 + 99) / 100); r99 = int((NR * 99 + 99) / 100)
            printf "%-10s %5d %10d %10d\n", m, NR, v[r50], v[r99]
        }'
done
