#!/usr/bin/env bash
# Trains on every worker of a Cloud TPU VM slice (a pod slice or a single host):
# create (or reuse) the TPU, ship a commit of this repository to all workers,
# install it in a virtual environment, then start the same training command on
# all workers with --distributed (jax.distributed.initialize() reads the
# coordinator, process count and process index from the TPU metadata; no
# environment variables are needed).
# Run `launch/tpu_pod.sh -h` for the flags; launch/README.md walks through it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/common.sh
. "$HERE/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh --name=TPU --zone=ZONE --accelerator=TYPE --config=FILE --workdir=DIR [options]

  --name=TPU          TPU VM (node) name (required)
  --zone=ZONE         e.g. us-central2-b (required)
  --project=PROJECT   GCP project (default: gcloud's configured project)
  --accelerator=TYPE  v2-N v3-N v4-N v5p-N (N = TensorCores) or v5litepod-N v6e-N
                      (N = chips), e.g. v4-64, v5p-128, v5litepod-16 (required)
  --version=RUNTIME   TPU software version (default by type: tpu-ubuntu2204-base for
                      v2/v3/v4, v2-alpha-tpuv5-lite for v5litepod, v2-alpha-tpuv5 for
                      v5p, v2-alpha-tpuv6e for v6e)
  --config=FILE       training config, relative to the repository root (required)
  --workdir=DIR       gs://BUCKET/PATH, written directly by every worker (no mount);
                      or an absolute path every worker mounts (NFS, Filestore); a run
                      already there is resumed (required)
  --extra='FLAGS'     more training flags, split on spaces
  --ref=REF           git commit/branch/tag to ship (default HEAD; uncommitted
                      changes are not shipped)
  --queued            create through a queued resource (waits until it is ACTIVE)
  --spot              spot (preemptible) capacity
  --reuse             the TPU exists already: skip creation (checks it is READY)
  --detach            start training in the background on every worker (nohup, log in
                      ~/gigagan_jax_train.log) instead of streaming it here
  --python=NAME       Python (>= 3.11) on the workers, installed with apt if missing
                      (default python3.11)
  --dry-run           print every command (lines starting '+ '), run nothing
  -h, --help          this text
EOF
}

NAME='' ZONE='' PROJECT='' ACCEL='' VERSION='' CONFIG='' WORKDIR='' EXTRA='' REF=HEAD
QUEUED=0 SPOT=0 REUSE=0 DETACH=0 PY=python3.11
POLL_SECONDS=60                       # queued resource: time between state checks
# shellcheck disable=SC2088  # '~' is for the workers' shell to expand
REMOTE_CODE='~/gigagan_jax'           # on the workers
# shellcheck disable=SC2088
REMOTE_VENV='~/gigagan_jax_venv'
# shellcheck disable=SC2088
REMOTE_LOG='~/gigagan_jax_train.log'

while [ $# -gt 0 ]; do
  case $1 in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac
  case $1 in
    --name) need_value "$1" "${2-}"; NAME=$2; shift 2 ;;
    --zone) need_value "$1" "${2-}"; ZONE=$2; shift 2 ;;
    --project) need_value "$1" "${2-}"; PROJECT=$2; shift 2 ;;
    --accelerator) need_value "$1" "${2-}"; ACCEL=$2; shift 2 ;;
    --version) need_value "$1" "${2-}"; VERSION=$2; shift 2 ;;
    --config) need_value "$1" "${2-}"; CONFIG=$2; shift 2 ;;
    --workdir) need_value "$1" "${2-}"; WORKDIR=$2; shift 2 ;;
    --extra) [ $# -ge 2 ] || die "--extra needs a value"; EXTRA=$2; shift 2 ;;
    --ref) need_value "$1" "${2-}"; REF=$2; shift 2 ;;
    --python) need_value "$1" "${2-}"; PY=$2; shift 2 ;;
    --queued) QUEUED=1; shift ;;
    --spot) SPOT=1; shift ;;
    --reuse) REUSE=1; shift ;;
    --detach) DETACH=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see launch/tpu_pod.sh -h)" ;;
  esac
done

for flag in name zone accelerator config workdir; do
  case $flag in
    name) v=$NAME ;; zone) v=$ZONE ;; accelerator) v=$ACCEL ;; config) v=$CONFIG ;; workdir) v=$WORKDIR ;;
  esac
  [ -n "$v" ] || die "--$flag is required (see launch/tpu_pod.sh -h)"
done

# ------------------------------------------------------------ workers
# Workers (TPU VM hosts) of a slice, one training process each. The rule:
#   v2-N, v3-N, v4-N, v5p-N: N counts TensorCores, 2 per chip, 4 chips per
#     worker: N/8 workers (v4-64 = 32 chips = 8 workers; v5p-8 = 1 worker).
#   v5litepod-N (v5e), v6e-N: N counts chips (1 TensorCore each); slices of
#     1, 4 or 8 chips are a single worker, larger ones have 4 chips per worker:
#     N/4 workers (v5litepod-16 = 4 workers, v6e-256 = 64).
# Sources: the Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/
# v4, v5p, v5e, v6e: TensorCores per chip, slice shapes) and the VMs-per-slice
# table of google/xpk (system_characteristics.py). Sizes that are no slice
# shape are refused, not guessed.
FAMILY=${ACCEL%-*} SIZE=${ACCEL##*-}
bad_size() { die "--accelerator=$ACCEL: $FAMILY slices come in sizes $1"; }
{ [ "$FAMILY" != "$ACCEL" ] && is_uint "$SIZE"; } ||
  die "--accelerator=$ACCEL: expected TYPE-SIZE, e.g. v4-64, v5p-128, v5litepod-16"
case $FAMILY in
  v2 | v3 | v4 | v5p)
    case $FAMILY in
      v2) case $SIZE in 8 | 32 | 128 | 256 | 512) ;; *) bad_size "8 32 128 256 512" ;; esac ;;
      v3) case $SIZE in 8 | 32 | 64 | 128 | 256 | 512 | 1024 | 2048) ;;
            *) bad_size "8 32 64 128 256 512 1024 2048" ;; esac ;;
      *) max=8192; [ "$FAMILY" = v5p ] && max=17920
         case $SIZE in 8 | 16 | 32 | 64) ;;
           *) [ $((SIZE % 128)) = 0 ] && [ "$SIZE" -le "$max" ] ||
                bad_size "8, 16, 32, 64 and multiples of 128 up to $max (TensorCores)" ;;
         esac ;;
    esac
    WORKERS=$((SIZE / 8))
    WHY="$SIZE TensorCores = $((SIZE / 2)) chips, 4 chips per worker" ;;
  v5litepod | v6e)
    case $SIZE in
      1 | 4 | 8) WORKERS=1; WHY="$SIZE chip(s) on one worker" ;;
      16 | 32 | 64 | 128 | 256) WORKERS=$((SIZE / 4)); WHY="$SIZE chips, 4 chips per worker" ;;
      *) bad_size "1 4 8 16 32 64 128 256 (chips)" ;;
    esac ;;
  v5e) die "--accelerator=$ACCEL: Cloud TPU names v5e slices v5litepod-N; use --accelerator=v5litepod-$SIZE" ;;
  *) die "--accelerator=$ACCEL: unknown TPU type; known: v2-N v3-N v4-N v5p-N (N = TensorCores), v5litepod-N v6e-N (N = chips)" ;;
esac
if [ -z "$VERSION" ]; then
  case $FAMILY in
    v2 | v3 | v4) VERSION=tpu-ubuntu2204-base ;;
    v5litepod) VERSION=v2-alpha-tpuv5-lite ;;
    v5p) VERSION=v2-alpha-tpuv5 ;;
    v6e) VERSION=v2-alpha-tpuv6e ;;
  esac
fi
info "workers: $WORKERS ($ACCEL: $WHY)"
info "processes: $WORKERS, one per worker; jax.distributed.initialize() finds the coordinator itself"

# ------------------------------------------------------------ workdir
case $WORKDIR in
  gs://*)
    rest=${WORKDIR#gs://}
    [ -n "${rest%%/*}" ] || die "--workdir=$WORKDIR: no bucket name"
    # The trainer writes gs:// itself (etils.epath, Orbax/tensorstore), with the
    # TPU VM's service account; no gcsfuse mount, whose emulated renames and
    # appends do not suit multi-host Orbax saves.
    TRAIN_WORKDIR=$WORKDIR
    info "workdir: $WORKDIR (written directly by every worker)" ;;
  /*) TRAIN_WORKDIR=$WORKDIR
      info "workdir: $WORKDIR (must be a filesystem every worker mounts)" ;;
  *) [ "$WORKERS" = 1 ] ||
       die "--workdir=$WORKDIR: $WORKERS workers need storage they all reach: gs://BUCKET/PATH or an absolute path on a shared filesystem"
     TRAIN_WORKDIR=$WORKDIR ;;
esac

# ------------------------------------------------------------ code
REPO=$(git -C "$HERE" rev-parse --show-toplevel) || die "launch/ is not inside a git checkout"
COMMIT=$(git -C "$REPO" rev-parse --verify --quiet "$REF^{commit}") ||
  die "--ref=$REF: no such commit in $REPO"
git -C "$REPO" cat-file -e "$COMMIT:${CONFIG%%:*}" 2>/dev/null ||
  die "--config=$CONFIG: not a file of $REF ($COMMIT); give a path relative to the repository root, committed"
if [ "$REF" = HEAD ] && [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
  info "warning: uncommitted changes are not shipped (commit them, or pass --ref)"
fi
info "code: $REF = $COMMIT"
TARBALL=${TMPDIR:-/tmp}/gigagan_jax-$NAME-${COMMIT:0:12}.tar.gz

[ "$DRY_RUN" = 1 ] || command -v gcloud >/dev/null ||
  die "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk)"
WHERE=("--zone=$ZONE")
[ -z "$PROJECT" ] || WHERE+=("--project=$PROJECT")
SPOT_FLAG=()
[ "$SPOT" = 0 ] || SPOT_FLAG=(--spot)

# ssh_all CMD: runs the shell command CMD on every worker.
ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${WHERE[@]}" --worker=all --command="$1"
}

# ------------------------------------------------------------ TPU
if [ "$REUSE" = 1 ]; then
  echo "+ $(qcmd gcloud compute tpus tpu-vm describe "$NAME" "${WHERE[@]}" '--format=value(state)')"
  if [ "$DRY_RUN" = 0 ]; then
    state=$(gcloud compute tpus tpu-vm describe "$NAME" "${WHERE[@]}" '--format=value(state)') ||
      die "--reuse: no TPU VM $NAME in $ZONE (drop --reuse to create it)"
    [ "$state" = READY ] || die "--reuse: TPU VM $NAME is $state, not READY"
  fi
elif [ "$QUEUED" = 1 ]; then
  run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" "${WHERE[@]}" \
    --accelerator-type="$ACCEL" --runtime-version="$VERSION" ${SPOT_FLAG[@]+"${SPOT_FLAG[@]}"}
  STATE_CMD=(gcloud compute tpus queued-resources describe "$NAME" "${WHERE[@]}" '--format=value(state.state)')
  echo "+ $(qcmd "${STATE_CMD[@]}")"
  info "(repeated every $POLL_SECONDS s until the state is ACTIVE)"
  while [ "$DRY_RUN" = 0 ]; do
    state=$("${STATE_CMD[@]}")
    case $state in
      ACTIVE) break ;;
      FAILED | SUSPENDED) die "queued resource $NAME is $state" ;;
    esac
    info "queued resource $NAME: $state; waiting"
    sleep "$POLL_SECONDS"
  done
else
  run gcloud compute tpus tpu-vm create "$NAME" "${WHERE[@]}" \
    --accelerator-type="$ACCEL" --version="$VERSION" ${SPOT_FLAG[@]+"${SPOT_FLAG[@]}"}
fi

# ------------------------------------------------------------ ship, install
run git -C "$REPO" archive --format=tar.gz -o "$TARBALL" "$COMMIT"
run gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME:gigagan_jax.tar.gz" "${WHERE[@]}" --worker=all
APT="sudo apt-get -o DPkg::Lock::Timeout=300"  # fresh VMs run unattended-upgrades at boot
ssh_all "set -e; command -v $PY >/dev/null || { $APT update -qq && $APT install -y -qq $PY $PY-venv; }; \
rm -rf $REMOTE_CODE && mkdir -p $REMOTE_CODE && tar -xzf ~/gigagan_jax.tar.gz -C $REMOTE_CODE; \
[ -x $REMOTE_VENV/bin/python ] || $PY -m venv $REMOTE_VENV; \
cd $REMOTE_CODE && $REMOTE_VENV/bin/pip install -q -r requirements.txt -e . 'jax[tpu]'"

# ------------------------------------------------------------ train
read -r -a EXTRA_ARGS <<<"$EXTRA" || true
TRAIN="$REMOTE_VENV/bin/python -m gigagan_jax.train $(qcmd "--config=$CONFIG" "--workdir=$TRAIN_WORKDIR") --distributed"
[ ${#EXTRA_ARGS[@]} = 0 ] || TRAIN="$TRAIN $(qcmd "${EXTRA_ARGS[@]}")"
info "stop with a checkpoint: $(qcmd gcloud compute tpus tpu-vm ssh "$NAME" "${WHERE[@]}" --worker=all \
  --command="pkill -TERM -f '[g]igagan_jax.train'")"
info "resume: run this same command again (add --reuse while the TPU exists)"
if [ "$DETACH" = 1 ]; then
  info "follow: $(qcmd gcloud compute tpus tpu-vm ssh "$NAME" "${WHERE[@]}" --worker=0 --command="tail -f $REMOTE_LOG")"
  ssh_all "cd $REMOTE_CODE && nohup $TRAIN >$REMOTE_LOG 2>&1 </dev/null &"
else
  ssh_all "cd $REMOTE_CODE && $TRAIN"
fi
