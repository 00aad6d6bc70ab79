"""SparseIndexer: writes ``docno`` + ``toks`` ({term: weight}) records into a sparse index."""
from __future__ import annotations

from ..indexes.sparse_store import SparseIndexWriter
from .record_indexer import SHARD_SIZE, RecordIndexer

__all__ = ["SparseIndexer"]


class SparseIndexer(RecordIndexer):
    """``(splade.doc_encoder() >> index.indexer()).index(docs)`` stores every document's term weights; records that
    already carry ``toks`` are stored as they are. Memory holds the term dictionary and one chunk; the new
    generation appears only when complete."""

    VALUE = "toks"
    ENCODER_HINT = "(splade.doc_encoder() >> index.indexer()).index(docs)"

    def __init__(self, index, *, mode: str, lock_timeout: float | None, resume: bool = True,
                 shard_size: int = SHARD_SIZE):
        self.index_ref = index
        self._resumable(resume, shard_size)
        self.options = dict(mode=mode, lock_timeout=lock_timeout)
        SparseIndexWriter(index.path, **self.options)   # bad arguments fail now, before any work

    def _writer(self) -> SparseIndexWriter:
        return SparseIndexWriter(self.index_ref.path, **self.options)

    def _add(self, writer: SparseIndexWriter, records: list[dict]) -> None:
        writer.add([r["docno"] for r in records], [r["toks"] for r in records])

    def __repr__(self) -> str:
        return f"{self.index_ref!r}.indexer(mode={self.options['mode']!r})"
