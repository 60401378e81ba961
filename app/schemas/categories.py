"""A category: its summary and detail, its versions, its threshold changed or previewed, its deletion."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from patchcore.threshold import HIGHEST_SHOWN


class CategorySummary(BaseModel):
    name: str
    model_id: int = Field(description="the active version: a new fit or a new threshold makes a new one")
    memory_bank_segments: list[int] = Field(
        description="the versions whose patches make this version's memory bank: the fit, then each batch of added "
        "normals (SELECT ... FROM patches WHERE model_id IN (...))"
    )
    backbone: str
    embedding_dim: int
    metric: str
    threshold: float
    memory_bank_size: int
    fitted_at: str


class HighGoodScore(BaseModel):
    image_id: int = Field(description="GET /images/{image_id} shows it as the model saw it")
    file_name: str
    split: str = Field(description="train (scored against a coreset chosen without it), holdout or added")
    score: float = Field(description="its image score as an unseen part")
    above_threshold: bool = Field(description="as a new part it would be flagged: look for a defect, or a rare look")


class StoredVersion(BaseModel):
    model_id: int
    fit: int = Field(description="the fit it was made from: the version that owns its memory bank's first segment")
    fitted_at: str = Field(description="when that fit was stored")
    threshold: float
    threshold_policy: str | None = Field(description="how its threshold was set")
    memory_bank_size: int
    memory_bank_segments: list[int]
    defect_segments: int = Field(description="segments of known defects it reads")
    made_by: str | None = Field(description="the change that made it: fit, threshold, add_normals, add_defects...")
    actor: str | None
    made_at: str | None
    active: bool
    evaluation: dict = Field(
        description="how its evaluation judged, where measured: image_auroc, f1, recall, false_alarms of good_images "
        "(the labelled test split), predicted_false_alarm_rate (from good images the fit did not learn from)"
    )


class KeptFit(BaseModel):
    fit: int = Field(description="the version that owns the fit's memory bank")
    fitted_at: str
    answering: bool = Field(description="the active version is one of its versions")
    segment_bytes: int = Field(
        description="its versions' segments of patches on disk, HNSW indexes included (memory bank, added normals, "
        "known defects)"
    )
    image_file_bytes: int = Field(description="image files kept for a refit: its job's images, good images added")


class CategoryDetail(CategorySummary):
    settings: dict
    threshold_policy: dict = Field(
        description="how the threshold was set (false_alarm_rate, labelled_f1, manual or the former sigma_rule) and "
        "what the good scores say of it: estimated and observed false-alarm rates, how many good scores"
    )
    images: dict[str, int] = Field(description="good images per split: train, holdout, added (normals added later)")
    refit_images: int | None = Field(
        description="good images a refit would fit from (POST /categories/{name}/refit): the fit's training images, "
        "stored with its job, and those added since; null when it was fitted from files (refit with python -m ingest "
        "fit ... --exclude NAME)"
    )
    highest_good_scores: list[HighGoodScore] = Field(
        description=f"the {HIGHEST_SHOWN} good images that score highest as unseen parts, highest first: the tail that "
        "a threshold from good images rests on; a defective image in the good set, or a rare good look, shows here"
    )
    patches: int
    coverage_radius: float | None = Field(
        description="the fit's coreset radius: an added normal's patch this close to the bank is already covered"
    )
    defect_library: list[dict] = Field(description="known defect examples, newest first: GET /defects/{id}")
    evaluation: dict
    timings: dict
    changes: list[dict] = Field(description="who made which version and how, newest first")
    versions: list[StoredVersion] = Field(
        description="the stored versions of the kept fits (the current one and those in service most recently "
        "before it: INSPECT_FITS_KEPT), newest first: each can be made active again (PUT "
        "/categories/{name}/active-version), a refit undone so"
    )
    fits: list[KeptFit] = Field(
        description="the kept fits (INSPECT_FITS_KEPT), the one answering first: what each keeps on disk"
    )
    plots: list[str] = Field(description="evaluation plots drawn by the fit: GET /categories/{name}/plots/{plot}")


class ThresholdRequest(BaseModel):
    """Exactly one of the two."""

    value: float | None = Field(default=None, gt=0, description="the threshold itself")
    false_alarm_rate: float | None = Field(
        default=None, gt=0, lt=0.5, description="the threshold at this expected false-alarm rate on good parts"
    )
    per: Literal["image", "part"] = Field(
        default="image",
        description="whose false-alarm rate: each image's, or each part's flagged on any view (a set whose parts "
        "were photographed several times: threshold_policy.per_part)",
    )

    @model_validator(mode="after")
    def _one(self) -> ThresholdRequest:
        if (self.value is None) == (self.false_alarm_rate is None):
            raise ValueError("give exactly one of value or false_alarm_rate")
        return self


class VersionRequest(BaseModel):
    model_id: int = Field(description="a stored version of the category (GET /categories/{name}, versions)")


class VersionReactivated(BaseModel):
    category: str
    model_id: int = Field(description="the version active now")
    previous_model_id: int
    threshold: float
    previous_threshold: float
    memory_bank_size: int


class ThresholdChange(BaseModel):
    category: str
    model_id: int = Field(description="the new version")
    previous_model_id: int
    threshold: float
    previous_threshold: float
    threshold_policy: dict


class ThresholdOnLog(BaseModel):
    """The line's own recent answers judged at the threshold previewed, beside the active one: each counted by its
    score, where a version of the active version's memory bank answered it (a threshold set makes such a version;
    normals added or a refit do not, and their answers scored otherwise)."""

    hours: float = Field(description="the window: the answers of the last this many hours")
    answered: int = Field(description="answers in the window by versions of the active version's memory bank")
    flagged: int = Field(description="of them, above the threshold previewed")
    flagged_now: int = Field(description="of them, above the active threshold")
    reviewed_good: int = Field(description="of them, found good by a review")
    good_flagged: int = Field(description="found good and above the threshold previewed: false alarms it would raise")
    good_flagged_now: int = Field(description="found good and above the active threshold")
    reviewed_defective: int = Field(description="of them, found defective by a review")
    defects_passed: int = Field(
        description="found defective and at or below the threshold previewed: defects it lets by"
    )
    defects_passed_now: int = Field(description="found defective and at or below the active threshold")
    parts: int = Field(
        description="the parts the answers show: the views of a part the queries named (those in the window) count "
        "as one, an answer naming none as its own"
    )
    parts_flagged: int = Field(description="of them, with a view above the threshold previewed: rejected on any view")
    parts_flagged_now: int = Field(description="of them, with a view above the active threshold")
    other_banks: int = Field(
        description="answers in the window by the same fit's versions with other memory-bank rows (images taught "
        "since, or before), left out: they were scored against other rows"
    )


class ThresholdPreview(BaseModel):
    category: str
    model_id: int = Field(description="the active version the threshold was judged on (nothing was written)")
    threshold: float
    current_threshold: float
    threshold_policy: dict = Field(description="as the version would state it: the false-alarm rate it predicts")
    evaluation: dict = Field(
        description="the stored evaluation judged at this threshold: F1, recall, false alarms, "
        "defect regions (where the fit kept its test images cell by cell)"
    )
    log: ThresholdOnLog = Field(description="the inspection log's recent answers judged at it")


class FitRetired(BaseModel):
    category: str
    fit: int = Field(description="the fit retired: its memory bank, versions and job images went")
    versions: int = Field(description="its versions deleted (one another fit's version reads, known defects, stays)")


class CategoryDeleted(BaseModel):
    category: str
    model_id: int | None = Field(description="the version that was active (none when finishing a deletion cut short)")
    versions: int = Field(description="versions deleted, with their memory banks")
    images: int = Field(description="good image records of those versions")
    patches: int = Field(description="memory bank patches")
    defect_examples: int
    jobs: int = Field(description="fit jobs of the category deleted with their images (none may be queued or running)")
    files: int = Field(description="stored image files: the jobs' and those of good images added since")
    file_bytes: int
