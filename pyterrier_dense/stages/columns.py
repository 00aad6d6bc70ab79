"""Input checks shared by every stage: each names the column, the row id and the value that is wrong."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["require_columns", "texts_of", "vectors_of"]


def require_columns(inp: pd.DataFrame, columns: Iterable[str], stage: str, hint: str = "") -> None:
    missing = [c for c in columns if c not in inp.columns]
    if missing:
        raise ValueError(f"{stage} needs column(s) {missing}; got {list(inp.columns)}" + (f". {hint}" if hint else ""))


def _row_id(inp: pd.DataFrame, i: int, id_columns: tuple[str, ...]) -> str:
    parts = [f"{c}={inp[c].iloc[i]!r}" for c in id_columns if c in inp.columns]
    return ", ".join(parts) if parts else f"row {i}"


def texts_of(inp: pd.DataFrame, column: str, id_columns: tuple[str, ...], stage: str) -> list[str]:
    """The values of ``column`` as a list of non-empty strings; otherwise an error naming the first bad row."""
    values = inp[column].tolist()
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            what = "empty" if isinstance(v, str) else f"a {type(v).__name__} ({v!r}), not a string"
            raise ValueError(f"{stage}: {column!r} of {_row_id(inp, i, id_columns)} is {what}")
    return values


def vectors_of(inp: pd.DataFrame, column: str, id_columns: tuple[str, ...], stage: str, dim: int | None = None) -> np.ndarray:
    """Stack ``column`` into a float32 matrix, rejecting ragged, wrong-sized and non-finite vectors by row."""
    values = inp[column].tolist()
    for i, v in enumerate(values):
        shape = np.shape(v)
        if len(shape) != 1 or (dim is not None and shape[0] != dim):
            want = f"{dim}-dimensional" if dim is not None else "one-dimensional"
            raise ValueError(f"{stage}: {column!r} of {_row_id(inp, i, id_columns)} has shape {shape}; expected a {want} vector")
    matrix = np.asarray(np.stack(values), dtype=np.float32) if values else np.empty((0, dim or 0), np.float32)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise ValueError(f"{stage}: {column!r} of {_row_id(inp, int(np.argmax(bad)), id_columns)} has NaN or infinite values")
    return matrix
