"""The inspection log as CSV, for a spreadsheet: one line per record, the columns a quality engineer filters on.

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
    "id", "at", "category", "part", "file_name", "model_id", "is_anomalous", "score", "threshold", "defect_type",
    "regions", "review_label", "reviewed_by", "reviewed_at", "review_model_id", "request_id", "api_key", "latency_ms",
    "sha256", "bytes", "format", "width", "height", "image_kind",
)  # fmt: skip
_CHOSEN = ("category", "part", "file_name", "defect_type", "review_label", "reviewed_by", "request_id", "api_key")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value: str | None) -> str | None:
    return "'" + value if value and value.startswith(_FORMULA) else value


def header() -> str:
    return _lines([dict(zip(COLUMNS, COLUMNS, strict=True))])


def lines(records: Iterable[dict]) -> str:
    """The CSV lines of log records as :func:`store.inspections.listed` gives them."""
    rows = []
    for record in records:
        row = {column: record.get(column) for column in COLUMNS}
        row["regions"] = None if record["defect_regions"] is None else len(record["defect_regions"])
        row.update({column: _as_text(record[column]) for column in _CHOSEN})
        rows.append(row)
    return _lines(rows)


def _lines(rows: list[dict]) -> str:
    buffer = io.StringIO()
    csv.DictWriter(buffer, COLUMNS, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()
