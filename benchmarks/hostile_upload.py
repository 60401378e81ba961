"""What one crafted upload costs a running server: the answer, its time, and the server's peak memory growth.

    python benchmarks/hostile_upload.py --url http://127.0.0.1:8000 --pid "$(pgrep -f 'uvicorn app.main:app')"

Posts each file of ``tests/hostile_corpus.py`` (a 10000x2 PNG of a few hundred bytes first) and reads the server
process's peak resident memory (VmHWM in /proc) before and after each; then one ``POST /query/batch`` of
``--batch-files`` PNGs of one colour, each just under the pixel limit and a few kilobytes (``--batch-files 0``: none).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

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
    parser.add_argument("--batch-files", type=int, default=32, help="images of the batch at the end (0: none)")
    parser.add_argument("--batch-pixels", type=int, default=36_000_000, help="pixels of each (under the limit)")
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
        if args.batch_files:
            side = int(args.batch_pixels**0.5)
            buffer = io.BytesIO()
            Image.new("RGB", (side, side), (90, 90, 90)).save(buffer, format="PNG", optimize=True)
            files = [("file", (f"{i}.png", buffer.getvalue(), "image/png")) for i in range(args.batch_files)]
            before = peak_mib(args.pid)
            started = time.perf_counter()
            response = client.post("/query/batch", files=files, data={"category": args.category})
            answer = response.json().get("error", "judged") if response.status_code != 200 else "judged"
            print(
                f"| a batch of {args.batch_files} {side}x{side} PNGs | {len(buffer.getvalue()) * args.batch_files:,} | "
                f"{response.status_code} | {answer} | {time.perf_counter() - started:.3f} | "
                f"{peak_mib(args.pid) - before:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
