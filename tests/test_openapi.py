"""The API's contract: the OpenAPI document the application builds, path by path and method by method, against
``tests/openapi.json`` (the document as it was before the routes were split into routers by resource). A change to
the API shows here first; when it is meant, write the file again (the command is in the failure message)."""

from __future__ import annotations

import json
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("openapi.json")
WRITE = (
    'python -c "import json; from app.main import app; '
    "json.dump(app.openapi(), open('tests/openapi.json', 'w'), indent=1, sort_keys=True)\""
)


def _operations(document: dict) -> dict[tuple[str, str], dict]:
    """Every operation by (path, method), without its tags (the grouping of the docs page, not the contract)."""
    return {
        (path, method): {k: v for k, v in operation.items() if k != "tags"}
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


def test_the_routers_serve_the_same_api_as_before_the_split():
    from app.main import app

    built, kept = app.openapi(), json.loads(SNAPSHOT.read_text())
    now, before = _operations(built), _operations(kept)
    assert sorted(now) == sorted(before), f"paths or methods changed; if meant: {WRITE}"
    changed = [key for key in before if now[key] != before[key]]
    assert changed == [], f"operations changed: {changed}; if meant: {WRITE}"
    assert built["components"]["schemas"] == kept["components"]["schemas"], f"schemas changed; if meant: {WRITE}"
    assert len(before) >= 30 and ("/query", "post") in before
