"""DenseIndexer: writes ``docno`` + ``doc_vec`` records into a dense index."""
from __future__ import annotations

import numpy as np

from ..indexes.dense_store import DenseIndexWriter
from .columns import stack_vectors
from .record_indexer import SHARD_SIZE, RecordIndexer

__all__ = ["DenseIndexer"]


class DenseIndexer(RecordIndexer):
    """``(enc >> index.indexer()).index(docs)`` encodes and stores; records that already carry ``doc_vec`` are
    stored as they are (``index.indexer().index(records)``, or a DataFrame). Returns the finished index.

    The encoder's settings travel with the vectors (a key of each record the encoder emits, or the frame's
    ``attrs``), so the manifest records them whatever the pipeline (``pt.text.sliding(...) >> enc >> indexer``
    included). Memory does not grow with the corpus: records are written in chunks as they arrive. The new
    generation appears only when complete; an error or Ctrl-C leaves the index as it was.
    ``mode="append"`` adds documents without re-encoding what the index holds::

        (enc >> index.indexer(mode="append")).index(new_docs)   # same result as indexing everything at once
    """

    def __init__(self, index, *, mode: str = "error", dtype: str | None = None, dim: int | None = None,
                 lock_timeout: float | None = None, resume: bool = True, shard_size: int = SHARD_SIZE):
        self.index_ref, self.mode, self.dtype, self.dim, self.lock_timeout = index, mode, dtype, dim, lock_timeout
        self._resumable(resume, shard_size)
        # a writer checks mode, dtype and dim without touching the disk: bad arguments fail now, before any work
        DenseIndexWriter(index.path, dim=dim, dtype=dtype, mode=mode)

    def _writer(self) -> DenseIndexWriter:
        return DenseIndexWriter(self.index_ref.path, dim=self.dim, dtype=self.dtype, mode=self.mode,
                                lock_timeout=self.lock_timeout)

    def _add(self, writer: DenseIndexWriter, records: list[dict]) -> None:
        docnos = [r["docno"] for r in records]
        writer.add(docnos, _stack(docnos, [r["doc_vec"] for r in records], writer.dim))

    def __repr__(self) -> str:
        return f"{self.index_ref!r}.indexer(mode={self.mode!r})"


def _stack(docnos: list, vecs: list, dim: int | None) -> np.ndarray:
    """One numeric matrix of the chunk's vectors; a missing, empty, ragged or non-numeric vector names its docno."""
    return stack_vectors(vecs, dim, lambda i: f"the doc_vec of document {docnos[i]!r}")
