#!/usr/bin/env bash
# Issue 17's GPU figures in one pass, most wanted first, each step under its own time limit so
# that one slow compile cannot take the others with it; JSON lines go to $OUT/bench_gpu.jsonl.
#
#   OUT=/tmp/gpu bash bench/gpu.sh                   # one H100/H200, paper sizes
#   T2I=configs/t2i_micro.py UP=configs/up_tiny.py T2I_BATCH=2 UP_BATCH=1 PIPE_BATCH=2 \
#     TILED_OUT=128 TILE=16 STEPS=2 OUT=/tmp/gpu bash bench/gpu.sh      # smoke, on CPU
#
# Environment: OUT (output folder), ONLY (comma list of t2i,sample,tiny,up; default all),
# T2I / UP (configs), T2I_BATCH (train step, default 32: fits one 80 GB card by the planner),
# UP_BATCH, PIPE_BATCH, TILED_OUT, TILE, STEPS, LIMIT (seconds per step, default 300; the
# paper-size train step gets 1.6x that, tiny half, up two thirds).
#
# Compiles take minutes on a GPU: on an H200 with jax 0.11.2 (2026-12-04) the train step
# of t2i_micro had not compiled after 60 s, t2i_tiny's not after 90 s even with
# XLA_FLAGS=--xla_gpu_autotune_level=0, t2i_paper's not after 240 s (XLA:CPU: 25 s and
# 34 s for the first two). Within a 15-minute device lease, run one or two steps (ONLY).
set -u
OUT=${OUT:?set OUT to the output folder}
T2I=${T2I:-configs/t2i_paper.py}
UP=${UP:-configs/up_paper.py}
LIMIT=${LIMIT:-300}
ONLY=${ONLY:-t2i,sample,tiny,up}
STEPS=${STEPS:-32}
mkdir -p "$OUT"
json="$OUT/bench_gpu.jsonl"
export PYTHONUNBUFFERED=1
# batch 32 of t2i_paper needs ~100 GiB by the planner: more than jax preallocates by default
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}

step() {  # step NAME COMMAND...: run with a time limit, log its output, report its status
  local name=$1; shift
  [[ ",$ONLY," == *",$name,"* ]] || return 0
  echo "=== $name ($(date -u +%T))"
  timeout "$LIMIT" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 3 "$OUT/$name.log"
  echo "=== $name rc=$rc ($(date -u +%T))"
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null
LIMIT=$((LIMIT * 8 / 5)) step t2i python3 bench/train_step.py --config="$T2I" --mesh=1,1,1 \
  --batch_size="${T2I_BATCH:-32}" --steps="$STEPS" --warmup=3 --json_out="$json"
step sample python3 bench/sample.py --config="$T2I" --up_config="$UP" \
  --batch=64 --pipeline_batch="${PIPE_BATCH:-16}" --tiled_out="${TILED_OUT:-4096}" \
  --tile="${TILE:-64}" --tile_batch=16 --repeats=10 --json_out="$json"
LIMIT=$((LIMIT / 2)) step tiny python3 bench/train_step.py --config=configs/t2i_tiny.py --mesh=1,1,1 \
  --batch_size=16 --steps=20 --json_out="$json"
LIMIT=$((LIMIT * 2 / 3)) step up python3 bench/train_step.py --config="$UP" --mesh=1,1,1 \
  --batch_size="${UP_BATCH:-8}" --steps=16 --warmup=3 --json_out="$json"
