#!/usr/bin/env bash
# Runs cellfm under plain Open MPI mpirun on a list of hosts, without a batch scheduler; with
# --retry, resumes `cellfm train` after it stopped on a checkpoint (exit 75). See usage() below.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: cluster/launch.sh [-H HOSTFILE|HOST:SLOTS,HOST:SLOTS...] [-n RANKS] [-o] [-x VAR]...
                         [--retry N] [--] CELLFM-ARGS...

Runs `mpirun ... CELLFM_BIN CELLFM-ARGS...` (CELLFM_BIN defaults to build/cellfm of this checkout;
the binary must be at the same path on every host, and ssh to each host must work without a
password). Examples:
  cluster/launch.sh -n 2 -- check experiments/quickstart.yaml
  cluster/launch.sh -H node1:4,node2:4 -n 8 --retry 20 -- train experiments/x.yaml
  cluster/launch.sh -H hosts.txt -- --log-level warn train experiments/x.yaml --set run.seed=3

  -H HOSTS     an Open MPI hostfile (lines "node1 slots=4"), or a comma-separated list of
               HOST:SLOTS; without -H the ranks run on this machine (mpirun's default: one slot
               per core)
  -n RANKS     number of ranks (default: every slot of the hosts)
  -o           allow more ranks than slots (--oversubscribe)
  -x VAR       also export VAR to the ranks (repeatable), e.g. -x LD_LIBRARY_PATH
  --retry N    when `cellfm train` exits 75 (stopped after a checkpoint because a rank got
               SIGTERM/SIGUSR1/SIGINT from outside this script), run it again with
               `--resume auto` (replacing any --resume given), up to N times
  -h, --help   this text

Exported to the ranks when set (mpirun -x): HDF5_USE_FILE_LOCKING (set to FALSE here unless
already set), OMP_NUM_THREADS, CELLFM_*, NCCL_*, UCX_*; OMPI_MCA_* reach mpirun by themselves.
--allow-run-as-root is added when running as root.

Signals: SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 sent to this script are passed to mpirun as SIGUSR1,
which mpirun forwards to every rank: cellfm stops at the next step boundary, writes a checkpoint
and exits 75, and this script then exits 75 without retrying. A second SIGINT is passed on as
SIGINT: mpirun kills the ranks at once. CELLFM_RETRY_DELAY (default 10) is the pause in seconds
before a retry. Exit status: cellfm's (through mpirun), or 2 for bad usage of this script.
EOF
}

die_usage() {
  echo "launch.sh: error: $*" >&2
  echo "run 'cluster/launch.sh -h' for usage" >&2
  exit 2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
hosts=""
ranks=""
oversubscribe=0
retries=0
exports=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    -H) [[ $# -ge 2 ]] || die_usage "-H needs a hostfile or host list"; hosts=$2; shift 2 ;;
    -n) [[ $# -ge 2 ]] || die_usage "-n needs a number of ranks"; ranks=$2; shift 2 ;;
    -o) oversubscribe=1; shift ;;
    -x) [[ $# -ge 2 ]] || die_usage "-x needs a variable name"; exports+=("$2"); shift 2 ;;
    --retry) [[ $# -ge 2 ]] || die_usage "--retry needs a count"; retries=$2; shift 2 ;;
    --retry=*) retries=${1#--retry=}; shift ;;
    --) shift; break ;;
    -*) die_usage "unknown option $1 (cellfm's own options go after --)" ;;
    *) break ;;
  esac
done
[[ $# -gt 0 ]] || die_usage "no cellfm arguments (e.g. -- train experiments/x.yaml)"
[[ -z $ranks || $ranks =~ ^[1-9][0-9]*$ ]] || die_usage "-n must be a positive integer, got '$ranks'"
[[ $retries =~ ^[0-9]+$ ]] || die_usage "--retry must be a non-negative integer, got '$retries'"
cellfm_args=("$@")

bin=${CELLFM_BIN:-$here/../build/cellfm}
if [[ $bin != /* ]]; then
  # mpirun starts remote ranks in the same working directory; an absolute path is clearer.
  bin=$(cd "$(dirname "$bin")" 2>/dev/null && pwd)/$(basename "$bin")
fi
[[ -x $bin ]] || die_usage "$bin is not an executable (build it with cluster/build.sh, or set CELLFM_BIN)"

# The cellfm command: the first argument that is not a global option (or its value).
command_name=""
skip_next=0
for arg in "${cellfm_args[@]}"; do
  if (( skip_next )); then skip_next=0; continue; fi
  case $arg in
    --log-level) skip_next=1 ;;
    -*) ;;
    *) command_name=$arg; break ;;
  esac
done

export HDF5_USE_FILE_LOCKING=${HDF5_USE_FILE_LOCKING:-FALSE}
mpirun_cmd=(mpirun)
if [[ -n $hosts ]]; then
  if [[ -f $hosts ]]; then
    mpirun_cmd+=(--hostfile "$hosts")
  else
    mpirun_cmd+=(--host "$hosts")
  fi
fi
[[ -n $ranks ]] && mpirun_cmd+=(-n "$ranks")
(( oversubscribe )) && mpirun_cmd+=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpirun_cmd+=(--allow-run-as-root)
for name in HDF5_USE_FILE_LOCKING OMP_NUM_THREADS $(compgen -e | grep -E '^(CELLFM|NCCL|UCX)_'); do
  [[ -n ${!name+set} ]] && mpirun_cmd+=(-x "$name")
done
for name in "${exports[@]}"; do
  mpirun_cmd+=(-x "$name")
done

# Job control puts mpirun in its own process group, so a Ctrl-C at the terminal reaches only this
# script (which turns it into SIGUSR1), not mpirun (which would kill the ranks at once).
set -m
mpirun_pid=""
stop_requested=0
interrupts=0
# shellcheck disable=SC2317  # called by the traps below
on_signal() {
  stop_requested=1
  local sig=USR1
  if [[ $1 == INT ]]; then
    interrupts=$(( interrupts + 1 ))
    (( interrupts > 1 )) && sig=INT
  fi
  echo "launch.sh: received SIG$1; sending SIG$sig to mpirun${mpirun_pid:+ (pid $mpirun_pid)}" >&2
  [[ -n $mpirun_pid ]] && kill -s "$sig" "$mpirun_pid" 2>/dev/null
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal USR1' USR1

run_once() {
  echo "launch.sh: ${mpirun_cmd[*]} $bin $*" >&2
  "${mpirun_cmd[@]}" "$bin" "$@" < /dev/null &
  mpirun_pid=$!
  (( stop_requested )) && kill -s USR1 "$mpirun_pid" 2>/dev/null
  while kill -0 "$mpirun_pid" 2>/dev/null; do
    wait "$mpirun_pid"
  done
  wait "$mpirun_pid"
}

args=("${cellfm_args[@]}")
attempt=0
while true; do
  run_once "${args[@]}"
  status=$?
  mpirun_pid=""
  if [[ $status -ne 75 || $command_name != train ]] || (( attempt >= retries )); then
    break
  fi
  if (( stop_requested )); then
    echo "launch.sh: cellfm stopped after a checkpoint at this script's request; not retrying" >&2
    break
  fi
  attempt=$(( attempt + 1 ))
  # Resume from the newest checkpoint: drop any --resume given and add --resume auto.
  resumed=()
  skip_next=0
  for arg in "${cellfm_args[@]}"; do
    if (( skip_next )); then skip_next=0; continue; fi
    case $arg in
      --resume) skip_next=1 ;;
      --resume=*) ;;
      *) resumed+=("$arg") ;;
    esac
  done
  args=("${resumed[@]}" --resume auto)
  delay=${CELLFM_RETRY_DELAY:-10}
  echo "launch.sh: cellfm stopped after a checkpoint (exit 75); retry $attempt of $retries with --resume auto in $delay s" >&2
  sleep "$delay" &
  sleep_pid=$!
  wait "$sleep_pid" || true
  kill "$sleep_pid" 2>/dev/null
  if (( stop_requested )); then
    echo "launch.sh: stop requested during the pause; not retrying" >&2
    break
  fi
done
if [[ $status -eq 75 && $command_name == train ]] && (( retries > 0 && attempt >= retries )) && (( ! stop_requested )); then
  echo "launch.sh: cellfm stopped after a checkpoint $((attempt + 1)) times; --retry $retries exhausted" >&2
fi
exit "$status"
