"""What teaching a category answers: normals and defects added, feedback."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
    notes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="added images enlarged to the model's view more than the good images before them were (a "
        "thumbnail), or grey files where every good image before them had colour (or the reverse), each with what POST "
        "/query notes of it: taught all the same, they teach the model their blur (or their colour) as good, and "
        "their scores join the good scores a recalibrated threshold is set from",
    )


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
