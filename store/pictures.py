"""What people look at, from the database: the stored views of good images, and each model's evaluation plots."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class StoredView:
    """One image's view as the model saw it, and the first used layer of its model (which sets the patch grid)."""

    image_id: int
    file_name: str
    media_type: str
    width: int
    height: int
    data: bytes
    first_layer: str


def image_view(connection: psycopg.Connection, image_id: int) -> StoredView | None:
    row = connection.execute(
        "SELECT v.image_id, i.file_name, v.media_type, v.width, v.height, v.data, m.layers[1] "
        "FROM image_views v JOIN images i ON i.id = v.image_id JOIN models m ON m.id = i.model_id "
        "WHERE v.image_id = %s",
        (image_id,),
    ).fetchone()
    return StoredView(*row[:5], bytes(row[5]), row[6]) if row else None


def plot_names(connection: psycopg.Connection, model_id: int) -> list[str]:
    rows = connection.execute("SELECT name FROM model_plots WHERE model_id = %s ORDER BY name", (model_id,))
    return [row[0] for row in rows.fetchall()]


def plot(connection: psycopg.Connection, model_id: int, name: str) -> tuple[str, bytes] | None:
    """(media type, bytes) of one plot of the model that owns a memory bank (plots are made by a fit)."""
    row = connection.execute(
        "SELECT media_type, data FROM model_plots WHERE model_id = %s AND name = %s", (model_id, name)
    ).fetchone()
    return (row[0], bytes(row[1])) if row else None
