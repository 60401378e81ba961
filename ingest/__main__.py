"""``python -m ingest``: see :mod:`ingest.cli`."""

from ingest.cli import main

raise SystemExit(main())
