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
# A fresh build directory compiles the libraries as unity batches (about a quarter of the CPU
# time of one unit per file); CELLFM_UNITY=0 turns that off. An existing one keeps its setting.
unity=()
if [[ ! -f build/CMakeCache.txt ]]; then
  unity=(-DCELLFM_UNITY_BUILD="$([[ ${CELLFM_UNITY:-1} == 0 ]] && echo OFF || echo ON)")
fi
start=$(date +%s)
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "${unity[@]}" "$@"
targets=()
for target in ${CELLFM_BUILD_TARGETS:-}; do targets+=(--target "$target"); done
cmake --build build --parallel "$jobs" "${targets[@]}"
echo "build: build/cellfm ready ($(( $(date +%s) - start )) s)"
