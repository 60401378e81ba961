"""The inspection log: a record, a page of them, a part's verdict over its views, a review."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.schemas.inspection import DefectRegion


class InspectionRecord(BaseModel):
    id: int
    at: str
    request_id: str
    category: str
    model_id: int = Field(description="the version that judged it")
    is_anomalous: bool
    score: float
    p_value: float | None = Field(
        default=None,
        description="the answer's p_value: the share of good parts expected to score as high, comparable across "
        "categories (null: fewer than three good scores, or a record from before p-values were kept)",
    )
    threshold: float
    defect_type: str | None
    sha256: str
    bytes: int
    format: str
    width: int
    height: int
    api_key: str | None = Field(description="the name of the key that asked (null when the service is open)")
    part: str | None = Field(default=None, description="the part the query named (null: none)")
    file_name: str | None = Field(default=None, description="the upload's file name, as sent (null: none)")
    latency_ms: float
    stages_ms: dict[str, float]
    defect_regions: list[DefectRegion] | None = Field(
        default=None,
        description="the answer's defect regions, as it gave them (empty for a normal answer; null for records "
        "written before regions were kept)",
    )
    notes: list[str] | None = Field(
        default=None,
        description="the answer's notes, as it gave them: what to know before acting on it (empty: none; null for "
        "records written before notes were kept)",
    )
    image_kind: str = Field(description="what was kept of the image: none, thumbnail or full")
    image_kept: bool = Field(description="false once deleted after the retention period (the record stays)")
    image_url: str | None = None
    patch_scores_kept: bool = Field(
        default=False, description="whether the record keeps the answer's patch distances (from migration 0026 on)"
    )
    heatmap_url: str | None = Field(
        default=None,
        description="its heatmap: the answer's own where its patch distances are kept (over the kept image, or "
        "alone once the image is gone), else the kept image judged again; null when neither can be: no image kept "
        "and no distances, or only distances of a version retired since (the view it drew them on went with it)",
    )
    reviewed_at: str | None = Field(default=None, description="when a person reviewed it (null: not yet)")
    reviewed_by: str | None = Field(default=None, description="who: the API key's name, or the address")
    review_label: str | None = Field(default=None, description="what the part really was: good, or a defect type")
    review_model_id: int | None = Field(
        default=None, description="the version the review taught (feedback), null when it was only recorded"
    )


class PartSummary(BaseModel):
    part: str
    is_anomalous: bool = Field(
        description="any view of the part judged anomalous: the verdict of a line that rejects a part on any flagged "
        "view (its threshold's per_part says how often that flags a good part)"
    )
    views: int = Field(description="images of the part the log holds (in the category asked, or in all)")
    anomalous_views: int
    reviewed_views: int = Field(description="views a person has reviewed")
    reviewed_defective_views: int = Field(description="views a person found defective (a defect type, not good)")
    is_defective_as_reviewed: bool = Field(
        description="any view defective, each view a person reviewed counted as they said (a flagged view found good "
        "no longer rejects the part, a defect the service missed does) and every other as the service judged it"
    )
    defective_views_as_reviewed: int = Field(description="the views that verdict counts as defective")
    categories: list[str] = Field(description="the categories its views were judged in")
    first_at: str
    last_at: str
    p_value: float | None = Field(
        description="how rare the part is among good parts, at most: the share of good parts expected to show a view "
        "as rare as its rarest, bounded by its views times that view's p_value (at most 1; right whatever the views "
        "share and wherever they were judged, exact for one view); null where a view has no p_value"
    )


class PartVerdict(PartSummary):
    inspections: list[InspectionRecord] = Field(description="its views' records, newest first, at most limit")


class PartListed(PartSummary):
    last_id: int = Field(description="the id of its newest view in the window")


class PartPage(BaseModel):
    parts: list[PartListed]
    next_before: int | None = Field(description="pass as before= for the next (older) page; null at the end")


class ReviewRequest(BaseModel):
    label: str = Field(description="what the part really was: good, or the defect type it shows")


class InspectionPage(BaseModel):
    inspections: list[InspectionRecord]
    next_before: int | None = Field(description="pass as before= for the next (older) page; null at the end")
