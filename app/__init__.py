"""The FastAPI inspection service: ``uvicorn app.main:app``."""

from patchcore.openmp import spin_briefly

spin_briefly()  # before anything imports torch: libgomp reads its spin count once

# uvicorn's flags for serving it (the Dockerfile, run.sh, the tests and benchmarks): an idle keep-alive connection
# is kept 75 s, longer than clients and proxies keep theirs (httpx 5 s, nginx and AWS's load balancers 60 s), so the
# client closes it first. At uvicorn's default of 5 s, a client reusing a connection idle for just under 5 s could
# send its request as the server closed it ("Server disconnected without sending a response").
KEEP_ALIVE = ("--timeout-keep-alive", "75")
# uvicorn's own access log is off where the service is deployed (the Dockerfile, run.sh): every request already gets
# one JSON line on stderr with its request id, route, status, time and key (app.observability.Observe), and uvicorn's
# plain line on stdout beside it would log each request twice, once without what a log search needs.
NO_ACCESS_LOG = "--no-access-log"

# uvicorn worker processes on a CUDA device: one process is bound by its own Python work beside the GPU, four sharing
# it answered 273.7-279.1 requests a second at 16 clients against one's 122.6 on an H200, at the same 13 ms for one
# client (docs/search.md). On a CPU one process, whose torch threads already use every core.
GPU_WORKERS = 4


def default_workers() -> int:
    """How many uvicorn workers ``run.sh`` starts where ``WEB_CONCURRENCY`` is unset: :data:`GPU_WORKERS` when the
    network runs on a CUDA device (``INSPECT_DEVICE``, unset: cuda when available), else 1."""
    import torch

    from config import get_settings

    device = get_settings().device or ("cuda" if torch.cuda.is_available() else "cpu")
    return GPU_WORKERS if torch.device(device).type == "cuda" else 1
