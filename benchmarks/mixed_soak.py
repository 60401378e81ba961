"""Soak test of everything at once: queries on two API servers while people review, set thresholds, teach and read.

A line's day is not queries alone: while the cameras ask, an operator reviews answers, an engineer moves the
threshold (each move a new version), someone teaches good images (a new version with a larger memory bank) and
dashboards read the log, the parts, the drift and the metrics. This starts a PostgreSQL of its own (the embedded
build) with ``--standbys`` streaming standbys of it (1 by default), stores a bottle model fitted on ``--train`` good
images, serves it with two uvicorn processes at the default settings but for where they search (two API servers
sharing one database, as a deployment scales): the first in PostgreSQL, on the standbys (``DATABASE_REPLICA_URLS``;
on the primary with ``--standbys 0``), the second in its own process (``INSPECT_SEARCH_BACKEND=exact``); and runs for
``--seconds``:

- ``--clients`` threads querying bottle's test images, alternating servers, half of them naming a part;
- a reviewer recording a label on a random answer every 0.2 s;
- a threshold set by false-alarm rate (3%, 2%, 5% in turn) every 3 s, on alternate servers;
- a good training image taught every 12 s, and a known defect with its mask 6 s after each;
- a stored version of the fit made active again every 20 s (the one before the active one);
- halfway, bottle fitted again on other good images by ``python -m ingest fit`` (a re-ingest retires the versions
  of the fit before, memory banks and all, while they serve);
- from the start, a new product, ``widget`` (20 other good bottle images), uploaded to a fit job and fitted by a
  ``python -m ingest worker`` process; once it serves, the query threads ask it too and every other threshold move
  is widget's; three quarters through, widget is deleted while it is asked (its queries and moves may answer 404
  from the deletion until its second fit is seen to serve, never outside) and a second job fits it again;
- a reader asking the log, parts, CSVs, drift, metrics, categories and a kept answer's heatmap every 0.3 s (drawn from
  the answer's own patch distances in its version's view, or, that version retired, judged again by its category's
  active version: 404 for widget's answers while widget is away, its versions deleted).

Then it checks the log and the verdicts: every 200 answer's record is there exactly once, and every answer is its
version's own verdict (that version's threshold, anomalous exactly when the score lies above it), never a mix.
Prints the outcomes per operation and status, and exits 1 when any status was not one the operation may answer, a
record is missing, a verdict mixed, widget answered by a version of it deleted before the question, a traceback in
a server's or the worker's log or a deadlock in a PostgreSQL's, or the refit or a job failed.

    python benchmarks/mixed_soak.py --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \
        --data ../shared/datasets/mvtec_ad --seconds 240
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
from log_soak import own_database, start_api

from config import Settings
from patchcore.datasets.mvtec import mvtec_category
from patchcore.masks import mask_png
from patchcore.model import PatchCoreConfig, fit
from store import models, standbys
from store.database import connect

ROOT = Path(__file__).resolve().parents[1]

READS = ("/parts", "/parts?verdict=defect", "/inspections", "/inspections.csv", "/parts.csv", "/parts/SN-3", "/metrics",
         "/categories", "/categories/bottle", "/categories/bottle/drift", "/ready",
         "/categories/bottle/threshold?false_alarm_rate=0.01")  # fmt: skip
RATES = (0.03, 0.02, 0.05)
FAULTS = ("Traceback", "deadlock detected")  # in a server's or the worker's log; in a PostgreSQL's


class Tally:
    """Outcomes per (operation, status), the unexpected ones kept, and the ids of the answered queries."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: Counter = Counter()
        self.unexpected: list[tuple[str, int, str]] = []
        self.answered: list[int] = []
        self.of_widget: set[int] = set()  # answers of widget, whose heatmaps are 404 once it is deleted
        self.widget_away = [float("inf"), float("inf")]  # from the deletion's request to its second fit seen served
        self.widget_answers: list[tuple[float, int]] = []  # (asked at, by version) of widget's 200s
        self.widget_deleted = (float("inf"), 0)  # (when the deletion answered, the newest version id then)
        self.verdicts: list[tuple[int, float, float, bool]] = []  # (version, its threshold, score, anomalous)

    def widget_gone(self, asked: float) -> bool:
        """Whether widget may have been away at some moment of a request made from ``asked`` until now (monotonic)."""
        return asked <= self.widget_away[1] and time.monotonic() >= self.widget_away[0]

    def note(self, operation: str, response: httpx.Response, expected: tuple[int, ...] = (200,)) -> None:
        with self.lock:
            self.outcomes[(operation, response.status_code)] += 1
            if response.status_code not in expected:
                self.unexpected.append((operation, response.status_code, response.text[:300]))


def _loop(until: float, pause: float, step: Callable[[int], None]) -> None:
    turn = 0
    while time.monotonic() < until:
        step(turn)
        turn += 1
        time.sleep(pause)


def logged_ids(client: httpx.Client) -> Counter:
    """How often each inspection id is in the log, page by page."""
    seen: Counter = Counter()
    before = None
    while True:
        page = client.get("/inspections", params={"limit": 500, **({"before": before} if before else {})}).json()
        seen.update(record["id"] for record in page["inspections"])
        before = page["next_before"]
        if not before:
            return seen


def refit_midway(url: str, args: argparse.Namespace, until: float) -> str:
    """Halfway through, bottle fitted again by ``python -m ingest fit`` on the next ``--train`` good images (a
    re-ingest with one fit kept, ``INSPECT_FITS_KEPT=1``: the versions of the fit before are retired with their
    memory banks while they serve, the case this soak checks); what it said."""
    time.sleep(max(0.0, (until - time.monotonic()) / 2))
    with tempfile.TemporaryDirectory() as folder:
        good = Path(folder) / "bottle"
        good.mkdir()
        for path in sorted((args.data / "bottle" / "train" / "good").glob("*.png"))[args.train : 2 * args.train]:
            (good / path.name).symlink_to(path.resolve())
        done = subprocess.run(
            [sys.executable, "-m", "ingest", "fit", "--folder", str(good), "--backbone", "resnet18", "--weights",
             str(Path(args.weights).resolve()), "--out", str(Path(folder) / "reports")],
            cwd=ROOT, env={**os.environ, "DATABASE_URL": url, "INSPECT_FITS_KEPT": "1"}, capture_output=True,
            text=True,
        )  # fmt: skip
    stored = [line for line in done.stdout.splitlines() if line.startswith("stored ")]
    return stored[0] if done.returncode == 0 and stored else f"failed ({done.returncode}): {done.stderr[-300:]}"


def new_product(client: httpx.Client, images: list[Path], until: float) -> dict:
    """A fit job for ``widget`` from ``images``, started and followed until it ends (or the run does): the job."""
    job = client.post("/jobs", json={"category": "widget", "backbone": "resnet18"}).json()
    if "id" not in job:
        return {"state": f"not made: {job}"}
    files = [("files", (path.name, path.read_bytes())) for path in images]
    client.post(f"/jobs/{job['id']}/images", files=files).raise_for_status()
    job = client.post(f"/jobs/{job['id']}/start").json()
    while job["state"] in ("queued", "running") and time.monotonic() < until:
        time.sleep(1)
        job = client.get(f"/jobs/{job['id']}").json()
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", type=Path, required=True, help="MVTec AD root holding bottle")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--clients", type=int, default=3, help="query threads (default 3)")
    parser.add_argument("--train", type=int, default=60, help="good training images fitted (default 60)")
    parser.add_argument("--folder", type=Path, help="database folder (default: a temporary one, removed after a "
                        "clean run and kept, with the servers' logs, after a failed one)")  # fmt: skip
    parser.add_argument("--standbys", type=int, default=1, help="streaming standbys the first server searches on")
    args = parser.parse_args()

    folder, server, url = own_database(args.folder, "mixed-soak-")
    bottle = mvtec_category(args.data, "bottle")
    with connect(url) as connection:
        models.save_model(connection, "bottle", fit(PatchCoreConfig(backbone="resnet18"), bottle.train[: args.train],
                                                    args.weights), {}, Settings())  # fmt: skip
    replicas = standbys.start_standbys(url, folder, args.standbys) if args.standbys else []
    on_standbys = {"DATABASE_REPLICA_URLS": ",".join(replicas)}
    exact_alone = {"DATABASE_REPLICA_URLS": "", "INSPECT_SEARCH_BACKEND": "exact"}  # its own settings, not the worker's
    servers = [start_api(url, folder.parent / "api8771.log", port=8771, env=on_standbys)]
    servers.append(start_api(url, folder.parent / "api8772.log", port=8772, env=exact_alone))
    clients = [httpx.Client(base_url=base, timeout=300) for _, base in servers]
    tests = sorted((args.data / "bottle" / "test").rglob("*.png"))
    defects = [(s.path, s.defect, mask_png(s.mask)) for s in bottle.test if s.is_anomalous and s.mask is not None][:10]
    tally = Tally()
    until = time.monotonic() + args.seconds

    def querier(seed: int) -> Callable[[int], None]:
        rng = random.Random(seed)

        def ask(turn: int) -> None:
            path = rng.choice(tests)
            category = "widget" if served_widget and rng.random() < 0.25 else "bottle"
            fields = {"category": category, **({"part": f"SN-{rng.randrange(40)}"} if rng.random() < 0.5 else {})}
            asked = time.monotonic()
            answer = clients[turn % 2].post("/query", files={"file": (path.name, path.read_bytes())}, data=fields)
            away = category == "widget" and tally.widget_gone(asked)
            tally.note(f"POST /query {category}", answer, (200, 404) if away else (200,))
            if answer.status_code == 200:
                said = answer.json()
                with tally.lock:
                    tally.answered.append(said["inspection_id"])
                    if category == "widget":
                        tally.of_widget.add(said["inspection_id"])
                        tally.widget_answers.append((asked, said["model_id"]))
                    tally.verdicts.append((said["model_id"], said["threshold"], said["anomaly_score"],
                                           said["is_anomalous"]))  # fmt: skip

        return ask

    def review(turn: int) -> None:
        with tally.lock:
            ids = list(tally.answered)
        if ids:
            label = random.choice(("good", "broken_large"))
            reviewed = clients[turn % 2].post(f"/inspections/{random.choice(ids)}/review", json={"label": label})
            tally.note("POST /inspections/{id}/review", reviewed)

    def move_threshold(turn: int) -> None:
        name, asked = "widget" if served_widget and turn % 2 else "bottle", time.monotonic()
        moved = clients[turn % 2].put(f"/categories/{name}/threshold", json={"false_alarm_rate": RATES[turn % 3]})
        away = name == "widget" and tally.widget_gone(asked)  # 409: a version changed under it; 404: widget deleted
        tally.note(f"PUT /categories/{name}/threshold", moved, (200, 409, 404) if away else (200, 409))

    def teach(turn: int) -> None:
        if turn % 2:
            path, defect, mask = defects[turn // 2 % len(defects)]
            files = [("file", (path.name, path.read_bytes())), ("mask", ("mask.png", mask))]
            taught = clients[turn % 2].post("/categories/bottle/defects", files=files, data={"defect_type": defect})
            tally.note("POST /categories/bottle/defects", taught, (200, 409))
            return
        path = bottle.train[args.train + turn // 2 % (len(bottle.train) - args.train)]
        taught = clients[turn % 2].post("/categories/bottle/normals", files=[("files", (path.name, path.read_bytes()))])
        tally.note("POST /categories/bottle/normals", taught, (200, 409))

    def reactivate(turn: int) -> None:
        category = clients[turn % 2].get("/categories/bottle").json()
        earlier = [v["model_id"] for v in category["versions"] if v["model_id"] != category["model_id"]]
        if earlier:
            moved = clients[turn % 2].put("/categories/bottle/active-version", json={"model_id": earlier[0]})
            tally.note("PUT /categories/bottle/active-version", moved, (200, 409))

    def read(turn: int) -> None:
        with tally.lock:
            path = random.choice([*READS, *(["/inspections/{id}/heatmap"] if tally.answered else [])])
            widgets = False  # a heatmap needs the answer's version or an active one: neither while widget is deleted
            if "{id}" in path:
                drawn = random.choice(tally.answered)
                path, widgets = path.replace("{id}", str(drawn)), drawn in tally.of_widget
        name = "GET /inspections/{id}/heatmap" if path.endswith("/heatmap") else "GET " + path.split("?")[0]
        asked = time.monotonic()
        answer = clients[turn % 2].get(path)
        gone = widgets and tally.widget_gone(asked)
        tally.note(name, answer, (200, 404) if "SN-" in path or gone else (200,))

    work = [(querier(seed), 0.0) for seed in range(args.clients)]
    work += [(review, 0.2), (move_threshold, 3.0), (teach, 6.0), (reactivate, 20.0), (read, 0.3)]
    refitted: list[str] = []
    refitting = threading.Thread(target=lambda: refitted.append(refit_midway(url, args, until)))
    served_widget: list[bool] = []
    others = sorted((args.data / "bottle" / "train" / "good").glob("*.png"))[-20:]
    jobs_ended: list[str] = []

    def widget_life() -> None:
        """widget fitted by a job, served, deleted while asked three quarters through, and fitted again."""
        jobs_ended.append(new_product(clients[1], others, until)["state"])
        served_widget.append(True)
        time.sleep(max(0.0, until - time.monotonic() - args.seconds / 4))
        tally.widget_away[0] = time.monotonic()
        tally.note("DELETE /categories/widget", clients[0].delete("/categories/widget"))
        with psycopg.connect(url) as connection:
            newest = connection.execute("SELECT max(id) FROM models").fetchone()[0]
        tally.widget_deleted = (time.monotonic(), newest)  # a widget answer asked after it is by a newer version
        jobs_ended.append(new_product(clients[0], others, until + 300)["state"])  # followed past the run's end
        tally.widget_away[1] = time.monotonic()  # its version committed with the job's success: served from here

    job = threading.Thread(target=widget_life)
    with open(folder.parent / "worker.log", "wb") as sink:  # the process keeps its own copy of the file
        worker = subprocess.Popen(
            [sys.executable, "-m", "ingest", "worker", "--poll", "1", "--name", "soak"], cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "INSPECT_WEIGHTS": str(Path(args.weights).resolve())},
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    threads = [threading.Thread(target=_loop, args=(until, pause, step)) for step, pause in work]
    for thread in threads:
        thread.start()
    refitting.start()
    job.start()
    for thread in [*threads, refitting, job]:
        thread.join()
    worker.terminate()
    worker.wait(30)
    refit = refitted[0] if refitted else "did not finish"
    job_state = ", then ".join(jobs_ended) or "not made"
    seen = logged_ids(clients[0])
    missing = [i for i in tally.answered if seen[i] != 1]
    with psycopg.connect(url) as connection:
        stored = dict(connection.execute("SELECT id, threshold FROM models").fetchall())
    mixed = [v for v in tally.verdicts if (v[0] in stored and abs(v[1] - stored[v[0]]) > 1e-9) or v[3] != (v[2] > v[1])]
    retired = sum(v[0] not in stored for v in tally.verdicts)
    deleted_at, newest = tally.widget_deleted
    after_deletion = [model for asked, model in tally.widget_answers if asked >= deleted_at and model <= newest]
    counted = ("inspect_standby_answered", "inspect_standby_skipped", "inspect_primary_answered")
    on_standbys = [line for line in clients[0].get("/metrics").text.splitlines() if line.startswith(counted)]
    for client in clients:
        client.close()
    for api, _ in servers:
        api.terminate()
        api.wait(30)
    standbys.stop_standbys(folder)
    logs = [*folder.parent.glob("*.log"), *(d / "log" for d in [folder, *standbys.standby_dirs(folder)])]
    faults = {path.relative_to(folder.parent): sum(path.read_text().count(f) for f in FAULTS)
              for path in logs if path.exists()}  # fmt: skip

    print(f"{args.seconds:.0f} s, two API servers on one database ({args.standbys} standby(s) searched by the first), "
          f"{args.clients} query threads")  # fmt: skip
    print(f"{'operation':<36} | {'status':>6} | {'answers':>7}")
    for (operation, status), count in sorted(tally.outcomes.items()):
        print(f"{operation:<36} | {status:>6} | {count:>7}")
    print(f"log: {len(tally.answered)} answered queries, {len(seen)} records, {len(missing)} missing or twice")
    print(f"verdicts: {len({v[0] for v in tally.verdicts})} versions answered; {len(mixed)} answers not their "
          f"version's own verdict (its threshold, score above it; {retired} by versions the refit retired, checked "
          "against their score only)")  # fmt: skip
    print(f"refit: {refit}")
    print("the first server's searches and bank reads: " + "; ".join(on_standbys or ["all on the primary"]))
    print(f"new product: its fit jobs {job_state} (deleted between); {len(after_deletion)} answers asked after the "
          "deletion by a version it deleted")  # fmt: skip
    print("tracebacks and deadlocks in the logs: " + ", ".join(f"{path} {count}" for path, count in faults.items()))
    for operation, status, text in tally.unexpected[:20]:
        print(f"unexpected: {operation} {status}: {text}")
    failed = tally.unexpected or missing or mixed or after_deletion or any(faults.values())
    failed = failed or not refit.startswith("stored")
    failed = failed or jobs_ended != ["succeeded"] * 2
    server.stop()
    if failed:
        print(f"the database, the servers' and the worker's logs: {folder.parent}")
    elif args.folder is None:
        shutil.rmtree(folder.parent, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
