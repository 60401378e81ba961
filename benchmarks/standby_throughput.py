"""Throughput of POST /query with 0, 1, 2 ... streaming standbys answering the searches, and where the CPU goes.

    INSPECT_DATA_DIR=/tmp/bench/pg python benchmarks/standby_throughput.py \
        --images ../shared/datasets/mvtec_ad/bottle/test --category bottle --standbys 0 1 2 --concurrency 4 8 \
        --plot docs/standby_throughput.png

Needs a category fitted in the embedded PostgreSQL of INSPECT_DATA_DIR; starts (or joins) its local standbys with
the project's own code (``python -m ingest db-replicas``), then one API process per configuration. Every process's
CPU time (the API, the primary and each standby with all their backends) is read from /proc around each run, so the
table says how many CPU milliseconds one query costs on each tier. On one machine every tier shares its cores, so
standbys cannot add throughput here; the projection divides the measured search CPU over one machine per standby.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
from query_latency import print_table
from query_latency import run as load

from app import KEEP_ALIVE
from config import Settings
from store.database import database_url
from store.replication import primary_position, standby_state
from store.standbys import standby_dir, start_standbys

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process, its threads, and its reaped children (/proc/PID/stat utime stime cutime cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS


def _tree_cpu(root: int) -> float:
    """CPU time of a PostgreSQL postmaster and every backend it runs now."""
    total = _cpu_seconds(root)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == root:
                    total += _cpu_seconds(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return total


def _postmaster(folder: Path) -> int:
    return int((folder / "postmaster.pid").read_text().splitlines()[0])


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port), *KEEP_ALIVE],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            ready = httpx.get(url + "/ready", timeout=5)
            if ready.status_code == 200 and all(s["in_rotation"] for s in ready.json()["standbys"]):
                return server, url
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the API did not become ready")
        time.sleep(0.5)


def _answered(url: str) -> list[int]:
    return [s["answered"] for s in httpx.get(url + "/ready", timeout=10).json()["standbys"]]


def measure(settings: Settings, urls: list[str], count: int, choice: str, args: argparse.Namespace) -> list[dict]:
    primary_dir = settings.data_dir.expanduser().resolve()
    env = {"DATABASE_REPLICA_URLS": ",".join(urls[:count]), "INSPECT_LOG_IMAGES": "none",
           "INSPECT_REPLICA_CHOICE": choice, "INSPECT_SEARCH_BACKEND": "database"}  # fmt: skip  # the HNSW searches
    server, url = _serve(env)
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    tiers = {"primary": _postmaster(primary_dir)} | {
        f"standby-{i}": _postmaster(standby_dir(primary_dir, i)) for i in range(1, count + 1)
    }
    rows = []
    try:
        for clients in args.concurrency:
            load(url, images[:clients], args.category, clients, False)  # every pool connection warm
            answered = _answered(url)
            before = {"api": _cpu_seconds(server.pid)} | {name: _tree_cpu(pid) for name, pid in tiers.items()}
            result = load(url, images, args.category, clients, False)
            after = {"api": _cpu_seconds(server.pid)} | {name: _tree_cpu(pid) for name, pid in tiers.items()}
            per_query = {k: (after[k] - before[k]) * 1000 / result["requests"] for k in before}
            standbys_ms = sum(v for k, v in per_query.items() if k.startswith("standby"))
            spread = [b - a for a, b in zip(answered, _answered(url), strict=True)]
            rows.append({
                "standbys": count, "choice": choice if count > 1 else "-", "clients": clients, "rps": result["rps"],
                "p50": result["p50"], "p95": result["p95"], "embed_p50": result["embed_p50"],
                "search_p50": result["search_p50"],
                "cpu_api": per_query["api"], "cpu_primary": per_query["primary"], "cpu_standbys": standbys_ms,
                "answered": "/".join(str(n) for n in spread) or "-",
            })  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)
    return rows


def replay_delays(primary_url: str, url: str, samples: int = 20) -> list[float]:
    """Milliseconds from a commit on the primary to its replay on a standby (a commit of its own each time)."""
    delays = []
    with psycopg.connect(primary_url, autocommit=True) as primary, psycopg.connect(url, autocommit=True) as standby:
        for _ in range(samples):
            primary.execute("SELECT txid_current()")  # assigns a transaction id: a commit record in the WAL
            committed, started = primary_position(primary), time.perf_counter()
            while (standby_state(standby).replayed or 0) < committed:
                time.sleep(0.0005)
            delays.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
    return delays


def project(rows: list[dict], cores: int) -> list[str]:
    """Throughput with one machine of ``cores`` cores per standby, from the measured CPU cost of a search there
    (the API tier scaled out apart, as compose's --scale api=N does)."""
    searched = [r for r in rows if r["standbys"] > 0]
    if not searched:
        return []
    search_ms = statistics.median(r["cpu_standbys"] for r in searched)
    api_ms = statistics.median(r["cpu_api"] for r in rows)
    lines = [f"measured (medians): one query costs {search_ms:.0f} CPU ms on the standbys (search) and {api_ms:.0f} "
             "in the API"]  # fmt: skip
    for standbys in (1, 2, 4, 8):
        rate = standbys * cores * 1000 / search_ms
        api_machines = math.ceil(rate * api_ms / (cores * 1000))
        lines.append(
            f"  {standbys} standby machine(s) of {cores} cores: searches bound at {rate:.0f} queries/s, "
            f"fed by {api_machines} API machine(s) of {cores} cores"
        )
    return lines


def plot(rows: list[dict], path: Path) -> None:
    """Throughput per configuration (mean, and every run as a dot) and the mean CPU per query of each tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["standbys"], r["clients"]) for r in rows})
    runs = {c: [r for r in rows if (r["standbys"], r["clients"]) == c] for c in configs}
    labels = [f"{n} standby\n{c} clients" if n == 1 else f"{n} standbys\n{c} clients" for n, c in configs]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    means = [statistics.mean(r["rps"] for r in runs[c]) for c in configs]
    left.bar(labels, means, color="tab:grey")
    for index, config in enumerate(configs):
        left.plot([index] * len(runs[config]), [r["rps"] for r in runs[config]], "o", color="black", markersize=4)
    left.set(ylabel="queries / s", title="Throughput, all on one 2-core machine (dots: each run)")
    bottom = [0.0] * len(configs)
    for key, colour in (("cpu_api", "tab:blue"), ("cpu_primary", "tab:orange"), ("cpu_standbys", "tab:green")):
        values = [statistics.mean(r[key] for r in runs[c]) for c in configs]
        right.bar(labels, values, bottom=bottom, color=colour, label=key.removeprefix("cpu_"))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set(ylabel="CPU ms per query (mean of runs)", title="Where the CPU goes: the search moves to the standbys")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder searched recursively for PNG/JPEG files")
    parser.add_argument("--category", required=True)
    parser.add_argument("--standbys", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8])
    parser.add_argument(
        "--choices",
        nargs="+",
        default=["least_busy"],
        choices=["least_busy", "round_robin"],
        help="INSPECT_REPLICA_CHOICE values compared with 2 standbys or more",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole sweep (the machine's load varies)")
    parser.add_argument("--cores", type=int, default=2, help="cores of a standby machine in the projection")
    parser.add_argument("--plot", type=Path, help="PNG of throughput and CPU per query")
    args = parser.parse_args()
    settings = Settings()
    if settings.database_url:
        raise SystemExit("this benchmark makes local standbys of the embedded server: unset DATABASE_URL")
    primary_url = database_url(settings)
    urls = start_standbys(primary_url, settings.data_dir, max(args.standbys))
    configs = [(n, c) for n in args.standbys for c in (args.choices if n > 1 else args.choices[:1])]
    rows = [row for _ in range(args.rounds) for n, c in configs for row in measure(settings, urls, n, c, args)]
    print_table(rows, 12)
    print("rps: queries/s; p50/p95 ms end to end; *_p50 the server's median stages (ms); cpu_*: CPU ms per query of")
    print("the API process, the primary (all its backends) and the standbys together.")
    print("answered: searches and bank reads each standby answered, in order.")
    for line in project(rows, args.cores):
        print(line)
    if urls:
        delays = replay_delays(primary_url, urls[0])
        print(f"replay delay of a commit on standby-1 (ms, {len(delays)} commits): median "
              f"{statistics.median(delays):.1f}, max {max(delays):.1f}")  # fmt: skip
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
