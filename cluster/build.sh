#!/usr/bin/env bash
# Configures and builds cellfm (Release) into build/; the binary lands at build/cellfm.
# Re-running rebuilds only what changed. Extra arguments go to the CMake configure step.
# CELLFM_BUILD_TARGETS (space-separated) builds only those targets, e.g. "cellfm" for the main
# job; unset: everything, the test suites included.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
generator=()
if command -v ninja >/dev/null && [[ ! -f build/CMakeCache.txt ]]; then
  generator=(-G Ninja)
fi
start=$(date +%s)
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
targets=()
for target in ${CELLFM_BUILD_TARGETS:-}; do targets+=(--target "$target"); done
cmake --build build --parallel "$jobs" "${targets[@]}"
echo "build: build/cellfm ready ($(( $(date +%s) - start )) s)"
