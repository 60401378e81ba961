"""What ``POST /query`` and ``POST /query/batch`` answer."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SimilarNormal(BaseModel):
    image_id: int
    file_name: str
    split: str = Field(description="train (in the memory bank) or holdout (used to calibrate the threshold)")
    similarity: float = Field(description="cosine similarity of the image-level embeddings")


class NearestNormalPatch(BaseModel):
    image_id: int
    file_name: str
    row: int
    col: int
    patch_id: int


class AnomalousPatch(BaseModel):
    row: int = Field(description="row of the patch grid (0 at the top)")
    col: int = Field(description="column of the patch grid")
    x: int = Field(description="centre of the patch in the uploaded image, pixels from the left")
    y: int = Field(description="centre of the patch in the uploaded image, pixels from the top")
    view_x: int = Field(description="centre of the patch in the model's view (the anomaly map's pixels)")
    view_y: int
    distance: float = Field(description="distance to its nearest memory-bank patch")
    nearest_normal: NearestNormalPatch


class DefectRegion(BaseModel):
    box: list[int] = Field(
        description="left, top, right, bottom of the region in the uploaded image's pixels: the bounds of the patch "
        "cells it marks (right and bottom exclusive)"
    )
    box_in_view: list[int] = Field(description="the same box in the model's view (the anomaly map's pixels)")
    patches: int = Field(
        description="patch cells the region marks, each above the threshold: those whose 8 neighbours are above it "
        "too (its inside, not the ring its neighbours pooled from it), else all of it; its worst cell always"
    )
    share: float = Field(description="the cells it marks as a share of the view's cells")
    row: int = Field(description="the region's worst cell in the patch grid")
    col: int
    x: int = Field(description="centre of the worst cell in the uploaded image, pixels from the left")
    y: int
    distance: float = Field(description="the worst cell's distance to its nearest memory-bank patch")


class NearestDefect(BaseModel):
    defect_id: int = Field(description="the stored example: GET /defects/{id} shows it")
    defect_type: str
    file_name: str
    distance: float = Field(description="from one of the image's most anomalous patches to the example's nearest")
    similarity: float


class QueryResponse(BaseModel):
    inspection_id: int | None = Field(
        description="this answer's record in the inspection log (GET /inspections/{id}); null when it could not be "
        "written (the X-Inspection-Logged: false header says so too, and a metric counts it)"
    )
    category: str
    part: str | None = Field(default=None, description="the part as the request named it (null: not named)")
    model_id: int
    is_anomalous: bool = Field(description="anomaly_score above threshold (similarity below threshold_similarity)")
    anomaly_score: float
    p_value: float | None = Field(
        default=None,
        description="the share of good parts expected to score at least anomaly_score: a p-value against 'this part "
        "is good', read from the category's good scores (cross-fitted) as its threshold is set from them, so below the "
        "category's target false-alarm rate exactly when a threshold set at that rate per image (the default) calls "
        "the part anomalous; "
        "comparable across categories, whose scores are not (null: fewer than three good scores)",
    )
    similarity: float
    threshold: float
    threshold_similarity: float
    metric: str
    similar_normals: list[SimilarNormal]
    most_anomalous_patch: AnomalousPatch
    anomaly_map: str | None = Field(
        default=None,
        description="base64 PNG heatmap over the model's view (the whole image, or its centre crop, as the "
        "category's field of view says), view_width x view_height; 2 x threshold is full scale",
    )
    field_of_view: str = Field(description="whole (the image, aspect ratio kept) or crop (its centre square)")
    view_width: int = Field(description="width of the model's view in pixels (the anomaly map's width)")
    view_height: int
    view_box: list[float] = Field(
        description="where the view lies in the uploaded image: left, top, right, bottom in its pixels"
    )
    patch_size: int = Field(description="side of one patch grid cell in view pixels")
    search_backend: str = Field(
        description="where the patches were searched: 'database' (pgvector HNSW, then the worst patches exactly) or "
        "'exact' (every patch exactly in the API process); INSPECT_SEARCH_BACKEND (auto on a CPU: a large bank's first "
        "answers by each in turn, then by the one they found faster)"
    )
    search_device: str = Field(description="torch device of the API's part of the search (cpu, cuda:0, ...)")
    exact_searched_patches: int = Field(
        description="patches searched exactly after HNSW, worst-looking first, until none could be worse; at "
        "INSPECT_EXACT_RERANK the score may be an overestimate; with the exact backend, 0 (every patch was)"
    )
    defect_regions: list[DefectRegion] = Field(
        default_factory=list,
        description="where an anomalous part's patches lie above the threshold, grouped where they touch (corners "
        "too), each marking its inside, worst first; at least one for an anomalous part, none for a normal one",
    )
    defect_type: str | None = Field(
        default=None,
        description="the most likely known defect type of an anomalous image; null when it is normal, the library "
        "is empty, or no known defect is nearer to its most anomalous patches than the good ones are",
    )
    defect_confidence: float | None = Field(
        default=None, description="share of the image's most anomalous patches (up to 8) that voted for that type"
    )
    nearest_defects: list[NearestDefect] = Field(
        default_factory=list, description="the closest known defect examples (anomalous images only)"
    )
    notes: list[str] = Field(
        default_factory=list,
        description="what to know before acting on this answer, in words: an image enlarged to the model's view more "
        "than the category's good images were (a thumbnail of a part photographed larger) is judged from a blurred "
        "view, its score reflecting its size as well as the part; a grey file where every good image of the "
        "category has colour (or a colour image where every one is a grey file) is compared with parts it never saw "
        "so; a score the exact re-rank's cap (INSPECT_EXACT_RERANK) stopped before proving it may be too large, never "
        "too small",
    )
    timings_ms: dict[str, float]


class BatchPart(BaseModel):
    part: str
    views: int = Field(description="images of the part in this request")
    anomalous_views: int
    is_anomalous: bool = Field(description="any of its views here judged anomalous")
    p_value: float | None = Field(
        description="how rare the part is among good parts by its views here: their number times the rarest one's "
        "p_value, at most 1 (as GET /parts/{part} gives it over every view the log holds)"
    )


class QueryBatchResponse(BaseModel):
    answers: list[QueryResponse] = Field(description="one answer per file, in the order sent, each as POST /query's")
    parts: list[BatchPart] = Field(description="each part the request named, its views here judged together")
    timings_ms: dict[str, float] = Field(
        description="the request's: read (its files), decode (its images, decoded side by side), log (its records' "
        "one write), total; each answer has its own"
    )
