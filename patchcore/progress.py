"""Progress of the long stages of a fit: a bar on the terminal (counts and rate) and, for whoever runs the fit, a
callback with the same counts (a worker shows them on the job's page and stops there when the job is cancelled).

Off a terminal (``docker compose logs``, a worker's log file, CI) a bar redrawn with carriage returns every 0.1 s
would make one line of hundreds of redraws (``ingest evaluate`` of bottle on 2 idle cores: 268 in 79 s); there each
bar writes a whole line every ``LOG_INTERVAL`` seconds and its last state when it ends (the same run: 15 lines).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL = 10.0  # seconds between two progress lines off a terminal


class _Lines:
    """A stream that writes each redraw of a bar as a line of its own."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable: Iterable | None = None, **options: Any) -> tqdm:
    """A tqdm bar on standard error: redrawn in place on a terminal, a line every ``LOG_INTERVAL`` s elsewhere."""
    stream = sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        options = {"mininterval": LOG_INTERVAL, "maxinterval": LOG_INTERVAL, **options, "file": _Lines(stream)}
    return tqdm(iterable, dynamic_ncols=True, **options)


# (stage, done, total, unit): called as a stage starts and after each step; it may raise to stop the fit
Report = Callable[[str, int, int, str], None]


@contextmanager
def stage(description: str, total: int, unit: str, report: Report | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar for one stage; yields ``update(steps)``."""
    done = 0
    with bar(total=total, desc=description, unit=unit) as shown:
        if report is not None:
            report(description, 0, total, unit)

        def update(steps: int = 1) -> None:
            nonlocal done
            done += steps
            shown.update(steps)
            if report is not None:
                report(description, done, total, unit)

        yield update
