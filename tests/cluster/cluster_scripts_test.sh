#!/usr/bin/env bash
# Tests of the cluster launch templates (cluster/slurm/train.sbatch, cluster/pbs/train.pbs,
# cluster/launch.sh): each runs for real with stub srun, mpirun, scontrol, qrerun and qsub first on
# PATH; the stubs record their arguments and environment and behave as each case scripts them
# (exit with a code, or wait for a signal and exit 75 on SIGUSR1 as cellfm does). The lint group
# runs `bash -n` and shellcheck on every shell script in cluster/.
# usage: cluster_scripts_test.sh [REPO_ROOT] [all|behaviour|lint]
# Prints one line per check and "N passed, N failed"; exits 1 on any failure, 77 when the lint
# group alone was asked for and shellcheck is not installed (CTest shows it as skipped).
# The assertion helpers are called through check(), which shellcheck cannot follow:
# shellcheck disable=SC2317
set -uo pipefail

root=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
group=${2:-all}
work=$(mktemp -d "${TMPDIR:-/tmp}/cellfm-cluster-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
skipped=0

pass() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
skip() { echo "SKIP $*"; skipped=$((skipped + 1)); }
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
  local description=$1
  shift
  if "$@"; then pass "$description"; else fail "$description"; fi
}

# ---------------------------------------------------------------- stubs and helpers
stubs=$work/stubs
mkdir -p "$stubs"
# The launcher stub (srun and mpirun): call N records its arguments (one a line) in
# $STUB_LOG/NAME.N.args and some environment in NAME.N.env, then follows the N-th word of
# STUB_MODES (the last word once they run out): a number = exit with it; "signal" = record
# SIGUSR1/SIGTERM in NAME.N.signals, exit 75 on SIGUSR1 and 143 on SIGTERM, 1 after 10 s without.
cat > "$stubs/launcher" <<'EOF'
#!/usr/bin/env bash
name=$(basename "$0")
count_file=$STUB_LOG/$name.count
n=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$count_file"
base=$STUB_LOG/$name.$n
printf '%s\n' "$@" > "$base.args"
printf 'HDF5_USE_FILE_LOCKING=%s\nOMP_NUM_THREADS=%s\nNCCL_DEBUG=%s\n' \
  "${HDF5_USE_FILE_LOCKING-<unset>}" "${OMP_NUM_THREADS-<unset>}" "${NCCL_DEBUG-<unset>}" > "$base.env"
read -r -a modes <<< "${STUB_MODES:-0}"
mode=${modes[$(( n <= ${#modes[@]} ? n - 1 : ${#modes[@]} - 1 ))]}
if [[ $mode != signal ]]; then
  exit "$mode"
fi
got=""
trap 'echo USR1 >> "$base.signals"; got=${got:-USR1}' USR1
trap 'echo TERM >> "$base.signals"; got=${got:-TERM}' TERM
touch "$base.ready"
for _ in $(seq 200); do
  [[ -n $got ]] && break
  sleep 0.05
done
case $got in
  USR1) exit 75 ;;
  TERM) exit 143 ;;
  *) echo timeout >> "$base.signals"; exit 1 ;;
esac
EOF
# scontrol, qrerun, qsub: one line "ARGS..." per call in $STUB_LOG/NAME.calls; exit 0.
cat > "$stubs/recorder" <<'EOF'
#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG/$(basename "$0").calls"
EOF
chmod +x "$stubs/launcher" "$stubs/recorder"
for name in srun mpirun; do ln -s launcher "$stubs/$name"; done
for name in scontrol qrerun qsub; do ln -s recorder "$stubs/$name"; done
stub_path=$stubs:$PATH

# A stand-in cellfm binary: the stub launchers never run it, the scripts only check it exists.
fake_bin=$work/bin/cellfm
mkdir -p "$work/bin"
printf '#!/bin/sh\nexit 0\n' > "$fake_bin"
chmod +x "$fake_bin"
root_flag=()
[[ $(id -u) -eq 0 ]] && root_flag=(--allow-run-as-root)

# new_case NAME: a fresh directory for one case's records; sets $case_dir.
new_case() {
  case_dir=$work/cases/$1
  mkdir -p "$case_dir"
}
# start SCRIPT ARGS...: runs a script in the background with the stubs first on PATH and the
# case's STUB_LOG; extra environment comes from the array case_env. Sets $pid; output in
# $case_dir/output.
start() {
  env PATH="$stub_path" STUB_LOG="$case_dir" "${case_env[@]}" "$@" > "$case_dir/output" 2>&1 &
  pid=$!
}
# finish: waits (at most 15 s) for the started script; sets $status (124 on timeout).
finish() {
  local i
  for i in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    status=124
    echo "     (timed out; output:)"
    sed 's/^/     | /' "$case_dir/output"
    return
  fi
  wait "$pid"
  status=$?
}
# wait_for FILE: waits at most 10 s for FILE to appear.
wait_for() {
  local i
  for i in $(seq 200); do
    [[ -e $1 ]] && return 0
    sleep 0.05
  done
  echo "     (waited 10 s for $1)"
  return 1
}
# has_args FILE WORD...: FILE (one argument a line) holds the words consecutively.
has_args() {
  local file=$1 i j
  shift
  local want=("$@") have=()
  [[ -f $file ]] || { echo "     (no $file)"; return 1; }
  mapfile -t have < "$file"
  for (( i = 0; i + ${#want[@]} <= ${#have[@]}; i++ )); do
    for (( j = 0; j < ${#want[@]}; j++ )); do
      [[ ${have[i + j]} == "${want[j]}" ]] || continue 2
    done
    return 0
  done
  echo "     (expected the arguments '${want[*]}' in: ${have[*]})"
  return 1
}
# ends_with FILE WORD...: the last arguments in FILE are the words.
ends_with() {
  local file=$1 have=() want
  shift
  want=("$@")
  [[ -f $file ]] || { echo "     (no $file)"; return 1; }
  mapfile -t have < "$file"
  if [[ ${#have[@]} -ge ${#want[@]} && "${have[*]: -${#want[@]}}" == "${want[*]}" ]]; then
    return 0
  fi
  echo "     (expected the arguments to end with '${want[*]}': ${have[*]})"
  return 1
}
lacks_arg() {
  if grep -qxF -- "$2" "$1" 2>/dev/null; then
    echo "     (did not expect '$2' in: $(tr '\n' ' ' < "$1"))"
    return 1
  fi
}
has_line() {
  if grep -qxF -- "$2" "$1" 2>/dev/null; then return 0; fi
  echo "     (expected the line '$2' in $1: $(tr '\n' '|' < "$1" 2>/dev/null || echo '<missing>'))"
  return 1
}
no_file() {
  if [[ -e $1 ]]; then echo "     (did not expect $1: $(tr '\n' '|' < "$1"))"; return 1; fi
}
equals() {
  [[ $1 == "$2" ]] && return 0
  echo "     (got '$1', expected '$2')"
  return 1
}
calls() { cat "$case_dir/$1.count" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- Slurm: train.sbatch
test_slurm() {
  local sbatch=$root/cluster/slurm/train.sbatch
  local base_env=(SLURM_JOB_ID=4242 SLURM_NTASKS=8 SLURM_JOB_NUM_NODES=2 SLURM_CPUS_PER_TASK=3
                  CELLFM_BIN="$fake_bin")

  new_case slurm-usr1
  case_env=("${base_env[@]}" STUB_MODES=signal)
  start "$sbatch" experiments/x.yaml --set run.seed=7
  wait_for "$case_dir/srun.1.ready" && kill -USR1 "$pid"
  finish
  check "sbatch: SIGUSR1 to the batch shell reaches the launcher as SIGUSR1" \
    has_line "$case_dir/srun.1.signals" USR1
  check "sbatch: exit status 75 passed through" equals "$status" 75
  check "sbatch: srun --mpi=pmix with --cpus-per-task" \
    has_args "$case_dir/srun.1.args" --mpi=pmix --cpus-per-task=3
  check "sbatch: runs BIN train SPEC --set ... --resume auto" ends_with "$case_dir/srun.1.args" \
    "$fake_bin" train experiments/x.yaml --set run.seed=7 --resume auto
  check "sbatch: HDF5_USE_FILE_LOCKING=FALSE for the ranks" \
    has_line "$case_dir/srun.1.env" HDF5_USE_FILE_LOCKING=FALSE
  check "sbatch: OMP_NUM_THREADS from SLURM_CPUS_PER_TASK" \
    has_line "$case_dir/srun.1.env" OMP_NUM_THREADS=3
  check "sbatch: scontrol requeue <job id> after exit 75" has_line "$case_dir/scontrol.calls" "requeue 4242"

  new_case slurm-term
  case_env=("${base_env[@]}" STUB_MODES=signal)
  start "$sbatch" experiments/x.yaml
  wait_for "$case_dir/srun.1.ready" && kill -TERM "$pid"
  finish
  check "sbatch: SIGTERM to the batch shell reaches the launcher as SIGUSR1" \
    has_line "$case_dir/srun.1.signals" USR1
  check "sbatch: SIGTERM is not passed on as SIGTERM (srun would SIGKILL the ranks)" \
    lacks_arg "$case_dir/srun.1.signals" TERM
  check "sbatch: requeued after the SIGTERM stop" has_line "$case_dir/scontrol.calls" "requeue 4242"
  check "sbatch: exit 75 after the SIGTERM stop" equals "$status" 75

  new_case slurm-done
  case_env=("${base_env[@]}" STUB_MODES=0)
  start "$sbatch" experiments/x.yaml
  finish
  check "sbatch: exit 0 when cellfm finished" equals "$status" 0
  check "sbatch: no requeue after exit 0" no_file "$case_dir/scontrol.calls"

  new_case slurm-error
  case_env=("${base_env[@]}" STUB_MODES=1)
  start "$sbatch" experiments/x.yaml
  finish
  check "sbatch: exit 1 passed through" equals "$status" 1
  check "sbatch: no requeue after exit 1" no_file "$case_dir/scontrol.calls"

  new_case slurm-mpirun
  case_env=("${base_env[@]}" STUB_MODES=75 CELLFM_LAUNCHER=mpirun NCCL_DEBUG=INFO
            CELLFM_SPEC=experiments/y.yaml "CELLFM_ARGS=--set run.seed=1")
  start "$sbatch"
  finish
  check "sbatch mpirun: -np from SLURM_NTASKS" has_args "$case_dir/mpirun.1.args" -np 8
  check "sbatch mpirun: -x HDF5_USE_FILE_LOCKING" has_args "$case_dir/mpirun.1.args" -x HDF5_USE_FILE_LOCKING
  check "sbatch mpirun: -x OMP_NUM_THREADS" has_args "$case_dir/mpirun.1.args" -x OMP_NUM_THREADS
  check "sbatch mpirun: -x NCCL_DEBUG when set" has_args "$case_dir/mpirun.1.args" -x NCCL_DEBUG
  check "sbatch mpirun: spec and args from CELLFM_SPEC/CELLFM_ARGS, --resume auto" \
    ends_with "$case_dir/mpirun.1.args" "$fake_bin" train experiments/y.yaml --set run.seed=1 --resume auto
  check "sbatch mpirun: srun not used" equals "$(calls srun)" 0
  check "sbatch mpirun: requeue after exit 75" has_line "$case_dir/scontrol.calls" "requeue 4242"

  new_case slurm-max-requeues
  case_env=("${base_env[@]}" STUB_MODES=75 SLURM_RESTART_COUNT=3 CELLFM_MAX_REQUEUES=3)
  start "$sbatch" experiments/x.yaml
  finish
  check "sbatch: no requeue once SLURM_RESTART_COUNT reaches CELLFM_MAX_REQUEUES" \
    no_file "$case_dir/scontrol.calls"

  new_case slurm-usage
  case_env=("${base_env[@]}")
  start "$sbatch"
  finish
  check "sbatch: exit 2 without a spec" equals "$status" 2
  check "sbatch: no launcher without a spec" equals "$(calls srun)" 0
  new_case slurm-resume-given
  start "$sbatch" experiments/x.yaml --resume /some/checkpoint
  finish
  check "sbatch: exit 2 when --resume is passed (the template adds --resume auto)" equals "$status" 2
}

# ---------------------------------------------------------------- PBS: train.pbs
test_pbs() {
  local pbs=$root/cluster/pbs/train.pbs
  local nodefile=$work/pbs_nodefile
  printf 'nodeA\nnodeA\nnodeB\nnodeB\n' > "$nodefile"
  local base_env=(PBS_JOBID=77.pbs-server PBS_NODEFILE="$nodefile" NCPUS=12 CELLFM_BIN="$fake_bin"
                  CELLFM_SPEC=experiments/x.yaml "CELLFM_ARGS=--set run.seed=7")

  new_case pbs-timer
  # The walltime timer: walltime 4 s, stop 2 s before it: SIGUSR1 without anyone sending one.
  case_env=("${base_env[@]}" STUB_MODES=signal PBS_O_WORKDIR="$case_dir" CELLFM_WALLTIME=00:00:04
            CELLFM_STOP_BEFORE_S=2)
  start "$pbs"
  finish
  check "pbs: the walltime timer sends SIGUSR1 to mpirun" has_line "$case_dir/mpirun.1.signals" USR1
  check "pbs: exit 75 passed through" equals "$status" 75
  check "pbs: mpirun -np <nodefile lines> --hostfile \$PBS_NODEFILE" \
    has_args "$case_dir/mpirun.1.args" -np 4 --hostfile "$nodefile"
  check "pbs: -x HDF5_USE_FILE_LOCKING and OMP_NUM_THREADS" \
    has_args "$case_dir/mpirun.1.args" -x HDF5_USE_FILE_LOCKING -x OMP_NUM_THREADS
  check "pbs: OMP_NUM_THREADS = NCPUS / ranks per node" has_line "$case_dir/mpirun.1.env" OMP_NUM_THREADS=6
  check "pbs: HDF5_USE_FILE_LOCKING=FALSE" has_line "$case_dir/mpirun.1.env" HDF5_USE_FILE_LOCKING=FALSE
  check "pbs: runs BIN train SPEC ARGS --resume auto" ends_with "$case_dir/mpirun.1.args" \
    "$fake_bin" train experiments/x.yaml --set run.seed=7 --resume auto
  check "pbs: qrerun \$PBS_JOBID after exit 75" has_line "$case_dir/qrerun.calls" 77.pbs-server
  check "pbs: output appended to cellfm-<job>.log in PBS_O_WORKDIR" \
    grep -q "mpirun exited with status 75" "$case_dir/cellfm-77.log"

  new_case pbs-term
  case_env=("${base_env[@]}" STUB_MODES=signal PBS_O_WORKDIR="$case_dir" CELLFM_PBS_LOG=)
  start "$pbs" experiments/z.yaml
  wait_for "$case_dir/mpirun.1.ready" && kill -TERM "$pid"
  finish
  check "pbs: SIGTERM to the batch shell reaches mpirun as SIGUSR1" has_line "$case_dir/mpirun.1.signals" USR1
  check "pbs: SIGTERM not passed on as SIGTERM (mpirun would kill the ranks)" \
    lacks_arg "$case_dir/mpirun.1.signals" TERM
  check "pbs: the script's argument overrides CELLFM_SPEC" \
    ends_with "$case_dir/mpirun.1.args" "$fake_bin" train experiments/z.yaml --set run.seed=7 --resume auto
  check "pbs: qrerun after the SIGTERM stop" has_line "$case_dir/qrerun.calls" 77.pbs-server

  new_case pbs-done
  case_env=("${base_env[@]}" STUB_MODES=0 PBS_O_WORKDIR="$case_dir")
  start "$pbs"
  finish
  check "pbs: exit 0 when cellfm finished" equals "$status" 0
  check "pbs: no qrerun after exit 0" no_file "$case_dir/qrerun.calls"

  new_case pbs-qsub
  case_env=("${base_env[@]}" STUB_MODES=75 PBS_O_WORKDIR="$case_dir" CELLFM_REQUEUE=qsub)
  start "$pbs"
  finish
  check "pbs: CELLFM_REQUEUE=qsub submits a new job with qsub -V" \
    has_line "$case_dir/qsub.calls" "-V cluster/pbs/train.pbs"
  check "pbs: CELLFM_REQUEUE=qsub does not call qrerun" no_file "$case_dir/qrerun.calls"
}

# ---------------------------------------------------------------- launch.sh
test_launch() {
  local launch=$root/cluster/launch.sh

  new_case launch-hosts
  case_env=(CELLFM_BIN="$fake_bin" STUB_MODES=0 NCCL_SOCKET_IFNAME=ib0)
  start "$launch" -H node1:2,node2:2 -n 4 -- train experiments/x.yaml --set run.seed=7
  finish
  check "launch: exit 0" equals "$status" 0
  check "launch: mpirun --host LIST -n N" has_args "$case_dir/mpirun.1.args" --host node1:2,node2:2 -n 4
  check "launch: --oversubscribe only with -o" lacks_arg "$case_dir/mpirun.1.args" --oversubscribe
  if [[ ${#root_flag[@]} -gt 0 ]]; then
    check "launch: --allow-run-as-root as root" has_args "$case_dir/mpirun.1.args" --allow-run-as-root
  else
    check "launch: no --allow-run-as-root when not root" lacks_arg "$case_dir/mpirun.1.args" --allow-run-as-root
  fi
  check "launch: -x HDF5_USE_FILE_LOCKING (FALSE)" has_args "$case_dir/mpirun.1.args" -x HDF5_USE_FILE_LOCKING
  check "launch: HDF5_USE_FILE_LOCKING=FALSE by default" has_line "$case_dir/mpirun.1.env" HDF5_USE_FILE_LOCKING=FALSE
  check "launch: -x NCCL_SOCKET_IFNAME when set" has_args "$case_dir/mpirun.1.args" -x NCCL_SOCKET_IFNAME
  check "launch: no -x OMP_NUM_THREADS when unset" lacks_arg "$case_dir/mpirun.1.args" OMP_NUM_THREADS
  check "launch: BIN and the cellfm arguments unchanged at the end" \
    ends_with "$case_dir/mpirun.1.args" "$fake_bin" train experiments/x.yaml --set run.seed=7
  check "launch: no retry without --retry" equals "$(calls mpirun)" 1

  new_case launch-hostfile
  printf 'node1 slots=2\nnode2 slots=2\n' > "$case_dir/hosts"
  case_env=(CELLFM_BIN="$fake_bin" STUB_MODES=0 OMP_NUM_THREADS=5)
  start "$launch" -H "$case_dir/hosts" -o -x LD_LIBRARY_PATH check experiments/x.yaml
  finish
  check "launch: -H FILE becomes --hostfile FILE" has_args "$case_dir/mpirun.1.args" --hostfile "$case_dir/hosts"
  check "launch: -o adds --oversubscribe" has_args "$case_dir/mpirun.1.args" --oversubscribe
  check "launch: -x VAR passed on" has_args "$case_dir/mpirun.1.args" -x LD_LIBRARY_PATH
  check "launch: -x OMP_NUM_THREADS when set" has_args "$case_dir/mpirun.1.args" -x OMP_NUM_THREADS
  check "launch: no -n when not given" lacks_arg "$case_dir/mpirun.1.args" -n

  new_case launch-local
  case_env=(CELLFM_BIN="$fake_bin" STUB_MODES=0)
  start "$launch" -n 2 -- check experiments/x.yaml
  finish
  check "launch: without -H no --host (this machine)" lacks_arg "$case_dir/mpirun.1.args" --host
  check "launch: without -H no --hostfile" lacks_arg "$case_dir/mpirun.1.args" --hostfile
  check "launch: -n 2" has_args "$case_dir/mpirun.1.args" -n 2

  new_case launch-retry
  case_env=(CELLFM_BIN="$fake_bin" STUB_MODES=75 CELLFM_RETRY_DELAY=0)
  start "$launch" -n 2 --retry 2 -- --log-level warn train experiments/x.yaml --resume /old/checkpoint
  finish
  check "launch --retry 2: 3 runs when every run exits 75" equals "$(calls mpirun)" 3
  check "launch --retry 2: exit 75 once the retries are spent" equals "$status" 75
  check "launch --retry: the first run keeps the user's arguments" ends_with "$case_dir/mpirun.1.args" \
    "$fake_bin" --log-level warn train experiments/x.yaml --resume /old/checkpoint
  check "launch --retry: retry 1 resumes with --resume auto (given --resume dropped)" \
    ends_with "$case_dir/mpirun.2.args" "$fake_bin" --log-level warn train experiments/x.yaml --resume auto
  check "launch --retry: retry 2 resumes with --resume auto" \
    ends_with "$case_dir/mpirun.3.args" "$fake_bin" --log-level warn train experiments/x.yaml --resume auto
  check "launch --retry: the old --resume path is gone" lacks_arg "$case_dir/mpirun.3.args" /old/checkpoint

  new_case launch-retry-then-done
  case_env=(CELLFM_BIN="$fake_bin" "STUB_MODES=75 0" CELLFM_RETRY_DELAY=0)
  start "$launch" --retry 5 -- train experiments/x.yaml
  finish
  check "launch --retry 5: stops retrying after a run exits 0" equals "$(calls mpirun)" 2
  check "launch --retry 5: exit 0" equals "$status" 0

  new_case launch-retry-error
  case_env=(CELLFM_BIN="$fake_bin" "STUB_MODES=75 1" CELLFM_RETRY_DELAY=0)
  start "$launch" --retry 5 -- train experiments/x.yaml
  finish
  check "launch --retry 5: no retry after exit 1" equals "$(calls mpirun)" 2
  check "launch --retry 5: exit 1" equals "$status" 1

  new_case launch-retry-not-train
  case_env=(CELLFM_BIN="$fake_bin" STUB_MODES=75 CELLFM_RETRY_DELAY=0)
  start "$launch" --retry 2 -- check experiments/x.yaml
  finish
  check "launch --retry: only train is retried" equals "$(calls mpirun)" 1

  new_case launch-signal
  case_env=(CELLFM_BIN="$fake_bin" STUB_MODES=signal CELLFM_RETRY_DELAY=0)
  start "$launch" --retry 2 -- train experiments/x.yaml
  wait_for "$case_dir/mpirun.1.ready" && kill -TERM "$pid"
  finish
  check "launch: SIGTERM to the script reaches mpirun as SIGUSR1" has_line "$case_dir/mpirun.1.signals" USR1
  check "launch: SIGTERM not passed on as SIGTERM" lacks_arg "$case_dir/mpirun.1.signals" TERM
  check "launch: exit 75 after a requested stop" equals "$status" 75
  check "launch: no retry after a stop this script was asked for" equals "$(calls mpirun)" 1

  new_case launch-usr1
  case_env=(CELLFM_BIN="$fake_bin" STUB_MODES=signal)
  start "$launch" -- train experiments/x.yaml
  wait_for "$case_dir/mpirun.1.ready" && kill -USR1 "$pid"
  finish
  check "launch: SIGUSR1 to the script reaches mpirun" has_line "$case_dir/mpirun.1.signals" USR1

  new_case launch-help
  case_env=()
  start "$launch" -h
  finish
  check "launch -h: exit 0" equals "$status" 0
  check "launch -h: prints usage" grep -q "^usage: cluster/launch.sh" "$case_dir/output"
  new_case launch-bad-option
  case_env=(CELLFM_BIN="$fake_bin")
  start "$launch" --bogus -- train x.yaml
  finish
  check "launch: exit 2 on an unknown option" equals "$status" 2
  check "launch: no mpirun on bad usage" equals "$(calls mpirun)" 0
}

# ---------------------------------------------------------------- lint
lint_targets() {
  local f
  while IFS= read -r -d '' f; do
    case $f in
      *.sh|*.sbatch|*.pbs) echo "$f" ;;
      *) head -n 1 "$f" | grep -qE '^#!.*\b(ba)?sh\b' && echo "$f" ;;
    esac
  done < <(find "$root/cluster" -type f -print0 | sort -z)
  echo "$root/tests/cluster/cluster_scripts_test.sh"
}

test_lint() {
  local f targets=()
  mapfile -t targets < <(lint_targets)
  for f in "${targets[@]}"; do
    check "bash -n ${f#"$root"/}" bash -n "$f"
  done
  for f in "$root/cluster/launch.sh" "$root/cluster/slurm/train.sbatch" "$root/cluster/pbs/train.pbs"; do
    check "executable: ${f#"$root"/}" test -x "$f"
  done
  local shellcheck_bin
  shellcheck_bin=$(command -v shellcheck || true)
  if [[ -z $shellcheck_bin ]]; then
    skip "shellcheck: not installed (cluster/install-deps.sh installs it); ${#targets[@]} scripts unchecked"
    return
  fi
  for f in "${targets[@]}"; do
    check "shellcheck ${f#"$root"/}" "$shellcheck_bin" -x --shell=bash "$f"
  done
}

start_s=$SECONDS
case $group in
  behaviour) test_slurm; test_pbs; test_launch ;;
  lint) test_lint ;;
  all) test_slurm; test_pbs; test_launch; test_lint ;;
  *) echo "usage: $0 [REPO_ROOT] [all|behaviour|lint]" >&2; exit 2 ;;
esac
echo "cluster scripts: $(( SECONDS - start_s )) s"
if [[ $skipped -gt 0 ]]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
if [[ $failed -gt 0 ]]; then
  exit 1
fi
if [[ $group == lint && $skipped -gt 0 ]]; then
  exit 77
fi
exit 0
