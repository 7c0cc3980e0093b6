#!/usr/bin/env bash
# Runs the libFuzzer targets of a CELLFM_FUZZ=ON build for a given time each and reports, per
# target, the executions, coverage (libFuzzer's final cov:/ft:) and whether it found anything.
#
#   tests/fuzz/run_all.sh [--build DIR] [--seconds N] [--out DIR] [--jobs J] [TARGET...]
#
# --build   the CELLFM_FUZZ=ON build directory (default build-fuzz)
# --seconds fuzzing time per target (default 600)
# --out     where corpora, logs and crash inputs go (default DIR/fuzz-runs); each target's corpus
#           persists there, so a second run continues from the first (earlier crash inputs move
#           to OUT/<target>/earlier/)
# --jobs    targets fuzzed at once (default 1)
# TARGETs   spec obo safetensors checkpoint h5ad (default all)
#
# Seeds: tests/fuzz/seeds/<target>/ plus the project's own files (experiments/*.yaml, the Cell
# Ontology, the Exceiver reference safetensors). A crash input is left as OUT/<target>/crash-*;
# keep it under tests/fuzz/regressions/<target>/ once its cause is fixed. Exit status 1 when any
# target found a crash, leak or timeout.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build-fuzz
seconds=600
out=
jobs=1
targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ ${#targets[@]} -eq 0 ]] && targets=(spec obo safetensors checkpoint h5ad)
out=${out:-$build/fuzz-runs}
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export LSAN_OPTIONS=suppressions=$here/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}

# Per-target input size limits: multi-part texts and OBO stanzas need room; h5ad decodes a few
# hundred bytes of layout.
max_len() {
  case $1 in
    obo) echo 65536 ;;
    safetensors) echo 16384 ;;
    checkpoint) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

project_seeds() {  # the project's own files for target $1
  case $1 in
    spec) ls "$root"/experiments/*.yaml "$root"/experiments/*/*.yaml ;;
    obo) ls "$root"/tests/data/ontology/cl-basic.obo ;;
    safetensors) ls "$root"/tests/data/exceiver/*.safetensors ;;
  esac
}

run_one() {
  local name=$1
  local binary=$build/tests/fuzz/cellfm_fuzz_$name
  local dir=$out/$name
  mkdir -p "$dir/corpus" "$dir/seeds"
  if [[ ! -x $binary ]]; then
    echo "$name: no $binary (configure with -DCELLFM_FUZZ=ON and build cellfm_fuzzers)" >"$dir/log"
    return
  fi
  # Artifacts of earlier runs move aside, so the report lists only what this run found.
  local earlier
  earlier=$(ls "$dir" | grep -E '^(crash|leak|timeout|oom|slow-unit)-')
  if [[ -n $earlier ]]; then
    mkdir -p "$dir/earlier"
    (cd "$dir" && mv $earlier earlier/)
  fi
  cp -f "$here/seeds/$name"/* "$dir/seeds/" 2>/dev/null
  [[ -d $here/regressions/$name ]] && cp -f "$here/regressions/$name"/* "$dir/seeds/" 2>/dev/null
  for f in $(project_seeds "$name"); do cp -f "$f" "$dir/seeds/"; done
  local dict=()
  [[ -f $here/$name.dict ]] && dict=(-dict="$here/$name.dict")
  # h5ad starts MPI, whose one-time allocations at MPI_Init (in components it unloads) LeakSanitizer
  # reports at exit without usable stacks; leaks of each input are still checked (-detect_leaks).
  # Open MPI unloads components per file (their allocations kept for good): keep them loaded and
  # unwind slowly so that LeakSanitizer attributes those allocations to Open MPI (lsan.supp).
  local asan=${ASAN_OPTIONS:-} lsan=$LSAN_OPTIONS
  if [[ $name == h5ad ]]; then
    asan=leak_check_at_exit=0${asan:+:$asan}
    lsan=$lsan:fast_unwind_on_malloc=0
  fi
  (cd "$dir" && OMPI_MCA_mca_base_component_disable_dlclose=1 ASAN_OPTIONS=$asan LSAN_OPTIONS=$lsan \
     "$binary" corpus seeds -max_total_time="$seconds" -print_final_stats=1 \
     -max_len="$(max_len "$name")" -timeout=20 -rss_limit_mb=4096 -artifact_prefix="$dir/" \
     "${dict[@]}" >"$dir/log" 2>&1)
  echo $? >"$dir/status"
}

running=0
for name in "${targets[@]}"; do
  run_one "$name" &
  running=$((running + 1))
  if [[ $running -ge $jobs ]]; then wait -n; running=$((running - 1)); fi
done
wait

failed=0
printf '%-12s %8s %12s %10s %8s %8s  %s\n' target seconds executions exec/s cov ft result
for name in "${targets[@]}"; do
  dir=$out/$name
  log=$dir/log
  status=$(cat "$dir/status" 2>/dev/null || echo missing)
  final=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse)' "$log" 2>/dev/null | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$final")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$final")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  artifacts=$(ls "$dir" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' | tr '\n' ' ')
  result=ok
  if [[ $status != 0 || -n $artifacts ]]; then result="FOUND: ${artifacts:-exit $status} (see $log)"; failed=1; fi
  printf '%-12s %8s %12s %10s %8s %8s  %s\n' "$name" "$seconds" "${execs:-?}" "${rate:-?}" \
    "${cov:-?}" "${ft:-?}" "$result"
done
exit $failed
