"""The one batching helper every model family uses: length-sorted batches, dynamic padding, order restored.

Sorting a chunk by length before cutting it into batches means each batch pads to a length close to that of its
own texts, so little compute is spent on padding. Callers write each batch's output back at the indices it came
from (``out[idx] = ...``), which restores input order without a second sort.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

__all__ = ["length_sorted_batches", "pad_batch"]


def length_sorted_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Yield arrays of positions into ``lengths``, longest first, ``batch_size`` at a time.

    Longest first makes an out-of-memory batch show up at the start of a job rather than at its end.

    >>> [b.tolist() for b in length_sorted_batches([3, 9, 1, 7], 2)]
    [[1, 3], [0, 2]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def pad_batch(columns: Mapping[str, Sequence[Sequence[int]]], positions: np.ndarray,
              pad_ids: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Pad the rows at ``positions`` of several aligned id lists (``input_ids``, ``token_type_ids``, ...) to the
    longest of those rows.

    Each column is padded with its value in ``pad_ids`` (0 for a column not named there). Returns every column plus
    ``attention_mask`` as int64 arrays of shape ``(len(positions), longest)``; padding goes on the right.

    >>> batch = pad_batch({"input_ids": [[5, 6, 7], [8]], "token_type_ids": [[0, 0, 1], [0]]}, np.array([1, 0]),
    ...                   pad_ids={"input_ids": 9})
    >>> {name: rows.tolist() for name, rows in batch.items()}
    {'input_ids': [[8, 9, 9], [5, 6, 7]], 'token_type_ids': [[0, 0, 0], [0, 0, 1]], 'attention_mask': [[1, 0, 0], [1, 1, 1]]}
    """
    pad_ids = pad_ids or {}
    first = next(iter(columns))
    lengths = [len(columns[first][i]) for i in positions]
    width = max(lengths)
    batch = {}
    for name, rows in columns.items():
        arr = np.full((len(lengths), width), pad_ids.get(name, 0), dtype=np.int64)
        for j, i in enumerate(positions):
            if len(rows[i]) != lengths[j]:
                raise ValueError(f"row {i} of {name!r} has {len(rows[i])} ids but {first!r} has {lengths[j]}")
            arr[j, :lengths[j]] = rows[i]
        batch[name] = arr
    batch["attention_mask"] = (np.arange(width) < np.array(lengths)[:, None]).astype(np.int64)
    return batch
