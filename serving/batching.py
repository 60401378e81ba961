"""Micro-batches: views that arrive within a few milliseconds of each other go through the network together.

On an accelerator one image leaves the network mostly idle (issue 22's H200: 3.8 ms to embed one bottle image where
anomalib's model alone reaches 1,554 images/s at batch 32), so concurrent requests are embedded as one batch, each
answer its own. The first request of a batch leads: it waits up to ``wait_ms`` for others (or until ``max_batch``
are in), runs the batch, and hands every request its own features; the others only wait. Views are batched only with
views of the same shape through the same network and tiling, which is all a batch needs: the features of a view do
not depend on its category beyond that. No thread of its own, so nothing to start or stop.

Off unless asked (``INSPECT_BATCH_WAIT_MS`` above 0), on a GPU too: on a CPU a batch only makes each request wait for
the others (the cores are already busy with one image), and on an H200 with 4 API workers it gained no throughput
(bottle, 16 clients: 279 requests/s batched within 2 ms, 274 not) while the waits lengthened the tail (4 clients: p95
42 ms against 19): the network is a few milliseconds of each answer there, the rest is each request's own
(``benchmarks/gpu_servers.sh``; docs/search.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from patchcore.model import Embedder


@dataclass
class _Batch:
    views: list[torch.Tensor] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    features: torch.Tensor | None = None
    error: BaseException | None = None


class EmbedBatcher:
    """Embeds concurrent views in batches (see the module's docstring); ``batches`` and ``views`` count what ran."""

    def __init__(self, wait_ms: float, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"a batch holds at least one view, not {max_batch}")
        self.wait = wait_ms / 1000
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._open: dict[tuple, _Batch] = {}
        self.batches = 0
        self.views = 0

    def features(self, embedder: Embedder, view: torch.Tensor) -> torch.Tensor:
        """(H, W, D) features of one (3, h, w) view, embedded with whatever arrives with it."""
        config = embedder.config
        key = (id(embedder.extractor), config.tile, config.tile_overlap, tuple(view.shape))
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if leader:
                batch = self._open[key] = _Batch()
            index = len(batch.views)
            batch.views.append(view)
            if len(batch.views) >= self.max_batch:
                del self._open[key]  # the next view starts a new batch
                batch.full.set()
        if leader:
            batch.full.wait(self.wait)
            with self._lock:
                if self._open.get(key) is batch:
                    del self._open[key]
                views = list(batch.views)
                self.batches += 1
                self.views += len(views)
            try:
                batch.features = embedder.features(torch.stack(views))
            except BaseException as exc:  # every request of the batch hears it, not only the leader
                batch.error = exc
            finally:
                batch.done.set()
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.features[index]


_SHARED: dict[tuple[float, int], EmbedBatcher] = {}
_SHARED_LOCK = threading.Lock()


def shared_batcher(wait_ms: float, max_batch: int) -> EmbedBatcher:
    """One batcher per process (per setting), so that requests of every category that share a network batch
    together."""
    with _SHARED_LOCK:
        return _SHARED.setdefault((wait_ms, max_batch), EmbedBatcher(wait_ms, max_batch))


def totals() -> tuple[int, int]:
    """(batches run, requests they held) by every batcher of this process, for the metrics."""
    with _SHARED_LOCK:
        batchers = list(_SHARED.values())
    return sum(b.batches for b in batchers), sum(b.views for b in batchers)
