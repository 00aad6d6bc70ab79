"""One epoch of training batches: each query with one judged positive and hard negatives sampled from its pool, every
document once per batch, and (with a teacher) the teacher's score of each (query, document) the batch holds."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .examples import TrainingSet, sample_negatives

__all__ = ["Batch", "make_batches"]


@dataclass
class Batch:
    """A step's queries and the distinct documents they drew.

    ``groups[i]`` holds the document columns of query ``i``: its positive first, then its hard negatives, padded
    with -1 when its pool held fewer. ``mask[i, j]`` is True where document ``j`` is another judged positive of query
    ``i`` (never scored as its negative). ``teacher[i, g]`` is the teacher's score of ``groups[i, g]`` (NaN on
    padding), or None without a teacher. ``qids[i]`` is query ``i``'s id."""
    queries: list[str]
    docnos: list[str]
    groups: np.ndarray
    mask: np.ndarray
    teacher: np.ndarray | None = None
    qids: list[str] | None = None

    @property
    def positives(self) -> np.ndarray:
        return self.groups[:, 0]

    def __len__(self) -> int:
        return len(self.queries)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The sampler of one epoch: the same batches for the same (seed, epoch), whether or not training resumed."""
    return np.random.default_rng([seed, epoch])


def make_batches(data: TrainingSet, batch_size: int, n_negatives: int, rng: np.random.Generator) -> list[Batch]:
    """One epoch of batches: queries shuffled, one positive drawn per query, ``n_negatives`` drawn from its pool;
    a document appears once per batch whatever the number of queries that drew it."""
    order = rng.permutation(len(data))
    width = 1 + n_negatives
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        column: dict[str, int] = {}
        groups = np.full((len(rows), width), -1, dtype=np.int64)
        teacher = None if data.teacher is None else np.full((len(rows), width), np.nan)
        for r, i in enumerate(rows):
            pos = data.positives[i][int(rng.integers(len(data.positives[i])))]
            drawn = [pos] + sample_negatives(data.negatives[i], n_negatives, rng)
            for g, d in enumerate(drawn):
                groups[r, g] = column.setdefault(d, len(column))
                if teacher is not None:
                    teacher[r, g] = data.teacher[i][d]
        mask = np.zeros((len(rows), len(column)), bool)
        for r, i in enumerate(rows):
            for d in data.positives[i]:
                c = column.get(d)
                if c is not None and c != groups[r, 0]:
                    mask[r, c] = True
        batches.append(Batch([data.queries[i] for i in rows], list(column), groups, mask, teacher,
                             [data.qids[i] for i in rows]))
    return batches
