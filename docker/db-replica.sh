#!/bin/sh
# A streaming standby of `db`: on its first start a base backup of db with its WAL (pg_basebackup -R also writes
# primary_conninfo and standby.signal), then PostgreSQL as a hot standby that replays db's WAL, HNSW indexes
# included. Each scaled container keeps its own (anonymous) volume.
set -eu
export PGPASSWORD="$POSTGRES_PASSWORD"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h db -U "$POSTGRES_USER" -d "$POSTGRES_DB"; do sleep 1; done
  pg_basebackup -h db -U "$POSTGRES_USER" -D "$PGDATA" -X stream -R -c fast
  chmod 700 "$PGDATA"
fi
exec postgres -c shared_buffers="$SHARED_BUFFERS" -c hot_standby=on
