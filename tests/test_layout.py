"""The data flows one way (docs/layout.md): files -> model -> store -> API. Each package may import only those below
it, so the model runs without a database and the store without HTTP; a new package must be given its place here,
or this test names it. Read from the source (every import statement, those inside functions too), not by importing
it, so that an import made only on some path is caught as well."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# each package -> the project's packages it may import
BELOW = {
    "patchcore": set(),  # pure torch
    "migrations": set(),  # the schema's history stands alone
    "config": {"patchcore"},  # settings name the model's choices (backbones, metrics)
    "store": {"patchcore", "config", "migrations"},
    "revisions": {"patchcore", "config", "store"},
    "serving": {"patchcore", "config", "store"},
    "app": {"patchcore", "config", "store", "revisions", "serving"},
    "ingest": {"patchcore", "config", "store", "revisions", "serving"},
}
ABOVE_ALL = {"benchmarks", "tests"}  # measure and check everything; nothing imports them but each other


def _packages() -> set[str]:
    """The repository's top-level folders that hold Python source."""
    return {d.name for d in ROOT.iterdir() if d.is_dir() and not d.name.startswith(".") and any(d.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The top-level names ``path`` imports, absolute imports only (a relative one stays in its package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_package_imports_only_those_below_it():
    packages = _packages()
    assert packages - BELOW.keys() - ABOVE_ALL == set(), "a package without a place in BELOW: give it one"
    upward = []
    for package, allowed in BELOW.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in sorted(_imports(path) & packages - {package} - allowed):
                upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert upward == [], upward


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    """The reader above finds what a lazy import hides (the job imports the store inside functions)."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from app.main import app\n    import store.models\n    from . import sibling\n")
    assert _imports(source) == {"app", "store"}
