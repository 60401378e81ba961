"""The stored views of good images: what people look at, read by id."""

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
