"""Input checks shared by every stage: each names the column, the row id and the value that is wrong.

Column presence goes through ``pt.validate`` (so PyTerrier's tooling sees the same rule); the error raised is both
PyTerrier's ``InputValidationError`` and a ``ValueError`` whose message says what is missing and what to do.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import pyterrier as pt

__all__ = ["query_groups", "matrices_of", "check_frame_encoder", "stored_rows", "ENCODER_ATTR", "ColumnsError", "require_columns", "texts_of", "vectors_of", "stack_vectors", "check_num_results",
           "encoder_of", "ENCODERS_ATTR", "stamp", "stamp_records", "record_encoder"]

# The settings of the encoder that made a frame's vectors travel with the data: in ``DataFrame.attrs`` for frames,
# and under this key in each record on the indexing path (records have no attrs).
ENCODER_ATTR = "pyterrier_dense.encoder"
# The same per representation column ({column: settings}): a frame can carry several encoders' columns (a dense and a
# sparse query representation for a hybrid search), and each index checks the encoder of the column it reads.
ENCODERS_ATTR = "pyterrier_dense.encoders"


class ColumnsError(pt.validate.InputValidationError, ValueError):
    """A stage's input lacks columns it needs."""

    def __str__(self) -> str:
        return self.args[0]


def require_columns(inp: pd.DataFrame, columns: Iterable[str], stage: str, hint: str = "") -> None:
    try:
        pt.validate.columns(inp, includes=list(columns))
    except pt.validate.InputValidationError as e:
        missing = [c for c in columns if c not in inp.columns]
        raise ColumnsError(f"{stage} needs column(s) {missing}; got {list(inp.columns)}" + (f". {hint}" if hint else ""),
                           e.modes) from None


def check_num_results(value, name: str = "num_results") -> int:
    """An int >= 1 (not a bool, a float or a string), checked when the stage is made, not at query time."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def encoder_of(inp: pd.DataFrame, column: str | None = None) -> dict | None:
    """The settings of the encoder that made this frame's ``column`` (or its last encoder's), when the frame
    carries them."""
    return _encoder(inp.attrs, column)


def record_encoder(record: dict, column: str, default: dict | None = None) -> dict | None:
    """The settings of the encoder that made a record's ``column`` (records carry them as frames do in attrs)."""
    return _encoder(record, column, default)


def _encoder(holder: dict, column: str | None, default: dict | None = None) -> dict | None:
    by_column = holder.get(ENCODERS_ATTR)
    if column is not None and by_column is not None:
        return by_column.get(column, default)
    return holder.get(ENCODER_ATTR, default)


def stamp(frame: pd.DataFrame, settings: dict, *columns: str) -> pd.DataFrame:
    """The frame, carrying the settings of the encoder that made ``columns`` in ``attrs`` for index stages to check
    (the columns of other encoders before it keep theirs)."""
    frame.attrs[ENCODER_ATTR] = settings
    frame.attrs[ENCODERS_ATTR] = {**frame.attrs.get(ENCODERS_ATTR, {}), **dict.fromkeys(columns, settings)}
    return frame


def stamp_records(records: list[dict], settings: dict, values: dict[str, list]) -> list[dict]:
    """The records with ``values`` (``{column: one value per record}``) added and stamped as :func:`stamp` does."""
    names = list(values)
    out = []
    for i, r in enumerate(records):
        out.append({**r, **{c: values[c][i] for c in names}, ENCODER_ATTR: settings,
                    ENCODERS_ATTR: {**r.get(ENCODERS_ATTR, {}), **dict.fromkeys(names, settings)}})
    return out


def check_frame_encoder(index, inp: pd.DataFrame, snapshot, check: bool, column: str) -> None:
    """When the frame carries the settings of the encoder that made ``column`` (and ``check``), the index must
    accept them."""
    settings = encoder_of(inp, column)
    if check and settings is not None:
        index.check_encoder(settings, snapshot)


def stored_rows(inp: pd.DataFrame, snapshot, stage: str) -> np.ndarray:
    """The index rows of the frame's ``docno`` values; docnos the index lacks are an error naming them."""
    rows = snapshot.docnos.rows_of(inp["docno"].to_numpy())
    if (rows < 0).any():
        missing = inp["docno"].to_numpy()[rows < 0]
        raise ValueError(f"{stage}: {len(missing)} docno(s) are not in {snapshot.path}, e.g. {list(missing[:5])}")
    return rows


def query_groups(inp: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first row of each distinct qid (in order of first appearance) and, for each, the positions of its rows."""
    codes, _ = pd.factorize(inp["qid"])
    first = np.unique(codes, return_index=True)[1]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(first) + 1))
    return first, [order[bounds[q]:bounds[q + 1]] for q in range(len(first))]


def _row_id(inp: pd.DataFrame, i: int, id_columns: tuple[str, ...]) -> str:
    parts = [f"{c}={inp[c].iloc[i]!r}" for c in id_columns if c in inp.columns]
    return ", ".join(parts) if parts else f"row {i}"


def texts_of(inp: pd.DataFrame, column: str, id_columns: tuple[str, ...], stage: str) -> list[str]:
    """The values of ``column`` as a list of non-empty strings; otherwise an error naming the first bad row."""
    values = inp[column].tolist()
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            what = "empty" if isinstance(v, str) else f"a {type(v).__name__} ({v!r}), not a string"
            hint = "" if column == "query" or not isinstance(v, str) else \
                " (leave documents with no text out of the corpus, as ptd.Collection.corpus_iter() does)"
            raise ValueError(f"{stage}: {column!r} of {_row_id(inp, i, id_columns)} is {what}{hint}")
    return values


def vector_problem(v, dim: int | None) -> str | None:
    """Why ``v`` is not a usable vector (None if it is)."""
    if v is None:
        return "is None"
    arr = v if isinstance(v, np.ndarray) else np.asarray(v, dtype=object) if not np.isscalar(v) else None
    if arr is None or arr.ndim != 1:
        return f"has shape {np.shape(v)}; expected a one-dimensional vector"
    if arr.dtype.kind not in "fiu":
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            return f"holds non-numeric values ({arr.dtype})"
    if len(arr) == 0:
        return "is empty (0 dimensions)"
    if dim is not None and len(arr) != dim:
        return f"has {len(arr)} dimensions; expected a {dim}-dimensional vector"
    return None


def stack_vectors(values: list, dim: int | None, name_of) -> np.ndarray:
    """Stack ``values`` into one numeric matrix (dtype kept; object arrays of numbers become float64). A missing,
    empty, ragged, wrong-sized or non-numeric vector is an error that starts with ``name_of(row)``."""
    try:
        matrix = np.stack(values)
        if matrix.dtype.kind not in "fiub":
            matrix = matrix.astype(np.float64)
        if matrix.ndim == 2 and matrix.shape[1] > 0 and (dim is None or matrix.shape[1] == dim):
            return matrix
    except (TypeError, ValueError):
        pass
    want = dim if dim is not None else (np.shape(values[0])[0] if np.ndim(values[0]) == 1 else None)
    for i, v in enumerate(values):
        problem = vector_problem(v, want)
        if problem:
            raise ValueError(f"{name_of(i)} {problem}")
    raise ValueError(f"{name_of(0)}: the vectors do not form one matrix")


def vectors_of(inp: pd.DataFrame, column: str, id_columns: tuple[str, ...], stage: str, dim: int | None = None) -> np.ndarray:
    """Stack ``column`` into a float32 matrix, rejecting missing, ragged, wrong-sized, non-numeric and non-finite
    vectors by row."""
    values = inp[column].tolist()
    if not values:
        return np.empty((0, dim or 0), np.float32)
    name_of = lambda i: f"{stage}: {column!r} of {_row_id(inp, i, id_columns)}"
    with np.errstate(over="ignore", invalid="ignore"):
        matrix = np.asarray(stack_vectors(values, dim, name_of), dtype=np.float32)
        bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise ValueError(f"{name_of(int(np.argmax(bad)))} has NaN or infinite values")
    return matrix


def matrices_of(inp: pd.DataFrame, column: str, id_columns: tuple[str, ...], stage: str, dim: int | None = None) -> list[np.ndarray]:
    """The values of ``column`` as float32 (rows, dim) matrices with at least one row; a missing, empty, wrongly
    shaped, non-numeric or non-finite matrix is an error naming its row."""
    out = []
    for i, v in enumerate(inp[column].tolist()):
        name = f"{stage}: {column!r} of {_row_id(inp, i, id_columns)}"
        try:
            m = np.asarray(v, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{name} holds non-numeric values") from None
        if m.ndim != 2:
            raise ValueError(f"{name} has shape {m.shape}; expected a (tokens, dim) matrix")
        if len(m) == 0:
            raise ValueError(f"{name} has no vectors (an empty query: nothing to score with)")
        if dim is not None and m.shape[1] != dim:
            raise ValueError(f"{name} has {m.shape[1]}-dimensional vectors; expected {dim}")
        if not np.isfinite(m).all():
            raise ValueError(f"{name} has NaN or infinite values")
        out.append(m)
    return out
