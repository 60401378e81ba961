"""What one crafted upload costs a running server: the answer, its time, and the server's peak memory growth.

    python benchmarks/hostile_upload.py --url http://127.0.0.1:8000 --pid "$(pgrep -f 'uvicorn app.main:app')"

Posts each file of ``tests/hostile_corpus.py`` (a 10000x2 PNG of a few hundred bytes first) and reads the server
process's peak resident memory (VmHWM in /proc) before and after each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hostile_corpus import corpus


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server process (uvicorn)")
    parser.add_argument("--category", default="bottle")
    args = parser.parse_args()
    print("| upload | bytes | status | answer | seconds | server peak memory growth MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    with httpx.Client(base_url=args.url, timeout=600) as client:
        for case in corpus():
            before = peak_mib(args.pid)
            started = time.perf_counter()
            fields = {"category": args.category, **case.form}
            try:
                response = client.post("/query", files={"file": ("x", case.data)}, data=fields)
                status = str(response.status_code)
                try:
                    answer = response.json().get("error", "judged")
                except ValueError:
                    answer = response.text[:40]
            except httpx.HTTPError as error:
                status, answer = "none", type(error).__name__
            seconds = time.perf_counter() - started
            print(
                f"| {case.name} | {len(case.data):,} | {status} | {answer} | {seconds:.3f} | "
                f"{peak_mib(args.pid) - before:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
