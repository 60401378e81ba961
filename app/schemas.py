"""The JSON shapes of the API, as ``GET /docs`` shows them."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
    x: int = Field(description="centre of the patch in the cropped model input, pixels")
    y: int
    distance: float = Field(description="distance to its nearest memory-bank patch")
    nearest_normal: NearestNormalPatch


class QueryResponse(BaseModel):
    category: str
    model_id: int
    is_anomalous: bool = Field(description="anomaly_score above threshold (similarity below threshold_similarity)")
    anomaly_score: float
    similarity: float
    threshold: float
    threshold_similarity: float
    metric: str
    similar_normals: list[SimilarNormal]
    most_anomalous_patch: AnomalousPatch
    anomaly_map: str | None = Field(
        default=None, description="base64 PNG heatmap over the centre crop; 2 x threshold is full scale"
    )
    anomaly_map_size: int | None = None
    exact_searched_patches: int = Field(
        description="patches searched exactly after HNSW, worst-looking first, until none could be worse; at "
        "INSPECT_EXACT_RERANK the score may be an overestimate"
    )
    timings_ms: dict[str, float]


class CategorySummary(BaseModel):
    name: str
    model_id: int
    backbone: str
    embedding_dim: int
    metric: str
    threshold: float
    memory_bank_size: int
    fitted_at: str


class CategoryDetail(CategorySummary):
    settings: dict
    images: dict[str, int]
    patches: int
    evaluation: dict
    timings: dict


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    database: bool
    categories: list[str]
