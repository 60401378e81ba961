"""What the job checks before anything long runs: a fit of a large set takes many minutes, and a problem that a
look at the files could have shown must not surface at its end.

Checked: a category has the few good images a fit needs; every training and test file opens as an image of an
accepted format (its header: a file damaged further in is found when it is read, and then named); every image's
shape is one the field of view takes; every mask has its image's size; each category's report folder can be written;
for ``fit``, each category's name is one the store takes and the database answers.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

from patchcore.datasets.category import Category
from patchcore.errors import ImageError, ImageShapeError
from patchcore.images import FORMATS, header_size, upright_size
from patchcore.masks import mask_name, mask_size, scaled_alike
from patchcore.threshold import PER_IMAGE, PER_PART, PER_PART_NEEDS_VIEWS
from patchcore.views import Preprocess
from store.jobs import MIN_IMAGES
from store.names import name_problem

SHOWN = 20


def file_problems(category: Category, preprocess: Preprocess) -> list[str]:
    """One line per file that the job would fail on."""
    problems = []
    if len(category.train) < MIN_IMAGES:
        problems.append(
            f"{category.name}: {len(category.train)} good training image(s); a fit needs at least {MIN_IMAGES} (good "
            "scores of two memory-bank images and one held out set its threshold)"
            + (f"; {len(category.unread)} images lie in folders below the set's own, which are not read (as "
               f"{category.unread[0]})" if category.unread else "")
        )  # fmt: skip
    for path, mask in [(p, None) for p in category.train] + [(s.path, s.mask) for s in category.test]:
        try:  # a mask is drawn over the picture as it is shown, upright by its EXIF orientation, as the model sees it
            size = header_size(path) if mask is None else upright_size(path)
            preprocess.view(*size)
        except ImageShapeError as exc:
            problems.append(f"{path}: {exc}")
            continue
        except ImageError as exc:
            problems.append(str(exc))
            continue
        except Exception as exc:
            problems.append(f"{path}: not a readable {'/'.join(FORMATS)} image ({exc})")
            continue
        if mask is None:
            continue
        try:
            width, height = mask_size(mask)
        except ImageShapeError as exc:
            problems.append(str(exc))
            continue
        except Exception as exc:
            problems.append(f"{mask_name(mask)}: not a readable mask ({exc})")
            continue
        if not scaled_alike((width, height), size):
            problems.append(
                f"{mask_name(mask)}: the mask is {width}x{height}, its image {size[0]}x{size[1]}: not the image's "
                "shape at any scale"
            )
    return problems


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot take the report, or ``None``."""
    probe = folder / f".write-test-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{folder}: the report folder cannot be written ({exc})"
    return None


def database_problem() -> str | None:
    """Why the database cannot take a fitted model, or ``None``."""
    import psycopg

    from config import get_settings
    from store.database import database_url

    try:
        with psycopg.connect(database_url(get_settings()), connect_timeout=10) as connection:
            connection.execute("SELECT 1")
    except Exception as exc:
        return f"the database does not answer ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc})"
    return None


def check(categories: list[Category], preprocess: Preprocess, out: Path, store: bool, per: str = PER_IMAGE) -> None:
    """Raise ``ValueError`` listing every problem found (the first ``SHOWN``) before any work starts; ``per``: whose
    false-alarm rate the fit's target is (per part: each category needs training images that are views of one part)."""
    problems: list[str] = []
    for category in categories:
        problems += file_problems(category, preprocess)
        if per == PER_PART:
            views = Counter(category.parts[p] for p in category.train if p in category.parts)
            if max(views.values(), default=0) < 2:
                problems.append(f"{category.name}: {PER_PART_NEEDS_VIEWS} (--per part)")
        problem = folder_problem(out / category.name)
        if problem:
            problems.append(problem)
        problem = name_problem(category.name, "category") if store else None
        if problem:
            problems.append(f"{problem} (rename its folder, or fit with --folder and --category)")
    if store:
        problem = database_problem()
        if problem:
            problems.append(problem)
    if problems:
        raise refusal(problems, "fitting")


def refusal(problems: list[str], before: str) -> ValueError:
    """One error listing every problem found (the first ``SHOWN``) before ``before``, which was not done."""
    more = f"\n... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return ValueError(
        f"{len(problems)} problem(s) found before {before}, nothing was done:\n" + "\n".join(problems[:SHOWN]) + more
    )
