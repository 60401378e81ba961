"""``python -m ingest worker``: take fit jobs from PostgreSQL and run them, on any machine that reaches the database
(one with a GPU, say), as many at once as there are workers; ``python -m ingest enqueue`` queues one from a folder.

A job fits exactly as ``python -m ingest fit --folder`` does, from the images uploaded with it, and reports each
stage's progress on the job's row (about twice a second), where the pages read it. The new version and the job's
success commit in one transaction; a cancel, a failure or a killed worker before that commit leaves the category's
previous version serving (:mod:`store.jobs` says how a killed worker is noticed)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import psycopg

from config import Settings, get_settings
from ingest import scratch
from ingest.preflight import file_problems, refusal
from ingest.sets import part_naming
from patchcore.care import CareArea
from patchcore.datasets.category import Category
from patchcore.datasets.files import image_files
from patchcore.datasets.folders import folder_images, unmixed
from patchcore.errors import WeightsError, WeightsMismatch
from patchcore.model import Embedder, PatchCoreConfig, fit
from patchcore.threshold import PER_IMAGE
from store import jobs
from store.database import connect, database_url
from store.migrate import upgrade

STAGES = ("reading images", "features", "coreset", "cross-fitted good scores", "held out", "storing")


class Cancelled(Exception):
    """Someone asked the running job to stop."""


JOB_OPTIONS = (
    "backbone",
    "field_of_view",
    "pixels",
    "tile",
    "tile_overlap",
    "coreset_ratio",
    "false_alarm_rate",
    "per",
)


def job_options(args: argparse.Namespace) -> dict:
    """What a job records of the fit's options (the rest are the defaults of ``python -m ingest fit``)."""
    return {name: getattr(args, name) for name in JOB_OPTIONS}


def job_config(options: dict, settings: Settings) -> PatchCoreConfig:
    """The job's options over this worker's defaults (``PatchCoreConfig``'s, the settings' network, metric and
    false-alarm rate); whose rate the target is, ``per``, is the fit's (:func:`job_per`)."""
    defaults = {"backbone": settings.backbone, "false_alarm_rate": settings.false_alarm_rate}
    model = {name: value for name, value in options.items() if name != "per"}
    return PatchCoreConfig(**{**defaults, **model, "metric": settings.metric})


def job_per(options: dict) -> str:
    """Whose false-alarm rate the job's target is: each image's, or each part's on any view (jobs made before the
    option have none: per image)."""
    return options.get("per") or PER_IMAGE


class Reporter:
    """The fit's progress callback for one job: writes the stage's counts and rate to the job's row at most every
    ``every`` seconds (and at each stage's start and end), and stops the fit when a cancel was asked."""

    def __init__(self, connection: psycopg.Connection, job_id: int, every: float = 0.5) -> None:
        self.connection = connection
        self.job_id = job_id
        self.every = every
        self.stage = ""
        self.started = self.written = 0.0

    def __call__(self, stage: str, done: int, total: int, unit: str) -> None:
        now = time.monotonic()
        new_stage = stage != self.stage
        if new_stage:
            self.stage, self.started = stage, now
        if not new_stage and done < total and now - self.written < self.every:
            return
        self.written = now
        rate = done / (now - self.started) if done and now > self.started else None
        number = STAGES.index(stage) + 1 if stage in STAGES else None
        if jobs.report(self.connection, self.job_id, stage, number, len(STAGES), done, total, unit, rate):
            raise Cancelled(stage)


def _write_images(url: str, job: dict, folder: Path, report: Reporter) -> tuple[list[Path], dict[Path, str]]:
    """The job's images as files of ``folder`` (read on a connection of their own, so the progress written meanwhile
    on the job's connection is seen at once), every one of them or the job fails; and the part of each file whose
    part was named (:func:`store.jobs.name_parts`)."""
    report(STAGES[0], 0, job["images"], "img")
    parts: dict[Path, str] = {}
    with connect(url) as reading:
        for done, (name, data, part) in enumerate(jobs.images(reading, job["id"]), start=1):
            path = folder / Path(name).name
            path.write_bytes(data)
            if part is not None:
                parts[path] = part
            report(STAGES[0], done, job["images"], "img")
    files = image_files(folder)
    if len(files) != job["images"]:
        raise ValueError(f"{len(files)} of the job's {job['images']} files are images the fit reads")
    return files, parts


def job_embedder(config: PatchCoreConfig, settings: Settings) -> tuple[Embedder, str | None]:
    """The job's network and the weights it was loaded with. ``INSPECT_WEIGHTS`` is the file of the service's
    network (``INSPECT_BACKBONE``); a job that chose another network (the new product page's "Network") is given
    torchvision's ImageNet weights of its own (downloaded once into ``TORCH_HOME``) where that file is not its
    network's, rather than failing on tensors of another shape. A file that does not fit the service's own network
    is an error of the configuration, said as it is."""
    try:
        return Embedder.load(config, settings.weights, settings.device), settings.weights
    except WeightsMismatch:
        if settings.weights is None or config.backbone == settings.backbone:
            raise
    print(
        f"   {settings.weights} (INSPECT_WEIGHTS) is not {config.backbone}'s: torchvision's weights of it", flush=True
    )
    try:
        return Embedder.load(config, None, settings.device), None
    except WeightsError as exc:
        raise WeightsError(
            f"INSPECT_WEIGHTS ({settings.weights}) is not {config.backbone}'s weights (the job's network), and "
            f"torchvision's are not to be had: {exc}"
        ) from exc


def run_job(connection: psycopg.Connection, job: dict, settings: Settings, worker: str) -> None:
    """Run one claimed job to its end (succeeded, cancelled or failed, as its row says). ``connection`` holds the
    job's lock."""
    from ingest import report as reports
    from ingest.persist import store_model

    job_id, name = job["id"], job["category"]
    reporter = Reporter(connection, job_id)
    url = database_url(settings)
    try:
        with scratch.job_folder(job_id) as folder:
            train, parts = _write_images(url, job, folder, reporter)
            config = replace(job_config(job["options"], settings), care_area=jobs.care_png(connection, job_id))
            views = f" ({len(parts)} of them views of {job['parts']} parts)" if parts else ""
            care = f", care area {config.care.share:.1%} of each picture" if config.care is not None else ""
            print(f"job {job_id}: fitting {name} from {len(train)} images{views}, {config.backbone}{care}", flush=True)
            embedder, weights = job_embedder(config, settings)
            model = fit(config, train, weights, embedder=embedder, report=reporter, parts=parts or None,
                        per=job_per(job["options"]), features_in_memory_max=settings.fit_memory_bytes)  # fmt: skip
            reporter(STAGES[-1], 0, 1, "version")
            result = reports.build(name, model, None, {"job_id": job_id})

            def succeed(storing: psycopg.Connection, model_id: int) -> None:
                if jobs.cancel_requested(storing, job_id):
                    raise Cancelled(STAGES[-1])
                jobs.succeed(storing, job_id, model_id)

            actor = f"job {job_id} on {worker}, asked by {job['created_by'] or 'unknown'}"
            stored = store_model(name, model, result, [], actor=actor, within=succeed)
        print(f"job {job_id}: {name} is version {stored['model_id']}", flush=True)
    except Cancelled as stop:
        jobs.end(connection, job_id, "cancelled", f"cancelled during {stop}; nothing was stored")
        print(f"job {job_id}: cancelled during {stop}", flush=True)
    except Exception as exc:  # the job's own message, on its page; the worker goes on with the next job
        traceback.print_exc()
        stage = reporter.stage or "its start"
        jobs.end(connection, job_id, "failed", f"{type(exc).__name__} during {stage}: {exc}; nothing was stored")
    finally:
        jobs.release(connection, job_id)


def run_worker(args: argparse.Namespace) -> int:
    """Take and run jobs until stopped (or, with ``--once``, until the queue is empty)."""
    settings = get_settings()
    url = database_url(settings)
    upgrade(url)
    worker = args.name or f"{socket.gethostname()}-{os.getpid()}"
    print(
        f"worker {worker}: taking fit jobs from the database (woken by each queued job, or every {args.poll:g} s)",
        flush=True,
    )
    while True:
        job = None
        try:
            with connect(url, autocommit=True) as connection:
                connection.execute("SET application_name = 'patchcore-worker'")
                jobs.listen(connection)
                for reaped in jobs.reap(connection):
                    print(f"job {reaped}: its worker is gone; marked failed", flush=True)
                for folder in scratch.sweep():
                    print(f"worker {worker}: removed {folder}, the folder of a job whose worker is gone", flush=True)
                job = jobs.claim(connection, worker)
                if job is not None:
                    print(f"job {job['id']}: taken ({job['category']}, {job['images']} images)", flush=True)
                    run_job(connection, job, settings, worker)
                elif args.once:
                    return 0
                else:  # a queued job wakes the worker at once; the timeout also finds jobs whose worker died
                    jobs.wait_for_work(connection, args.poll)
        except psycopg.OperationalError as exc:
            print(f"worker {worker}: the database is not answering ({exc}); trying again", file=sys.stderr, flush=True)
            time.sleep(args.poll)


def run_enqueue(args: argparse.Namespace) -> int:
    """Queue a fit job from a folder of good images; with ``--wait``, follow it to its end."""
    settings = get_settings()
    options = job_options(args)
    care = CareArea.read(args.care_area.read_bytes(), str(args.care_area)).png() if args.care_area else None
    # options no fit can take are refused here, not by the worker that takes the job
    config = replace(job_config(options, settings), care_area=care)
    where = f"--folder {args.folder}"
    files = unmixed(where, folder_images(args.folder, where))  # before the database: a refusal is cheap
    problems = file_problems(Category(args.category, files, []), config.preprocess)  # as the worker's check would
    if problems:
        raise refusal(problems, "queueing the job")
    part_of = part_naming(args)  # a pattern runs here, never on a server
    parts = {path.name: part for path in files if (part := part_of(path)) is not None} if part_of else {}
    if args.parts is not None and not parts:
        raise ValueError(f"--parts {args.parts} names none of the images in {args.folder}")
    url = database_url(settings)
    upgrade(url)
    with connect(url, autocommit=True) as connection:
        job = jobs.create(connection, args.category, options, args.actor)
        added = jobs.add_images(connection, job["id"], [(p.name, p.read_bytes()) for p in files])
        if parts:
            jobs.name_parts(connection, job["id"], {name: parts[name] for name in added.added})
        if care is not None:
            jobs.set_care_area(connection, job["id"], care)
        job = jobs.start(connection, job["id"])
    views = f" (views of {job['parts']} parts)" if parts else ""
    print(f"job {job['id']}: {args.category} queued with {len(added.added)} images{views}", flush=True)
    if added.duplicates:
        print(f"left out as duplicates of other files: {', '.join(added.duplicates)}", flush=True)
    if not args.wait:
        return 0
    shown = None
    while job["state"] in ("queued", "running"):
        time.sleep(1.0)
        with connect(url, autocommit=True) as connection:
            jobs.reap(connection)
            job = jobs.one(connection, job["id"])
        line = describe(job)
        if line != shown:
            print(line, flush=True)
            shown = line
    return 0 if job["state"] == "succeeded" else 1


def describe(job: dict) -> str:
    """One line of a job's state, as the terminal shows it."""
    if job["state"] == "running" and job["stage"]:
        counts = f" {job['done']}/{job['total']} {job['unit']}" if job["total"] else ""
        rate = f" ({job['rate']:.1f} {job['unit']}/s)" if job["rate"] else ""
        return f"job {job['id']}: stage {job['stage_number']}/{job['stages']} {job['stage']}{counts}{rate}"
    tail = f": {job['message']}" if job["message"] else ""
    model = f" (version {job['model_id']})" if job["model_id"] else ""
    return f"job {job['id']}: {job['state']}{model}{tail}"
