"""What going back to a stored version costs over HTTP: the PUT, then the queries after it, back and forth.

    python benchmarks/version_switch.py --url http://127.0.0.1:8000 --category bottle --to 1 \
        --image ../shared/datasets/mvtec_ad/bottle/test/broken_large/000.png [--rounds 2 --after 4 --pause 2]

Alternates the active version between ``--to`` and the version active when it starts (a version of the same fit, or
of the fit before a refit: a refit undone), ``--rounds`` times each way, and ends on the one it started from. One
request at a time: the first query after a switch is where the server takes the other version's bank (its own rows
for a version of the same fit, the other fit's bank read whole) unless it loaded it in the background meanwhile
(``INSPECT_VERSION_CHECK_SECONDS``; ``--pause`` leaves it the time a line leaves between parts), so it is printed
apart from the ones after it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import httpx


def _timed(call) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = call()
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000, response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--category", required=True)
    parser.add_argument("--to", type=int, required=True, help="the stored version to switch to and back from")
    parser.add_argument("--image", type=Path, required=True, help="the image each query sends")
    parser.add_argument("--rounds", type=int, default=2, help="switches each way")
    parser.add_argument("--after", type=int, default=4, help="queries after each switch")
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds between the PUT and the first query (a line between parts)"
    )
    args = parser.parse_args()
    payload = {"file": (args.image.name, args.image.read_bytes())}
    with httpx.Client(base_url=args.url, timeout=300) as client:

        def query() -> tuple[float, dict]:
            ms, response = _timed(lambda: client.post("/query", files=payload, data={"category": args.category}))
            return ms, response.json()

        started_on = client.get(f"/categories/{args.category}").json()["model_id"]
        for _ in range(4):
            query()  # warm: the version it starts on is loaded
        print("| to version | PUT ms | first query ms | next queries ms | their embed, search ms (medians) | score | "
              "threshold |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for target in [args.to, started_on] * args.rounds:
            body = {"model_id": target}
            put, _ = _timed(lambda b=body: client.put(f"/categories/{args.category}/active-version", json=b))
            time.sleep(args.pause)
            answers = [query() for _ in range(args.after)]
            named = {a["model_id"] for _, a in answers}
            if named != {target}:
                raise SystemExit(f"switched to {target}, answered by {sorted(named)}")
            first, rest = answers[0][0], [ms for ms, _ in answers[1:]]
            span = f"{min(rest):.0f}-{max(rest):.0f}" if rest else ""
            server = [a["timings_ms"] for _, a in answers[1:]]  # the server's own: what a busy process slows
            stages = (
                ", ".join(f"{statistics.median(t[k] for t in server):.1f}" for k in ("embed", "search"))
                if server
                else ""
            )
            last = answers[-1][1]
            print(f"| {target} | {put:.1f} | {first:.0f} | {span} | {stages} | {last['anomaly_score']:.6f} | "
                  f"{last['threshold']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
