"""The service on cores it shares with a fit: /query latency and the fit's time, at each OpenMP spin count.

    DATABASE_URL=... python benchmarks/shared_cores.py --images ../shared/datasets/mvtec_ad/bottle/test \
        --category bottle --fit "--data ../shared/datasets/image_level --category mvtec_screw --backbone resnet18 \
        --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth" --spin 1000 --spin 300000 --rounds 2

A new product fitted by a worker on the machine that answers the line (``docker compose up`` on one host) shares the
cores with the API. For each ``GOMP_SPINCOUNT`` (300000 is libgomp's own default; 1000 the service's,
:mod:`patchcore.openmp`), alternating within each round, every server fresh:

1. alone: ``/query`` at 1 client, then at 4 (``query_latency.run``);
2. beside a fit: ``/query`` at 1 client without pause while ``python -m ingest evaluate <--fit>`` runs, the answers'
   p50 and p95 over the fit, and the fit's seconds (its coreset's) from its own report;
3. the same fit alone.

The server and the fit both get the spin count (each reads it when torch loads). Needs the category in the database
that ``DATABASE_URL`` names (or the embedded one).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from query_latency import run

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _env(spin: str) -> dict[str, str]:
    return {**os.environ, "GOMP_SPINCOUNT": spin}


def _server(spin: str, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--no-access-log"],
        cwd=ROOT, env=_env(spin), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not become ready in 300 s")


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=60)


def _fit(spin: str, fit: str, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "ingest", "evaluate", *shlex.split(fit), "--out", str(out)]
    return subprocess.Popen(command, cwd=ROOT, env=_env(spin), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip


def _seconds(report: str) -> tuple[float, float]:
    """The fit's and its coreset's seconds, from the table ``ingest evaluate`` prints."""
    fit = re.search(r"^fit_seconds\s+([\d.]+)", report, re.M)
    coreset = re.search(r"^coreset_seconds\s+([\d.]+)", report, re.M)
    if fit is None or coreset is None:
        raise SystemExit(f"the fit printed no fit_seconds:\n{report[-2000:]}")
    return float(fit.group(1)), float(coreset.group(1))


def beside_a_fit(spin: str, port: int, images: list[Path], category: str, fit: str) -> dict:
    """``/query`` at 1 client on a fresh server for as long as a fit runs beside it."""
    server = _server(spin, port)
    latencies = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client, \
                tempfile.TemporaryDirectory() as out:  # fmt: skip
            payloads = [(path.name, path.read_bytes()) for path in images]
            client.post("/query", files={"file": payloads[0]}, data={"category": category}).raise_for_status()
            fitting = _fit(spin, fit, Path(out))
            while fitting.poll() is None:
                started = time.perf_counter()
                name, data = payloads[len(latencies) % len(payloads)]
                client.post("/query", files={"file": (name, data)}, data={"category": category}).raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
            fit_s, coreset_s = _seconds(fitting.stdout.read())
    finally:
        _stop(server)
    return {"answers": len(latencies), "p50": float(np.percentile(latencies, 50)),
            "p95": float(np.percentile(latencies, 95)), "fit_s": fit_s, "coreset_s": coreset_s}  # fmt: skip


def alone(spin: str, port: int, images: list[Path], category: str, fit: str) -> dict:
    """A fresh server at 1 client, then 4; then the fit with no server beside it."""
    server = _server(spin, port)
    try:
        one, four = (run(f"http://127.0.0.1:{port}", images, category, clients, False) for clients in (1, 4))
    finally:
        _stop(server)
    with tempfile.TemporaryDirectory() as out:
        fitting = _fit(spin, fit, Path(out))
        fit_s, coreset_s = _seconds(fitting.communicate()[0])
    return {"p50_1": one["p50"], "p95_1": one["p95"], "p50_4": four["p50"], "rps_4": four["rps"], "fit_s": fit_s,
            "coreset_s": coreset_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="folder searched recursively for PNG/JPEG files")
    parser.add_argument("--category", required=True)
    parser.add_argument("--fit", required=True, help="arguments of the `python -m ingest evaluate` run beside it")
    parser.add_argument("--spin", action="append", help="GOMP_SPINCOUNT values (repeatable; default 1000, 300000)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=8871)
    args = parser.parse_args()
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    spins = args.spin or ["1000", "300000"]
    print(
        "| GOMP_SPINCOUNT | round | /query alone: p50 1 client, p95 | p50 4 clients, answers/s | fit alone s "
        "(coreset) | /query beside the fit: answers, p50, p95 | the fit beside /query s (coreset) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for round_ in range(1, args.rounds + 1):
        for spin in spins:
            a = alone(spin, args.port, images, args.category, args.fit)
            b = beside_a_fit(spin, args.port, images, args.category, args.fit)
            print(
                f"| {spin} | {round_} | {a['p50_1']:.1f}, {a['p95_1']:.1f} ms | {a['p50_4']:.1f} ms, "
                f"{a['rps_4']:.1f} | {a['fit_s']:.1f} ({a['coreset_s']:.1f}) | {b['answers']}, {b['p50']:.1f}, "
                f"{b['p95']:.1f} ms | {b['fit_s']:.1f} ({b['coreset_s']:.1f}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
