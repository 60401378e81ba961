"""What a care area inspects of a picture's patch grid (``POST /care-area/cells``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CareCells(BaseModel):
    rows: int = Field(description="the patch grid's rows for a picture of this size at this view")
    cols: int
    cell: list[float] = Field(description="one cell's width and height in the picture's pixels")
    inspected: int = Field(description="cells inspected: at least half of each lies in the mask stretched over them")
    share: float = Field(description="their share of the grid: what a fit with this area learns and scores")
    cells: list[str] = Field(description="the grid row by row, 1 for an inspected cell and 0 for one left out")
