"""New versions of a fitted category made without a refit (a threshold now; added normals and defects next)."""
