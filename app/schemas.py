"""The JSON shapes of the API, as ``GET /docs`` shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from patchcore.threshold import HIGHEST_SHOWN
from store.names import NAME_MAX, NAME_PATTERN


class Error(BaseModel):
    error: str = Field(description="machine-readable error code")
    detail: str = Field(description="what went wrong and what to do about it")


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
        description="left, top, right, bottom of the region in the uploaded image's pixels: the bounds of its patch "
        "cells (right and bottom exclusive)"
    )
    box_in_view: list[int] = Field(description="the same box in the model's view (the anomaly map's pixels)")
    patches: int = Field(description="patch cells of the region, each above the threshold")
    share: float = Field(description="the region's cells as a share of the view's cells")
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
        "too), worst first; at least one for an anomalous part, none for a normal one",
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
    threshold: float
    threshold_policy: str | None = Field(description="how its threshold was set")
    memory_bank_size: int
    memory_bank_segments: list[int]
    defect_segments: int = Field(description="segments of known defects it reads")
    made_by: str | None = Field(description="the change that made it: fit, threshold, add_normals, add_defects...")
    actor: str | None
    made_at: str | None
    active: bool


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
        description="the stored versions of the current fit, newest first: each can be made active again "
        "(PUT /categories/{name}/active-version)"
    )
    plots: list[str] = Field(description="evaluation plots drawn by the fit: GET /categories/{name}/plots/{plot}")


class DriftHour(BaseModel):
    hour: str = Field(description="the hour's start, UTC")
    inspections: int
    flagged: int
    flagged_share: float


class DriftPartHour(BaseModel):
    hour: str = Field(description="the hour's start, UTC (of each part's last view)")
    parts: int
    flagged: int
    flagged_share: float


class DriftReviews(BaseModel):
    """What the window's reviews say of the false-alarm rate itself (see ``serving/drift.py``): the line's defects
    apart, the share of good parts flagged."""

    flagged: int = Field(description="answers flagged in the window")
    flagged_reviewed: int = Field(description="of them, reviewed")
    flagged_found_good: int = Field(description="of those, found good: false alarms")
    passed: int = Field(description="answers passed in the window")
    passed_reviewed: int = Field(description="of them, reviewed")
    passed_found_defective: int = Field(description="of those, found defective: defects the service missed")
    false_alarm_rate: float | None = Field(
        description="the share of good parts flagged, estimated from the reviews (each verdict's reviewed answers "
        "taken as a sample of its answers; passes as good where none is reviewed); null while no flagged answer is "
        "reviewed"
    )
    interval: list[float] | None = Field(description="its 90% interval; null with the estimate")
    warning: bool = Field(description="the predicted false-alarm rate is outside the interval")


class DriftParts(BaseModel):
    """The parts the line named in the window, each flagged when any of its views was."""

    predicted_false_alarm_rate: float | None = Field(
        description="the share of good parts flagged on any view the threshold predicts (its per_part); null where "
        "the good images are one view each"
    )
    parts: int = Field(description="parts named by this version's answers in the window")
    flagged: int = Field(description="of them, flagged on any view")
    flagged_share: float
    interval: list[float] = Field(description="90% Clopper-Pearson interval of the flagged share")
    warning: bool = Field(description="the predicted rate is outside the interval")
    hours: list[DriftPartHour]
    reviews: DriftReviews | None = Field(
        default=None,
        description="what the window's reviews say of the share of good parts flagged on any view, counted in parts "
        "(a flagged part reviewed when every flagged view is, found good when no view is found defective; a passed "
        "part reviewed when every view is); null until a named part is reviewed",
    )


class DriftBody(BaseModel):
    """Where the passed parts' scores lie against the good parts' (see ``serving/drift.py``): a shift of the whole
    line shows here before the flagged share moves."""

    passed: int = Field(description="passed answers of the window")
    above_good_median: int = Field(description="of them, scoring above the median of the version's good scores")
    share: float
    expected_share: float = Field(
        description="the share a calibrated line gives: (0.5 - r) / (1 - r), r the predicted false-alarm rate"
    )
    interval: list[float] = Field(description="90% Clopper-Pearson interval of the share")
    warning: bool = Field(description="the expected share is outside the interval: the passed parts score unlike good")


class DriftReport(BaseModel):
    """The active version's recent answers against its calibration (see ``serving/drift.py``)."""

    category: str
    model_id: int
    threshold: float
    window_hours: float = Field(description="the recent window, INSPECT_DRIFT_HOURS")
    predicted_false_alarm_rate: float | None = Field(
        description="the share of good parts the threshold is expected to flag, from the version's good scores"
    )
    inspections: int = Field(description="answers of this version in the window")
    flagged: int
    flagged_share: float | None
    interval: list[float] | None = Field(description="90% Clopper-Pearson interval of the flagged share")
    warning: bool = Field(
        description="the predicted false-alarm rate is outside the interval: more (or fewer) parts flagged than good "
        "parts would be; read it beside the line's own defect rate"
    )
    hours: list[DriftHour]
    parts: DriftParts | None = Field(
        default=None, description="the same per part, where the line names parts (part on /query); null where none"
    )
    reviews: DriftReviews | None = Field(
        default=None, description="the false-alarm rate as the window's reviews say; null while none is reviewed"
    )
    body: DriftBody | None = Field(
        default=None,
        description="where the passed answers' scores lie against the good scores' median, beside a calibrated "
        "line's share (the whole line's shift, before the flagged share shows it); null without a predicted rate or a "
        "passed answer",
    )
    scores: list[float] = Field(description="recent answers' scores, newest first (at most 5,000)")
    good_scores: list[float] = Field(description="the good scores the threshold was set from")


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


class NormalsAdded(BaseModel):
    category: str
    model_id: int = Field(description="the new version (the same one when every image was already known)")
    previous_model_id: int
    images_added: list[str]
    duplicates: list[str] = Field(description="files already in the memory bank (same sha256): nothing added")
    candidate_patches: int = Field(description="patches of the added images")
    patches_added: int = Field(description="of those, the ones the bank did not cover (farther than its radius)")
    memory_bank_size: int
    threshold: float
    previous_threshold: float
    recalibrated: bool
    scores: dict[str, float] = Field(description="each added image's score against the new bank without itself")
    seconds: dict[str, float]


class DefectsAdded(BaseModel):
    category: str
    model_id: int
    previous_model_id: int
    added: list[dict] = Field(description="file name, defect type, cells kept and where they came from")
    skipped: list[str] = Field(description="examples already in the library (same file)")
    defect_patches: int
    seconds: dict[str, float] = Field(default_factory=dict)


class FeedbackResult(BaseModel):
    label: str
    taught: str = Field(description="normal (the image joined the memory bank's images) or defect (the library)")
    result: dict
    reviewed: bool = Field(default=False, description="the inspection it came from is recorded as reviewed")


class Health(BaseModel):
    status: str
    auth: str = Field(description="keys (API keys required) or open (no key configured: anyone may do anything)")
    warning: str | None = None


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
    image_kind: str = Field(description="what was kept of the image: none, thumbnail or full")
    image_kept: bool = Field(description="false once deleted after the retention period (the record stays)")
    image_url: str | None = None
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


class StandbyState(BaseModel):
    name: str = Field(description="standby-N, N its place in DATABASE_REPLICA_URLS")
    address: str = Field(description="host (or socket folder), port and database; no credentials")
    in_rotation: bool = Field(description="whether searches go to it now")
    why_out: str | None = Field(description="why it is out of rotation (unreachable, lagging, ...)")
    lag_seconds: float | None = Field(description="how long ago the primary wrote the oldest WAL it has not replayed")
    answered: int = Field(description="searches and memory-bank reads it answered (this process)")
    skipped: dict[str, int] = Field(description="searches it did not answer, by reason: behind, failed, busy")


class Ready(BaseModel):
    status: str = Field(
        description="ready (200); loading (503): the server answers, but loads its categories since it started, "
        "each one not loaded yet by its first query; not_ready (503): no fitted category, or no database"
    )
    database: bool
    categories: list[str] = Field(
        description="the categories with an active version (the loaded ones while the database is down)"
    )
    loaded: list[str] = Field(
        default_factory=list,
        description="those this server holds in memory: they answer without reading their memory bank first",
    )
    loading: list[str] = Field(
        default_factory=list, description="those this server loads since it started and holds not yet"
    )
    standbys: list[StandbyState] = Field(default_factory=list, description="empty without DATABASE_REPLICA_URLS")


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
        description="images it holds; a succeeded job keeps them, its category's training images for a refit, until "
        "the category's next fit"
    )
    bytes: int
    parts: int = Field(
        default=0,
        description="the parts its images are views of, where parts were named (PUT /jobs/{id}/parts); 0: each "
        "image is a part of its own",
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
