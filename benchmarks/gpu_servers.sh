#!/usr/bin/env bash
# ../shared/gpu's bench.sh (prepared in .gpu by `bash ../shared/gpu/prepare.sh .gpu`) with one server per setting
# instead of its fixed two: one install and one fit, then each server of SERVERS measured over HTTP with
# benchmarks/query_latency.py, so that the search backends, batching and worker counts meet on one machine in one
# run (a lent GPU's minutes are few), each at 1 and BATCHES images a request (default "1 8": POST /query, then
# POST /query/batch), then checks the served answers against the exact model's (evaluate-served).
# Anomalib is skipped (bench.sh measures it on its own).
#
#   bash benchmarks/gpu_servers.sh                     on the GPU machine, from the repository root, .gpu carried
#   LOCAL=1 OUT=/tmp/gs bash benchmarks/gpu_servers.sh  the same logic on this CPU (bench.sh's LOCAL mode)
#
# SERVERS: space-separated TAG:WORKERS:CATEGORIES:ENV, categories joined by '+', ENV as NAME=VALUE joined by ','.
# What comes back: $OUT/summary.txt, results.json and bench.log (bench.sh's), the servers' log.
#
# The bundle lacks two wheels the project needs (bench.sh skips imagecodecs): put them in $G/extra, here, with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/extra imagecodecs httptools
# (the bundle must stay under the transfer limit: ../shared/gpu/tools/slim_wheel.py can drop imagecodecs' AVIF,
# JPEG XL, SZ3, Ultra HDR, BCn and FITS codecs, which nothing here reads), and they are installed first.
set -u -o pipefail
G=${G:-.gpu}
[ -f "$G/bench.sh" ] || { echo "no $G/bench.sh: run bash ../shared/gpu/prepare.sh $G first" >&2; exit 2; }
if [ "${LOCAL:-0}" != 1 ] && compgen -G "$G/extra/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "${SITE:-/tmp/site}" \
    "$G"/extra/*.whl || exit 2
fi
if [ "${LOCAL:-0}" = 1 ]; then
  default="exact1:1:bottle:INSPECT_SEARCH_BACKEND=exact db1:1:bottle:INSPECT_SEARCH_BACKEND=database"
else
  default="gpu1:1:bottle+bottle_wrn: db1:1:bottle+bottle_wrn:INSPECT_SEARCH_BACKEND=database
gpu4:4:bottle:INSPECT_TORCH_THREADS=4 gpu4nobatch:4:bottle:INSPECT_TORCH_THREADS=4,INSPECT_BATCH_WAIT_MS=0
db4:4:bottle:INSPECT_SEARCH_BACKEND=database,INSPECT_TORCH_THREADS=4,INSPECT_SEARCH_CONNECTIONS=4,INSPECT_POOL_SIZE=6
cpu1:1:bottle+bottle_wrn:INSPECT_DEVICE=cpu,INSPECT_SEARCH_BACKEND=exact"
fi
export SERVERS=${SERVERS:-$default}
# bench.sh's one server and its loop over SEARCH_CONNS become the loop over SERVERS (bench.sh itself is read-only)
script=$G/bench_servers.sh
python3 - "$G/bench.sh" "$script" <<'EOF'
import sys

text = open(sys.argv[1]).read()
old = """  for sc in ${SEARCH_CONNS:-2}; do
    serve "w${WORKERS}s$sc" "$WORKERS" INSPECT_TORCH_THREADS=$threads INSPECT_SEARCH_CONNECTIONS=$sc INSPECT_POOL_SIZE=$((sc + 2))
  done"""
new = """  ALL=("${FITTED[@]}")
  for spec in $SERVERS; do
    IFS=: read -r tag workers cats envs <<< "$spec"
    FITTED=()
    for c in ${cats//+/ }; do [[ " ${ALL[*]} " == *" $c "* ]] && FITTED+=("$c"); done
    # shellcheck disable=SC2086
    ((${#FITTED[@]})) && serve "$tag" "$workers" INSPECT_TORCH_THREADS=$threads ${envs//,/ }
  done
  FITTED=("${ALL[@]}")"""
# then the served answers against the exact model's, image by image (python -m ingest evaluate-served): on a GPU the
# served search is the exact backend's there, so this is what checks the GPU's answers
check = 'step exact_search 120 "$PY" "$G/exact_search.py"'
served = """step served_bottle 150 "$PY" -m ingest evaluate-served --data "$DATA" --category bottle --out "$WORK/served"
grep 'same verdict' "$LOGS/served_bottle.log" | sed 's/^/  /'
"""
# and each latency run asks POST /query/batch too, BATCHES images a request (query_latency.py --batch)
latency = '--category "$cat" --concurrency $CONC'
if old not in text or check not in text or latency not in text:
    sys.exit("bench.sh changed: its SEARCH_CONNS loop, exact_search step or latency step is not where this script "
             "expects it")
text = text.replace(latency, latency + ' --batch ${BATCHES:-1 8}')
open(sys.argv[2], "w").write(text.replace(old, new).replace(check, served + check))
EOF
SKIP_W1=1 SKIP_ANOMALIB=1 CATS=${CATS:-$( [ "${LOCAL:-0}" = 1 ] && echo bottle || echo "bottle bottle_wrn")} \
  BENCH_BUDGET_S=${BENCH_BUDGET_S:-540} bash "$script"
