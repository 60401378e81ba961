#!/bin/sh
# Run once by the postgres image when `db` creates its data folder: lets standbys on the compose network stream
# the WAL (initdb's own rules allow replication from localhost only). An existing data folder needs the same line
# added to its pg_hba.conf by hand.
set -eu
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
