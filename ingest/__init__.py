"""The ingestion job and its commands: ``python -m ingest``."""

from patchcore.openmp import spin_briefly

spin_briefly()  # before anything imports torch: libgomp reads its spin count once
