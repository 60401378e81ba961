# The API and the ingestion job share this image: `uvicorn app.main:app` by default, `python -m ingest ...` as a one-off.
# torch comes from TORCH_INDEX: CPU-only wheels by default (a CPU service needs none of the CUDA build's gigabytes);
# the compose service api-gpu builds it with a CUDA index instead.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_HOME=/models/torch

WORKDIR /srv
COPY pyproject.toml README.md constraints.txt ./
COPY patchcore ./patchcore
COPY ingest ./ingest
COPY store ./store
COPY serving ./serving
COPY app ./app
COPY revisions ./revisions
COPY config ./config
COPY migrations ./migrations
# everything at the versions the tests last passed with (constraints.txt): torch and torchvision from TORCH_INDEX
# (its CPU or CUDA build of those versions, whose local label, +cpu or +cu..., the pin matches), with what torch itself
# requires; then the rest within the constraints
RUN pip install --upgrade pip \
    && pip install --index-url "$TORCH_INDEX" $(grep -E '^torch(vision)?==' constraints.txt) \
    && grep -v -i -E '^((torch|torchvision|triton|filelock|fsspec|jinja2|markupsafe|networkx|sympy|mpmath)==|nvidia-|cuda-)' \
        constraints.txt > /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt . && rm /tmp/constraints.txt

RUN useradd --create-home --uid 10001 inspect && mkdir -p /models/torch /reports && chown -R inspect /models /reports
USER inspect

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-keep-alive", "75", "--no-access-log"]
