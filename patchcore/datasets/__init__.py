"""Where the images are: a public set as it ships, or a plain folder of good images, read into a
:class:`~patchcore.datasets.category.Category`, each set told by what it holds rather than by its name.

- :mod:`~patchcore.datasets.mvtec`: a ``--data`` root, the MVTec AD layout as the public sets vary it (MVTec AD, MPDD,
  VisA as anomalib prepares it, BTAD, MVTec AD 2, MVTec 3D-AD, MVTec LOCO AD), and the sets that ship otherwise,
  each read by its own module: :mod:`~patchcore.datasets.visa`, :mod:`~patchcore.datasets.realiad`,
  :mod:`~patchcore.datasets.kolektor` (both KolektorSDDs), :mod:`~patchcore.datasets.dagm` (DAGM 2007),
  :mod:`~patchcore.datasets.mtd` (Magnetic Tile Defect), :mod:`~patchcore.datasets.aitex` (AITEX, a category per
  fabric);
- :mod:`~patchcore.datasets.folders`: a folder of good images, with a folder of rejects where a factory has one;
- :mod:`~patchcore.datasets.category`: what a set is read into, and the user's choices on it (images excluded,
  parts named, good test parts held out); :mod:`~patchcore.datasets.copies`: files with the same bytes as one
  picture; :mod:`~patchcore.datasets.files`: what every reader needs (image files in order, masks by stem).
"""
