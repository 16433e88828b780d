#!/usr/bin/env bash
# N training processes on this machine: a rehearsal of a multi-host run (CPU,
# gloo collectives) or one process per GPU group of a multi-GPU box.
# Run `launch/local.sh -h` for the flags; launch/README.md walks through it.
set -euo pipefail
# shellcheck source=launch/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/local.sh --config=FILE --workdir=DIR [options]

Starts N processes of `python -m gigagan_jax.train` with
--coordinator_address=localhost:PORT --num_processes=N --process_id=0..N-1,
waits for all of them and fails (stopping the others) as soon as one fails.
SIGTERM/SIGINT to this script are passed on to every process (each saves a
checkpoint and exits 0; run the same command again to resume).

  --config=FILE        training config (required)
  --workdir=DIR        run directory (required); a run already there is resumed
  --nprocs=N           number of processes (default 2)
  --port=PORT          coordinator port on localhost (default 12355)
  --gpus=G             split G GPUs evenly over the processes with
                       CUDA_VISIBLE_DEVICES (G must be a multiple of N);
                       default 0: CPU processes (JAX_PLATFORMS=cpu, --cpu_collectives=gloo)
  --cpu-devices=K      CPU only: K devices per process (XLA's
                       --xla_force_host_platform_device_count), e.g. to rehearse
                       2 hosts x 4 chips
  --extra='FLAGS'      more training flags, split on spaces
                       (e.g. --extra='--config.train.steps=2 --config.mesh.fsdp=2')
  --python=PATH        interpreter (default: python)
  --logdir=DIR         where processes 1..N-1 write their output (default
                       WORKDIR/launch_logs, or ./launch_logs for a gs:// workdir);
                       process 0 writes to this terminal
  --dry-run            print the commands, run nothing
  -h, --help           this text
EOF
}

CONFIG='' WORKDIR='' NPROCS=2 PORT=12355 GPUS=0 CPU_DEVICES='' EXTRA='' PYTHON=python LOGDIR=''
KILL_AFTER=30  # seconds the others get to exit after one process failed, then SIGKILL

while [ $# -gt 0 ]; do
  case $1 in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac
  case $1 in
    --config) need_value "$1" "${2-}"; CONFIG=$2; shift 2 ;;
    --workdir) need_value "$1" "${2-}"; WORKDIR=$2; shift 2 ;;
    --nprocs) need_value "$1" "${2-}"; NPROCS=$2; shift 2 ;;
    --port) need_value "$1" "${2-}"; PORT=$2; shift 2 ;;
    --gpus) need_value "$1" "${2-}"; GPUS=$2; shift 2 ;;
    --cpu-devices) need_value "$1" "${2-}"; CPU_DEVICES=$2; shift 2 ;;
    --extra) [ $# -ge 2 ] || die "--extra needs a value"; EXTRA=$2; shift 2 ;;
    --python) need_value "$1" "${2-}"; PYTHON=$2; shift 2 ;;
    --logdir) need_value "$1" "${2-}"; LOGDIR=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see launch/local.sh -h)" ;;
  esac
done

[ -n "$CONFIG" ] || die "--config is required (e.g. --config=configs/t2i_micro.py)"
[ -n "$WORKDIR" ] || die "--workdir is required (e.g. --workdir=runs/mp)"
positive_int --nprocs "$NPROCS"
is_uint "$PORT" && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "--port=$PORT: expected 1..65535"
is_uint "$GPUS" || die "--gpus=$GPUS: expected a number of GPUs (0 = CPU)"
if [ "$GPUS" -gt 0 ]; then
  [ $((GPUS % NPROCS)) = 0 ] || die "--gpus=$GPUS does not split evenly over --nprocs=$NPROCS"
  [ -z "$CPU_DEVICES" ] || die "--cpu-devices is for CPU processes; drop it or --gpus"
fi
[ -z "$CPU_DEVICES" ] || positive_int --cpu-devices "$CPU_DEVICES"
case $WORKDIR in
  *://*) LOGDIR=${LOGDIR:-launch_logs} ;;  # a gs:// workdir: logs stay on this machine
  *) LOGDIR=${LOGDIR:-$WORKDIR/launch_logs} ;;
esac
read -r -a EXTRA_ARGS <<<"$EXTRA" || true

# CMD=(...): the command of process $1.
process_command() {
  local i=$1 per
  CMD=(env)
  if [ "$GPUS" -gt 0 ]; then
    per=$((GPUS / NPROCS))
    # JAX_LOCAL_DEVICE_IDS: all GPUs this process sees. Without it, JAX inside
    # a SLURM allocation (salloc) would keep only GPU $SLURM_LOCALID.
    CMD+=("CUDA_VISIBLE_DEVICES=$(seq -s, $((i * per)) $((i * per + per - 1)))"
          "JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((per - 1)))")
  else
    CMD+=(JAX_PLATFORMS=cpu)
    [ -z "$CPU_DEVICES" ] ||
      CMD+=("XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$CPU_DEVICES")
  fi
  CMD+=("$PYTHON" -m gigagan_jax.train "--config=$CONFIG" "--workdir=$WORKDIR"
        "--coordinator_address=localhost:$PORT" "--num_processes=$NPROCS" "--process_id=$i")
  [ "$GPUS" -gt 0 ] || CMD+=(--cpu_collectives=gloo)
  CMD+=(${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
}

if [ "$GPUS" -gt 0 ]; then
  info "processes: $NPROCS, $((GPUS / NPROCS)) GPU(s) each; coordinator localhost:$PORT"
else
  info "processes: $NPROCS on CPU (gloo collectives); coordinator localhost:$PORT"
fi

PIDS=()
for ((i = 0; i < NPROCS; i++)); do
  process_command "$i"
  echo "+ $(qcmd "${CMD[@]}")"
  [ "$i" = 0 ] || info "process $i output -> $LOGDIR/process_$i.log"
  [ "$DRY_RUN" = 1 ] && continue
  if [ "$i" = 0 ]; then
    "${CMD[@]}" &
  else
    mkdir -p "$LOGDIR"
    "${CMD[@]}" >"$LOGDIR/process_$i.log" 2>&1 &
  fi
  PIDS+=($!)
done
[ "$DRY_RUN" = 0 ] || exit 0

signal_all() {  # signal_all SIG: to every process still running
  local pid
  for pid in "${PIDS[@]}"; do
    [ "$pid" = - ] || kill "-$1" "$pid" 2>/dev/null || true
  done
}
trap 'info "SIGTERM: passed on to every process"; signal_all TERM' TERM
trap 'info "SIGINT: passed on to every process as SIGTERM"; signal_all TERM' INT

# Poll instead of `wait -n` (bash 4.3+): note every exit, stop the rest on the first failure.
FAILED='' STATUS=0 LEFT=$NPROCS STOP_AT=''
while [ "$LEFT" -gt 0 ]; do
  for ((i = 0; i < NPROCS; i++)); do
    pid=${PIDS[$i]}
    [ "$pid" = - ] && continue
    kill -0 "$pid" 2>/dev/null && continue
    rc=0
    wait "$pid" || rc=$?
    PIDS[i]=-
    LEFT=$((LEFT - 1))
    if [ "$rc" != 0 ] && [ -z "$FAILED" ]; then
      FAILED=$i STATUS=$rc
      echo "error: process $i exited with status $rc; stopping the others" >&2
      [ "$i" = 0 ] || { echo "--- last lines of $LOGDIR/process_$i.log:" >&2
                        tail -n 20 "$LOGDIR/process_$i.log" >&2 || true; }
      signal_all TERM
      STOP_AT=$((SECONDS + KILL_AFTER))
    fi
  done
  if [ -n "$STOP_AT" ] && [ "$SECONDS" -ge "$STOP_AT" ]; then
    signal_all KILL
    STOP_AT=''
  fi
  [ "$LEFT" = 0 ] || sleep 1
done

if [ -n "$FAILED" ]; then
  exit "$STATUS"
fi
info "all $NPROCS processes exited 0"
