"""Errors a user can act on: each message names the file, tensor or option at fault."""


class PatchCoreError(Exception):
    """Base class, so callers (CLI, HTTP) can map every engine error to a clear message."""


class WeightsError(PatchCoreError):
    """The backbone weights are missing, incomplete or cannot be downloaded."""


class WeightsMismatch(WeightsError):
    """A readable state_dict whose tensors are not the backbone's: another network's weights (or too few layers)."""


class ImageError(PatchCoreError):
    """The input is not a readable image (empty, truncated, unknown format, too large)."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than allowed; raised from the header, before decoding."""


class ImageShapeError(ImageError):
    """The image's shape is outside what a field of view takes (an extreme aspect ratio); raised before resizing."""


SHOWN = 20  # the files one refusal names (each error names its file: a few hundred bytes)


def together(problems: list[ImageError]) -> ImageError:
    """One error for the files of a request that cannot be taken, each named (the first :data:`SHOWN`), of the first
    one's kind (the status a caller answers with): a request of many files is mended in one go, not one round trip
    per file."""
    if len(problems) == 1:
        return problems[0]
    more = f"; ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    listed = "; ".join(str(problem) for problem in problems[:SHOWN])
    return type(problems[0])(f"{len(problems)} files cannot be taken, nothing was added: {listed}{more}")
