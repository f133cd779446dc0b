#!/usr/bin/env bash
# The end-to-end load benchmark in one command: builds sluice and the bench
# (cargo's bench profile: release + line tables), runs every workload and
# prints the results table. Method and results: docs/performance.md.
#
#   bash benches/run-load.sh
#   SLUICE_BENCH_RUNS=3 SLUICE_BENCH_SECONDS=10 bash benches/run-load.sh
#
# Needs Linux (/proc, taskset for CPU pinning). Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

# The idle-tunnel workload holds two descriptors per tunnel in the load
# generator and two in sluice (which inherits this limit): raise the soft
# limit as far as the hard one allows.
hard=$(ulimit -Hn)
if [[ "$hard" == unlimited ]]; then hard=65536; fi
ulimit -Sn "$hard" 2>/dev/null || true

exec cargo bench --locked --bench load "$@"
