"""Progress of the long stages of a fit: a bar on the terminal (counts and rate) and, for whoever runs the fit, a
callback with the same counts (a worker shows them on the job's page and stops there when the job is cancelled)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

# (stage, done, total, unit): called as a stage starts and after each step; it may raise to stop the fit
Report = Callable[[str, int, int, str], None]


@contextmanager
def stage(description: str, total: int, unit: str, report: Report | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar for one stage; yields ``update(steps)``."""
    done = 0
    with tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True) as bar:
        if report is not None:
            report(description, 0, total, unit)

        def update(steps: int = 1) -> None:
            nonlocal done
            done += steps
            bar.update(steps)
            if report is not None:
                report(description, done, total, unit)

        yield update
