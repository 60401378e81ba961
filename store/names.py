"""The names the schema takes for categories and defect types (the CHECKs of migrations 0001, 0008 and 0011): one
rule, checked before a name reaches SQL by the API, the job's preflight and the revisions alike, so that a fit of
many minutes never ends in a refused INSERT."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

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


def near(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'bottle'?)`` where some of the ``known`` names are near ``name`` (the same letters in another
    case, a typo: difflib's ratio of at least 0.75, case aside), else ``""``: an answer for "Bottle" that names the
    category meant saves a look at the list. At most three, the nearest first."""
    by_case = {}
    for candidate in known:
        by_case.setdefault(candidate.lower(), []).append(candidate)
    close = difflib.get_close_matches(name.lower(), by_case, n=3, cutoff=0.75)
    names = [candidate for lowered in close for candidate in by_case[lowered] if candidate != name][:3]
    return f" (did you mean {' or '.join(repr(candidate) for candidate in names)}?)" if names else ""
