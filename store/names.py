"""The names the schema takes for categories and defect types (the CHECKs of migrations 0001, 0008 and 0011): one
rule, checked before a name reaches SQL by the API, the job's preflight and the revisions alike, so that a fit of
many minutes never ends in a refused INSERT."""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_MAX = 100
_NAME = re.compile(NAME_PATTERN)


def name_problem(name: str, what: str) -> str | None:
    """Why ``name`` cannot name a ``what`` in the store, or ``None``. ``fullmatch``: Python's ``$`` would also
    match before a final newline, which PostgreSQL's does not."""
    if name and len(name) <= NAME_MAX and _NAME.fullmatch(name):
        return None
    return (
        f"{what} {name!r} is not a name the store takes: letters, digits, '_', '.', '-', starting with a letter or "
        f"digit, at most {NAME_MAX} characters"
    )
