#!/usr/bin/env bash
# The whole benchmark suite of issues 7, 12 and 16, in services mode (PostgreSQL + Redis), in one command:
#
#   DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
#   REDIS_URL=redis://127.0.0.1:6379/13 bench/run_all.sh
#
# Appends every result table to docs/benchmarks.md under one dated heading, writes
# the raw results as JSON under bench/results/ (the previous run's are removed
# first) and the plots as docs/bench-*.png. About 30 minutes on 2 cores; run it
# on a quiet machine. `bench/run_all.sh --quick` runs every step with tiny
# settings into a temporary directory (report, JSON and PNGs), leaving the
# repository untouched: a check that the suite works, not a measurement.
# Environment: PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
QUICK=0
case "${1:-}" in
  --quick) QUICK=1 ;;
  "") ;;
  *) echo "usage: bench/run_all.sh [--quick]" >&2; exit 2 ;;
esac

fail() { echo "bench/run_all.sh: $*" >&2; exit 2; }
[ -n "${DATABASE_URL:-}" ] && [ -n "${REDIS_URL:-}" ] || fail "the suite runs in services mode:
  set DATABASE_URL (a PostgreSQL role that may create databases; each benchmark creates
  and drops its own) and REDIS_URL (benchmarks use their own key prefix), e.g.
  DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/13 $0"
[ -x "$PY" ] || command -v "$PY" >/dev/null || fail "no Python at $PY (make install, or set PYTHON)"
command -v wrk >/dev/null || fail "bench/reads.py needs wrk: apt-get install wrk"
"$PY" -c "import matplotlib" 2>/dev/null || fail "the plots need matplotlib: $PY -m pip install -e '.[bench]'"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # 5,000 clients and the server's 5,000 sockets
FDS=$(ulimit -n)

if [ "$QUICK" = 1 ]; then
  TMP=$(mktemp -d /tmp/teamhub-bench-quick-XXXXXX)
  RESULTS=$TMP/results OUT=$TMP
  export BENCH_REPORT=$TMP/benchmarks.md
  HIT=(--orgs 10 100 --ops 500)
  READS=(--seconds 1 --rounds 2)
  READS_SCALE=(--seconds 1 --rounds 1 --servers uvicorn daphne --workers 2 --lanes on)
  AUDIENCE=(--audiences 1 20 --writes 5 --rounds 1)
  RT_CLIENTS=(--clients 1 20 --writes 3)
  RT_SCALE=(--clients 20 --writes 3 --servers uvicorn daphne --workers 2)
  SUS_HTTP=(--clients 10 --rate 10 40 --duration 1)
  SUS_LOG=(--clients 20 --rate 20 80 --duration 1)
  WRITES=(--n 20 --rounds 2)
  OUTSIDE=(--updates 10 --runs 1)
  DRAIN=(--rows 500 --rounds 1 --idle 1)
  ESTIMATE="about 5 minutes"
else
  RESULTS=bench/results OUT=docs
  rm -f "$RESULTS"/*.json
  HIT=(--orgs 10 100 1000 --ops 20000)
  READS=(--seconds 4 --rounds 5)
  READS_SCALE=(--seconds 3 --rounds 3 --servers uvicorn daphne --workers 2 4 --lanes on)
  AUDIENCE=(--audiences 1 500 --writes 100 --rounds 3)
  CLIENTS=(1 100 1000 5000)
  if [ "$FDS" -lt 5200 ]; then
    echo "open files limited to $FDS: real time at 1, 100 and 1000 clients only"
    CLIENTS=(1 100 1000)
  fi
  RT_CLIENTS=(--clients "${CLIENTS[@]}" --writes 30)
  RT_SCALE=(--clients 1000 --writes 30 --servers uvicorn daphne --workers 2 4)
  SUS_HTTP=(--clients 100 --rate 10 20 50 100 200 --duration 5)
  SUS_LOG=(--clients 1000 --rate 5 10 20 50 100 200 --duration 5)
  WRITES=(--n 200 --rounds 5)
  OUTSIDE=(--updates 200 --runs 1)
  DRAIN=(--rows 5000 --rounds 2 --idle 5)
  ESTIMATE="about 30 minutes (2 cores)"
fi
export BENCH_REPORT_LEVEL=3  # every section under the run's dated heading
mkdir -p "$RESULTS"

STARTED=$(date +%s)
STEP=0
STEPS=13
step() {
  STEP=$((STEP + 1))
  echo
  echo "== [$STEP/$STEPS] $1 ($(( $(date +%s) - STARTED )) s elapsed)"
  shift
  echo "+ $*"
  "$@"
}
trap 'echo "bench/run_all.sh: step $STEP failed after $(( $(date +%s) - STARTED )) s" >&2' ERR

echo "TeamHub benchmark suite: $ESTIMATE; mode PostgreSQL + Redis; open files $FDS"
"$PY" bench/common.py start-run "bench/run_all.sh${1:+ $1}" \
  "Every section below comes from this one run of \`bench/run_all.sh\`, one after another on the same machine, with the raw results in \`$RESULTS/\` and the plots at the end. The benchmarks start their own servers and clients on the machine they measure, so on a small machine the load generator competes with the server for the cores."

step "hit rate: ${HIT[*]}" \
  "$PY" bench/hit_rate.py "${HIT[@]}" --report --json "$RESULTS/hit_rate.json"
step "HTTP reads, fast lane on and off, against the floors: ${READS[*]}" \
  "$PY" bench/reads.py "${READS[@]}" --report --json "$RESULTS/reads.json"
step "HTTP reads against workers and servers: ${READS_SCALE[*]}" \
  "$PY" bench/reads.py "${READS_SCALE[@]}" --report --json "$RESULTS/reads-scaling.json"
step "real time, latency against clients: ${RT_CLIENTS[*]}" \
  "$PY" bench/realtime.py "${RT_CLIENTS[@]}" --report --json "$RESULTS/realtime-clients.json"
step "real time, latency against workers and servers: ${RT_SCALE[*]}" \
  "$PY" bench/realtime.py "${RT_SCALE[@]}" --report --json "$RESULTS/realtime-scaling.json"
step "real time, sustained rate of HTTP writes: ${SUS_HTTP[*]}" \
  "$PY" bench/realtime.py "${SUS_HTTP[@]}" --source http --report \
  --json "$RESULTS/realtime-sustained-http.json"
step "real time, sustained rate of published events: ${SUS_LOG[*]}" \
  "$PY" bench/realtime.py "${SUS_LOG[@]}" --source log --report \
  --json "$RESULTS/realtime-sustained-log.json"
step "write cost: ${WRITES[*]}" \
  "$PY" bench/writes.py "${WRITES[@]}" --report --json "$RESULTS/writes.json"
step "a write's response time against its audience: ${AUDIENCE[*]}" \
  "$PY" bench/write_audience.py "${AUDIENCE[@]}" --report --json "$RESULTS/write_audience.json"
step "outside writes to an SSE client: ${OUTSIDE[*]}" \
  "$PY" bench/outside.py "${OUTSIDE[@]}" --report --json "$RESULTS/outside.json"
step "drainer throughput and idle cost: ${DRAIN[*]}" \
  "$PY" bench/drain_rate.py "${DRAIN[@]}" --report --json "$RESULTS/drain_rate.json"
step "plots" \
  "$PY" bench/plot.py --results "$RESULTS" --out "$OUT" --report
ELAPSED=$(( $(date +%s) - STARTED ))
step "total time" \
  "$PY" bench/common.py note "The whole run took $((ELAPSED / 60)) min $((ELAPSED % 60)) s."

echo
echo "done in $((ELAPSED / 60)) min $((ELAPSED % 60)) s: report ${BENCH_REPORT:-docs/benchmarks.md}, JSON $RESULTS/, plots $OUT/bench-*.png"
if [ "$QUICK" = 0 ]; then
  echo "commit them: git add docs/benchmarks.md docs/bench-*.png bench/results/*.json"
fi
