"""The one batching helper every model family uses: length-sorted batches, dynamic padding, order restored.

Sorting a chunk by length before cutting it into batches means each batch pads to a length close to that of its
own texts, so little compute is spent on padding. Callers write each batch's output back at the indices it came
from (``out[idx] = ...``), which restores input order without a second sort.
"""
from __future__ import annotations

from typing import Iterator, Sequence

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


def pad_batch(token_ids: Sequence[Sequence[int]], positions: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the token id lists at ``positions`` to their longest member.

    Returns ``(input_ids, attention_mask)`` as int64 arrays of shape ``(len(positions), longest)``.

    >>> ids, mask = pad_batch([[5, 6, 7], [8]], np.array([1, 0]), pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[8, 0, 0], [5, 6, 7]], [[1, 0, 0], [1, 1, 1]])
    """
    rows = [token_ids[i] for i in positions]
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        ids[j, :len(r)] = r
        mask[j, :len(r)] = 1
    return ids, mask
