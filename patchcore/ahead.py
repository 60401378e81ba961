"""Files read (decoded, embedded) on threads ahead of the loop that uses them, in their order: decoding is most of
a CPU's work per image in a fit and its evaluation, and Pillow, imagecodecs and torch let go of the GIL while they
work, so a thread reading the next image overlaps the network's work on this one."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def read_ahead(read: Callable[[Item], Result], items: Iterable[Item], window: int) -> Iterator[Result]:
    """``read(item)`` of each item, in order, by ``min(4, cores)`` threads at most ``window`` items ahead of the
    caller, so memory holds that many results whatever the number of items; the first failure is raised as a serial
    loop would raise it, and what was queued behind it is cancelled."""
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="read-ahead")
    pending: deque[Future[Result]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(read, item))
            if len(pending) > window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
