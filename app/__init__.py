"""The FastAPI inspection service: ``uvicorn app.main:app``."""

# uvicorn's flags for serving it (the Dockerfile, run.sh, the tests and benchmarks): an idle keep-alive connection
# is kept 75 s, longer than clients and proxies keep theirs (httpx 5 s, nginx and AWS's load balancers 60 s), so the
# client closes it first. At uvicorn's default of 5 s, a client reusing a connection idle for just under 5 s could
# send its request as the server closed it ("Server disconnected without sending a response").
KEEP_ALIVE = ("--timeout-keep-alive", "75")
