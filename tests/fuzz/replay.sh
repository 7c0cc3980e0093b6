#!/usr/bin/env bash
# Replays the inputs of the given directories (those that exist) through a fuzz target binary:
# a libFuzzer binary or a replay_main.cpp build. Fails when any input crashes or aborts.
set -euo pipefail
binary=$1
shift
inputs=()
for dir in "$@"; do
  if [[ -d $dir ]] && [[ -n $(ls -A "$dir") ]]; then inputs+=("$dir"); fi
done
if [[ ${#inputs[@]} -eq 0 ]]; then
  echo "no inputs to replay in: $*"
  exit 0
fi
files=()
for dir in "${inputs[@]}"; do
  while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$dir" -type f -print0 | sort -z)
done
exec "$binary" "${files[@]}"
