"""``python -m ingest inspect``: judge a folder of images with a fitted category, without the API.

Each image goes the served way (:class:`serving.inspector.Inspector`: the category's active version from
PostgreSQL, its backbone and field of view, the search backend ``INSPECT_SEARCH_BACKEND`` chooses), so a verdict here
is the one ``POST /query`` would give. Out come one CSV row per image (verdict, score, threshold, known defect type,
worst spot and defect regions in the image's own pixels) and, per image, its heatmap drawn over the view the model
saw, the regions boxed. An image that
cannot be judged gets a row naming why, and the command exits 1: nothing is silently dropped. Nothing is written to
the inspection log: the log records what the API answered. Where images are views of parts (``--part REGEX`` or
``--parts FILE``, as for a fit), ``parts.csv`` gives each part's verdict as ``GET /parts/{part}`` does: anomalous
when any view is; a part with a view not judged and none flagged has no verdict (it is not called good unseen). A
version that replaces the judging one during the run judges the images after it, each row naming its version.
"""

from __future__ import annotations

import argparse
import csv
import sys
from contextlib import ExitStack
from pathlib import Path

from PIL import Image

from config import get_settings
from ingest.sets import part_naming
from ingest.stored import active_model
from patchcore import PatchCoreError, progress
from patchcore.ahead import read_ahead
from patchcore.images import IMAGE_SUFFIXES, hidden, is_image_file, original_size, refuse_unread
from patchcore.threshold import part_p_value
from patchcore.views import colouring
from serving.heatmap import overlay
from serving.inspector import Inspector
from store import banks
from store.database import connect, database_url, search_split
from store.migrate import upgrade

COLUMNS = (
    "file", "part", "width", "height", "is_anomalous", "anomaly_score", "p_value", "threshold", "defect_type",
    "defect_confidence", "worst_x", "worst_y", "regions", "region_boxes", "model_id", "heatmap", "notes", "error",
)  # fmt: skip


def images_of(paths: list[Path]) -> list[Path]:
    """The image files named, and those under the folders named (recursively, sorted, hidden files and folders
    left out as ``ls`` and Finder leave them, :func:`patchcore.images.hidden`); a path that is neither is an error,
    before anything is judged."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            shown = [p for p in path.rglob("*") if p.is_file() and not hidden(p.relative_to(path).parts)]
            refuse_unread(shown, str(path))
            found += sorted(p for p in shown if is_image_file(p))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not found:
        raise ValueError(f"no image ({', '.join(sorted(IMAGE_SUFFIXES))}) under {', '.join(map(str, paths))}")
    return found


REPLACEMENTS = 4  # new versions one file may see in a row before its row says the category kept changing
PART_COLUMNS = ("part", "views", "judged", "anomalous_views", "is_anomalous", "p_value", "worst_score", "worst_file")


def part_verdicts(rows: list[dict]) -> list[dict]:
    """Each part's verdict over its views' rows (in the order parts first appear): anomalous when any judged view
    is; normal only when every view was judged; otherwise none (empty), since a view not judged may be the
    defective one. Its worst view by score is named, and how rare the part is among good parts from its views'
    p-values (:func:`patchcore.threshold.part_p_value`, as ``GET /parts/{part}`` gives it; none unless every view
    has one)."""
    verdicts: dict[str, dict] = {}
    rarest: dict[str, list[float]] = {}
    for row in rows:
        part = verdicts.setdefault(row["part"], {"part": row["part"], "views": 0, "judged": 0, "anomalous_views": 0,
                                                 "worst_score": "", "worst_file": ""})  # fmt: skip
        part["views"] += 1
        if row.get("error"):
            continue
        part["judged"] += 1
        part["anomalous_views"] += bool(row["is_anomalous"])
        if row["p_value"] != "":
            rarest.setdefault(row["part"], []).append(float(row["p_value"]))
        if part["worst_score"] == "" or float(row["anomaly_score"]) > float(part["worst_score"]):
            part["worst_score"], part["worst_file"] = row["anomaly_score"], row["file"]
    for name, part in verdicts.items():
        flagged, complete = part["anomalous_views"] > 0, part["judged"] == part["views"]
        part["is_anomalous"] = True if flagged else (False if complete else "")
        rated = rarest.get(name, [])
        p_value = part_p_value(part["views"], min(rated) if len(rated) == part["views"] else None)
        part["p_value"] = "" if p_value is None else f"{p_value:.4g}"
    return list(verdicts.values())


def _heatmap_name(path: Path, index: int) -> str:
    """One name per image, also for files of the same name in different folders."""
    return f"{index:05d}_{path.stem}.png"


def _row(path: Path, parts: dict[Path, str]) -> dict:
    return {"file": str(path), "part": parts.get(path, "")}


def _judged_by(inspector: Inspector, connections: list, rows: list[dict], settings) -> list[tuple]:
    """(inspector, row, image, inspection) for each row's file, embedded together (:meth:`Inspector.embed_all`) and
    judged the served way, searched together where the version searches in this process, as a ``POST /query/batch``
    request's images are (:meth:`Inspector.inspect_features_all`), each row naming the version that judged it; a
    file that cannot be read gets its error in its row and no inspection, as do the files of a search that failed.
    Stops before the first row the version could no longer judge (replaced)."""
    preprocess = inspector.embedder.preprocess

    def decode(row: dict) -> Image.Image | Exception:
        try:
            return preprocess.decode(Path(row["file"]), max_pixels=settings.max_image_pixels)
        except (PatchCoreError, OSError) as exc:
            return exc

    decoded = []  # side by side, as a batch request's images are
    for row, image in zip(rows, read_ahead(decode, rows, len(rows)), strict=True):
        if isinstance(image, Exception):
            row["error"] = str(image)
        decoded.append(None if isinstance(image, Exception) else image)
    features = inspector.embed_all([preprocess.tensor(image) for image in decoded if image is not None])
    failed = None
    try:
        inspections = iter(inspector.inspect_features_all(connections, features, top_k=1))
    except (PatchCoreError, OSError) as exc:
        failed, inspections = str(exc), iter([None] * len(features))
    judged = []
    for row, image in zip(rows, decoded, strict=True):
        inspection = None
        if image is not None:
            inspection = next(inspections, False)
            if inspection is False:  # the version was replaced before this image was answered
                return judged
            if failed is not None:
                row["error"] = failed
        row.update(model_id=inspector.model.id, threshold=f"{inspector.model.threshold:.6f}")
        judged.append((inspector, row, image, inspection))
    return judged


def _judged(inspector: Inspector, connections: list, rows: list[dict], settings) -> tuple[Inspector, list[tuple]]:
    """Each row judged (:func:`_judged_by`) by the category's active version. Where a new version replaces it
    during the run (a threshold set from the browser, normals added, a refit), the rows not yet judged are decoded
    again (a refit may see them otherwise) and judged by the new one, as the API answers across versions; a file
    under which the category got a new version :data:`REPLACEMENTS` times running gets that as its error. Returns
    the version judging at the end, with the rows, each with the version that judged it."""
    judged: list[tuple] = []
    replaced = 0
    while len(judged) < len(rows):
        done = _judged_by(inspector, connections, rows[len(judged) :], settings)
        judged += done
        if len(judged) == len(rows):
            break
        replaced = 0 if done else replaced + 1
        if replaced == REPLACEMENTS:
            row = rows[len(judged)]
            row["error"] = f"{inspector.model.category} got a new version during each of {REPLACEMENTS} searches"
            row.update(model_id=inspector.model.id, threshold=f"{inspector.model.threshold:.6f}")
            judged.append((inspector, row, None, None))
            replaced = 0
            continue
        try:
            model = active_model(connections[0], inspector.model.category)
            bank = banks.load_memory_bank(connections[0], model.bank_segments, model.dim, reuse=inspector.bank)
        except LookupError:  # that version was retired too before its bank was read: ask again
            continue
        inspector = Inspector(model, bank, settings, previous=inspector)
    return inspector, judged


def _described(inspector: Inspector, image, inspection, out: Path, heatmap: str) -> dict:
    """An inspected image's CSV columns, its heatmap drawn over the view the model saw (regions boxed) and saved."""
    width, height = original_size(image)
    view = inspector.embedder.preprocess.view(width, height)
    x, y = view.to_original(*inspection.worst_spot())
    stride = inspector.embedder.extractor.stride
    placed = [region.placed(view, stride, (width, height)) for region in inspection.regions]
    threshold = inspector.model.threshold
    seen = inspector.embedder.preprocess.cropped(image)
    drawn = overlay(seen, inspection.anomaly_map(), threshold, [region["box_in_view"] for region in placed])
    drawn.save(out / "heatmaps" / heatmap)
    notes = inspector.notes(inspection, view, (width, height), colouring(image, seen))
    return {
        "width": width, "height": height, "is_anomalous": inspection.is_anomalous,
        "anomaly_score": f"{inspection.score:.6f}",
        "p_value": f"{inspection.p_value:.4g}" if inspection.p_value is not None else "",
        "defect_type": inspection.defect.defect_type if inspection.defect else "",
        "defect_confidence": f"{inspection.defect.confidence:.4f}" if inspection.defect else "",
        "worst_x": int(x), "worst_y": int(y), "regions": len(placed),
        "region_boxes": ";".join(" ".join(str(v) for v in region["box"]) for region in placed),
        "heatmap": f"heatmaps/{heatmap}", "notes": "; ".join(notes),
    }  # fmt: skip


def _named(versions: list) -> str:
    """The versions that judged, in the order they took over."""
    if len(versions) == 1:
        return f"version {versions[0].id}"
    return "versions " + ", ".join(str(model.id) for model in versions)


def run_inspect(args: argparse.Namespace) -> int:
    paths = images_of(args.paths)
    part_of = part_naming(args)
    parts = {path: part_of(path) or str(path) for path in paths} if part_of else {}  # a pattern refuses before work
    settings = get_settings()
    url = database_url(settings)
    upgrade(url)
    out: Path = args.out or settings.reports_dir / "inspect" / args.category
    (out / "heatmaps").mkdir(parents=True, exist_ok=True)
    failed = anomalous = 0
    rows: list[dict] = []
    with ExitStack() as stack:
        connection = stack.enter_context(connect(url, autocommit=True))
        model = active_model(connection, args.category)
        connections = [connection]
        connections += [
            stack.enter_context(connect(url, autocommit=True)) for _ in range(search_split(settings, connection) - 1)
        ]
        judging = Inspector(model, banks.load_memory_bank(connection, model.bank_segments, model.dim), settings)
        versions = [model]
        handle = stack.enter_context(open(out / "inspections.csv", "w", newline=""))
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        shown = stack.enter_context(progress.bar(total=len(paths), desc=f"inspect {args.category}", unit="img"))
        step = settings.batch_max
        for first in range(0, len(paths), step):
            batch = [_row(path, parts) for path in paths[first : first + step]]
            rows += batch
            judging, judged = _judged(judging, connections, batch, settings)
            for index, (by, row, image, inspection) in enumerate(judged, first):
                if by.model.id != versions[-1].id:
                    shown.write(
                        f"{args.category}: version {by.model.id} replaced version {versions[-1].id} before "
                        f"{row['file']} (threshold {versions[-1].threshold:.6f} -> {by.model.threshold:.6f}); it "
                        "judges the rest (each row names its version)",
                        file=sys.stderr,
                    )
                    versions.append(by.model)
                if inspection is None:
                    failed += 1
                else:
                    anomalous += inspection.is_anomalous
                    row.update(_described(by, image, inspection, out, _heatmap_name(Path(row["file"]), index)))
                writer.writerow(row)
                shown.update(1)
    said = ""
    if parts:
        verdicts = part_verdicts(rows)
        with open(out / "parts.csv", "w", newline="") as handle:
            table = csv.DictWriter(handle, PART_COLUMNS)
            table.writeheader()
            table.writerows(verdicts)
        flagged = sum(v["is_anomalous"] is True for v in verdicts)
        unknown = sum(v["is_anomalous"] == "" for v in verdicts)
        said = (f"; {len(verdicts)} parts, {flagged} anomalous, {len(verdicts) - flagged - unknown} normal, {unknown} "
                f"without a verdict: {out / 'parts.csv'}")  # fmt: skip
    print(
        f"{args.category} ({_named(versions)}): {len(paths)} images, {anomalous} anomalous, "
        f"{len(paths) - anomalous - failed} normal, {failed} not judged; {out / 'inspections.csv'}{said}",
        flush=True,
    )
    return 1 if failed else 0
