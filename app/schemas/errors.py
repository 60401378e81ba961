"""The error answer every route documents."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Error(BaseModel):
    error: str = Field(description="machine-readable error code")
    detail: str = Field(description="what went wrong and what to do about it")
