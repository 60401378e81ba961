"""What a server says about streaming replication: the primary's WAL position, a standby's replayed position.

Positions are compared as integers (a ``pg_lsn`` is a 64-bit byte offset into the WAL, written ``hi/lo`` in hex).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


def lsn(text: str) -> int:
    """A ``pg_lsn`` as its byte offset."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def primary_position(connection: psycopg.Connection) -> int:
    """How far the primary has written its WAL."""
    return lsn(connection.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


@dataclass(frozen=True)
class StandbyState:
    """A server asked as a standby: whether it is one (a promoted or wrongly named server is not), how far it has
    replayed the primary's WAL, and whether replay is paused."""

    in_recovery: bool
    replayed: int | None
    paused: bool


def standby_state(connection: psycopg.Connection) -> StandbyState:
    in_recovery, replayed = connection.execute("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text").fetchone()
    paused = bool(in_recovery) and connection.execute("SELECT pg_is_wal_replay_paused()").fetchone()[0]
    return StandbyState(bool(in_recovery), lsn(replayed) if replayed else None, bool(paused))
