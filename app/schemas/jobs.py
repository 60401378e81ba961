"""Fit jobs: asked for, refitted, reported."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from store.names import NAME_MAX, NAME_PATTERN


class JobRequest(BaseModel):
    """A new product's fit: the category and the job's options (unset: the service's defaults)."""

    category: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX, description="new, or a new version")
    backbone: str | None = Field(default=None, description="torchvision network (default INSPECT_BACKBONE)")
    field_of_view: str | None = Field(default=None, description="whole (default) or crop")
    pixels: int | None = Field(default=None, ge=64 * 64, le=4096 * 4096, description="whole view's pixels (224x224)")
    tile: int | None = Field(
        default=None,
        ge=0,
        le=4096,
        description="whole view: features in square tiles of this many pixels (a multiple of 16, at least 64) where "
        "the view is larger, so a large view fits the worker's memory; 0: in one pass (the default)",
    )
    tile_overlap: int | None = Field(default=None, ge=0, le=4096, description="tiles' overlap in pixels (32)")
    coreset_ratio: float | None = Field(default=None, gt=0, le=1, description="memory bank fraction (0.1)")
    false_alarm_rate: float | None = Field(
        default=None, gt=0, lt=0.5, description="the threshold's target on good parts (INSPECT_FALSE_ALARM_RATE)"
    )
    per: Literal["image", "part"] | None = Field(
        default=None,
        description="whose false-alarm rate the target is: each image's (default), or each part's flagged on any view "
        "(needs parts of several views, PUT /jobs/{id}/parts)",
    )


class RefitRequest(BaseModel):
    exclude_image_ids: list[int] = Field(
        default_factory=list,
        max_length=10_000,
        description="good images of the category to leave out (GET /categories/{name} lists those that score highest)",
    )


class CareAreaSummary(BaseModel):
    width: int = Field(description="the mask's width as drawn (it is stretched over each picture)")
    height: int
    share: float = Field(description="the share of each picture inspected")


class Job(BaseModel):
    id: int
    category: str
    options: dict = Field(
        description="backbone, field_of_view, pixels, tile, tile_overlap, coreset_ratio, false_alarm_rate, per"
    )
    state: str = Field(description="draft (taking images), queued, running, succeeded, failed or cancelled")
    created_at: datetime
    created_by: str | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None = Field(description="the worker that took it (host-pid, or its --name)")
    attempts: int
    stage: str | None = Field(description="reading images, features, coreset, cross-fitted good scores, held out, …")
    stage_number: int | None
    stages: int | None
    done: int | None = Field(description="steps of the stage done")
    total: int | None
    unit: str | None = Field(description="img, patch or version")
    rate: float | None = Field(description="steps per second in this stage")
    progress_at: datetime | None = Field(description="when the worker last reported")
    cancel_requested: bool
    message: str | None = Field(description="why it failed or was cancelled, in the job's own words")
    model_id: int | None = Field(description="the version it made")
    refit_of: int | None = Field(
        default=None, description="the job whose images it was fitted from again (POST /categories/{name}/refit)"
    )
    excluded: list[str] = Field(default_factory=list, description="the images such a refit left out, by file name")
    normals: int = Field(default=0, description="good images added to the category since its fit that a refit took")
    images: int = Field(
        description="images it holds; a succeeded job keeps them, its category's training images for a refit, while "
        "its fit is kept (INSPECT_FITS_KEPT)"
    )
    bytes: int
    parts: int = Field(
        default=0,
        description="the parts its images are views of, where parts were named (PUT /jobs/{id}/parts); 0: each "
        "image is a part of its own",
    )
    care_area: CareAreaSummary | None = Field(
        default=None,
        description="the mask of where on each picture the part is inspected (PUT /jobs/{id}/care-area), which the "
        "fit and a refit of its category keep; null: all of each picture",
    )


class JobParts(BaseModel):
    """The part each of a draft job's images is one view of (a camera's views of one part, tiles of one image): the
    fit holds out and cross-fits whole parts, so that no good score is taken with another view of its part in the
    memory bank, as no new part's is. Images not named are each a part of their own."""

    parts: dict[str, str] = Field(
        max_length=100_000,
        description="file name (as the uploads' `added` lists it) -> part name (1 to 200 characters); replaces the "
        "parts named before, {} names none",
        examples=[{"part0007_cam1.png": "part0007", "part0007_cam2.png": "part0007"}],
    )


class JobImagesAdded(BaseModel):
    job: Job
    added: list[str] = Field(description="the images added, by name")
    duplicates: list[str] = Field(description="files whose content the job already held: not added again")
    ignored: list[str] = Field(description="members of zip archives that are not images: not added")
