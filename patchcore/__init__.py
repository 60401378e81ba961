"""PatchCore (Roth et al., CVPR 2022) in pure torch: no database, no HTTP.

The data flows files -> :mod:`patchcore.images` (decoded) -> :mod:`patchcore.views` (the field of view) ->
:mod:`patchcore.features` -> :mod:`patchcore.coreset` -> :class:`patchcore.model.FittedModel`;
:mod:`patchcore.scoring` holds every scoring formula.
"""

from patchcore.errors import ImageError, PatchCoreError, WeightsError

__all__ = ["ImageError", "PatchCoreError", "WeightsError"]
