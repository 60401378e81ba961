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
