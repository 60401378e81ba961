"""The inspection log as CSV, for a spreadsheet: one line per record, the columns a quality engineer filters on; or
one line per part, its verdicts over its views.

Text a client chose (a part's name, a file name, a defect type, a reviewer) is written so that a spreadsheet shows
it as text: a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``
(OWASP's advice on formula injection), since such a cell would otherwise run as a formula when the file is opened.
Nothing else is changed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

COLUMNS = (
    "id", "at", "category", "part", "file_name", "model_id", "is_anomalous", "score", "p_value", "threshold",
    "defect_type", "regions", "notes",
    "review_label", "reviewed_by", "reviewed_at", "review_model_id", "request_id", "api_key", "latency_ms",
    "sha256", "bytes", "format", "width", "height", "image_kind",
)  # fmt: skip
_CHOSEN = ("category", "part", "file_name", "defect_type", "review_label", "reviewed_by", "request_id", "api_key")
PART_COLUMNS = (
    "part", "is_anomalous", "views", "anomalous_views", "reviewed_views", "reviewed_defective_views",
    "is_defective_as_reviewed", "defective_views_as_reviewed", "categories", "first_at", "last_at", "last_id",
    "p_value",
)  # fmt: skip
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value: str | None) -> str | None:
    return "'" + value if value and value.startswith(_FORMULA) else value


def header(columns: tuple[str, ...] = COLUMNS) -> str:
    return _lines([dict(zip(columns, columns, strict=True))], columns)


def lines(records: Iterable[dict]) -> str:
    """The CSV lines of log records as :func:`store.inspections.listed` gives them."""
    rows = []
    for record in records:
        row = {column: record.get(column) for column in COLUMNS}
        row["regions"] = None if record["defect_regions"] is None else len(record["defect_regions"])
        row["notes"] = None if record["notes"] is None else "; ".join(record["notes"])
        row.update({column: _as_text(record[column]) for column in _CHOSEN})
        rows.append(row)
    return _lines(rows, COLUMNS)


def part_lines(parts: Iterable[dict]) -> str:
    """The CSV lines of parts as :func:`store.inspections.parts_listed` gives them, their categories space-separated."""
    rows = [
        {**{column: part[column] for column in PART_COLUMNS}, "part": _as_text(part["part"]),
         "categories": _as_text(" ".join(part["categories"]))}
        for part in parts
    ]  # fmt: skip
    return _lines(rows, PART_COLUMNS)


def _lines(rows: list[dict], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    csv.DictWriter(buffer, columns, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()
