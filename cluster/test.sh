#!/usr/bin/env bash
# The README's test command: installs the Debian dependencies, builds, and runs the whole test
# suite with CTest (unit and MPI tests; MPI tests run under mpiexec with 2 and 4 ranks).
# Extra arguments go to ctest, e.g. `cluster/test.sh -L unit` or `-LE slow`.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster/install-deps.sh
cluster/build.sh
start=$(date +%s)
cd build
ctest --output-on-failure --parallel "$(nproc 2>/dev/null || echo 2)" "$@"
echo "test: ctest finished in $(( $(date +%s) - start )) s"
