#!/usr/bin/env bash
# rjobs and every peerbench peer in ONE run against the SAME throw-away redis-server, then a
# summary with ratios to the fastest peer.
#
# usage: benchmarks/peerbench.sh [REPS]        (default 3; interleaved: rep 1 of everything, then rep 2...)
# env:   ONLY=enqueue,process,latency          sections (default: all three)
#        PEERS="rq arq saq ..."               peers to include (default: all nine)
#        WAIT_LOAD=60    before each benchmark wait up to this many seconds until the machine is quiet:
#                        under BUSY_LIMIT % (default 25) of both cores busy over 1 s (other people's test
#                        suites; ours are idle between benchmarks). Busy % and load are recorded either way.
#        PEERBENCH_ROOT (default /work/shared/peerbench), PEERBENCH_VENV (default ~/.cache/peerbench-venv)
#
# Needs the peer venv (/work/shared/peerbench/setup.sh) with rjobs installed in it:
#   ~/.cache/peerbench-venv/bin/pip install -e /work/main
# The peers run unchanged (benchmarks/peers/run_peer.py only moves their worker logs out of the
# read-only shared checkout); rjobs runs through benchmarks/peers/rjobs_peer.py (same CLI, same
# bookkeeping from the shared peers/_common.py). The server is Debian's redis-server on a free
# loopback port, --save '' --appendonly no, started here and stopped on exit (by its pid).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
PB=${PEERBENCH_ROOT:-/work/shared/peerbench}
VENV=${PEERBENCH_VENV:-$HOME/.cache/peerbench-venv}
REPS=${1:-3}
ONLY=${ONLY:-enqueue,process,latency}
ALL="rq arq saq streaq dramatiq huey taskiq_redis bullmq celery"
PEERS=${PEERS:-$ALL}
ASYNC_ALL="arq saq streaq taskiq_redis bullmq"

# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -c "import rjobs" 2>/dev/null || { echo "rjobs is not installed in $VENV: pip install -e $(dirname "$HERE")" >&2; exit 2; }
export PYTHONDONTWRITEBYTECODE=1 PEERBENCH_ROOT=$PB RJOBS_PEERBENCH_RESULTS=$HERE/results
RES=$HERE/results
mkdir -p "$RES/logs" "$RES/run"
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$RES/raw-peerbench-$STAMP.jsonl
ERR=$RES/raw-peerbench-$STAMP.errors.log

PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
PIDFILE=$RES/run/redis-$PORT.pid
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$PIDFILE" --logfile "$RES/run/redis-$PORT.log" --dir "$RES/run"
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
stop_server() { [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" && rm -f "$PIDFILE"; }
# (the rjobs snapshot stays in results/run/, git-ignored, so a run can be re-checked)
trap stop_server EXIT
# Freeze rjobs for the whole sweep: copy rjobs/ now and make the adapter and its workers import the
# copy (PYTHONPATH beats the editable install), so commits landing meanwhile cannot mix versions.
REPO=$(dirname "$HERE")
if [ -z "${RJOBS_SRC:-}" ]; then
  RJOBS_SRC=$RES/run/rjobs-src-$STAMP
  mkdir -p "$RJOBS_SRC" && cp -r "$REPO/rjobs" "$RJOBS_SRC/" && find "$RJOBS_SRC" -name __pycache__ -prune -exec rm -rf {} +
  DESC="$(git -C "$REPO" rev-parse --short HEAD)"
  [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- rjobs)" ] && DESC="$DESC + modified rjobs/"
  [ -n "$(git -C "$REPO" status --porcelain -- rjobs | grep '^??')" ] && DESC="$DESC + untracked rjobs/ files"
  echo "$DESC (snapshot taken $(date +%T))" > "$RJOBS_SRC/SOURCE"
fi
export RJOBS_SRC
echo "{\"mode\":\"source\",\"rjobs\":\"$(cat "$RJOBS_SRC/SOURCE" 2>/dev/null || echo "$RJOBS_SRC")\"}" >> "$OUT"
URL=redis://127.0.0.1:$PORT/0
export PEERBENCH_REDIS_URL=$URL  # several peers build their client at import time, before --redis-url is parsed
echo "server $(redis-server --version | cut -d' ' -f3) on $URL; writing $OUT" >&2

WAIT_LOAD=${WAIT_LOAD:-60}
BUSY_LIMIT=${BUSY_LIMIT:-25}
busy_pct() {  # % of all cores busy over the last second (between benchmarks: other people's work)
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat); sleep 1
  b=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
  echo "$a $b" | awk '{d=$4-$2; printf "%d", (d>0 ? 100*($3-$1)/d : 0)}'
}
wait_load() {  # other test suites share the 2 cores: prefer quiet moments, but never wait forever
  local waited=0
  BUSY=$(busy_pct)
  while [ "$waited" -lt "$WAIT_LOAD" ] && [ "$BUSY" -ge "$BUSY_LIMIT" ]; do
    sleep 4; waited=$((waited + 5)); BUSY=$(busy_pct)
  done
}
want() { [[ ",$ONLY," == *",$1,"* ]]; }
has() { [[ " $PEERS " == *" $1 "* ]]; }
note_load() { echo "{\"mode\":\"load\",\"at\":\"$(date +%T)\",\"what\":\"$*\",\"busy_pct\":${BUSY:-null},\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >> "$OUT"; }
run_peer() {  # peerbench peer, unchanged
  local p=$1; shift
  has "$p" || return 0
  wait_load
  echo "[$(date +%T)] busy ${BUSY}% load $(cut -d' ' -f1 /proc/loadavg) $p $*" >&2
  note_load "$p $*"
  timeout 240 python "$HERE/peers/run_peer.py" "$PB/peers/$p.py" "$@" --redis-url "$URL" >> "$OUT" 2>> "$ERR" \
    || echo "{\"mode\":\"failed\",\"cmd\":\"$p $*\"}" | tee -a "$OUT" >&2
}
run_rjobs() {
  wait_load
  echo "[$(date +%T)] busy ${BUSY}% load $(cut -d' ' -f1 /proc/loadavg) rjobs $*" >&2
  note_load "rjobs $*"
  timeout 240 python "$HERE/peers/rjobs_peer.py" "$@" --redis-url "$URL" >> "$OUT" 2>> "$ERR" \
    || echo "{\"mode\":\"failed\",\"cmd\":\"rjobs $*\"}" | tee -a "$OUT" >&2
}

for rep in $(seq "$REPS"); do
  echo "== rep $rep/$REPS" >&2
  if want enqueue; then
    run_rjobs enqueue --n 10000
    run_rjobs enqueue --n 10000 --variant noevents
    for p in $ALL; do run_peer "$p" enqueue --n 10000; done
  fi
  if want process; then
    for c in 10 100; do
      run_rjobs process -c $c --n 10000
      run_rjobs process -c $c --n 10000 --variant noevents
    done
    run_peer rq process --variant simple --n 10000
    run_peer rq process --variant fork --n 1000       # ~40 jobs/s: 10k would take ~4 min
    for c in 10 100; do
      for p in $ASYNC_ALL; do run_peer "$p" process -c $c --n 10000; done
    done
    run_peer dramatiq process -c 8 --n 10000          # dramatiq's default thread count
    run_peer dramatiq process -c 100 --n 10000
    run_peer huey process -c 10 --n 10000
    run_peer huey process -c 100 --n 10000
    run_peer celery process --variant threads -c 10 --n 10000
    run_peer celery process --variant threads -c 100 --n 10000
    run_peer celery process --variant solo --n 10000
  fi
  if want latency; then
    run_rjobs latency -c 10
    run_rjobs latency -c 10 --variant noevents
    run_peer rq latency --variant simple
    run_peer rq latency --variant fork
    for p in $ASYNC_ALL; do run_peer "$p" latency -c 10; done
    run_peer dramatiq latency -c 8
    run_peer huey latency -c 10
    run_peer celery latency --variant threads -c 10
    run_peer celery latency --variant solo
  fi
done

python "$HERE/peers/summarize.py" "$OUT" > "$RES/peerbench-summary.md"
cp "$OUT" "$RES/peerbench-latest.jsonl"
echo "summary: $RES/peerbench-summary.md (raw: $OUT)" >&2
cat "$RES/peerbench-summary.md"
