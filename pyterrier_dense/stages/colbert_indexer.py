"""ColBERTIndexer: writes ``docno`` + ``doc_embs`` (token matrices) records into a ColBERT index."""
from __future__ import annotations

import numpy as np

from ..indexes.token_store import TokenIndexWriter
from .progress import show_progress
from .record_indexer import SHARD_SIZE, RecordIndexer

__all__ = ["ColBERTIndexer"]


class ColBERTIndexer(RecordIndexer):
    """``(colbert >> index.indexer()).index(docs)`` encodes and stores every document's token vectors; records that
    already carry ``doc_embs`` (a (tokens, dim) matrix each, optionally ``doc_token_ids``) are stored as they are.
    Memory does not grow with the collection; the new generation appears only when complete."""

    VALUE = "doc_embs"
    EXTRA = ("doc_token_ids",)
    WRITE_CHUNK = 256   # token matrices are big: a chunk of 256 documents is ~20 MB of float16 at 384 dims
    ENCODER_HINT = "(colbert >> index.indexer()).index(docs)"

    def __init__(self, index, *, storage: str | None, nbits: int | None, ncentroids: int | None, mode: str,
                 lock_timeout: float | None, seed: int, resume: bool = True, shard_size: int = SHARD_SIZE):
        self.index_ref = index
        self._resumable(resume, shard_size)
        self.options = dict(storage=storage, nbits=nbits, ncentroids=ncentroids, mode=mode,
                            lock_timeout=lock_timeout, seed=seed)
        TokenIndexWriter(index.path, **self.options)   # bad arguments fail now, before any work

    def _writer(self) -> TokenIndexWriter:
        return TokenIndexWriter(self.index_ref.path, progress=show_progress(), **self.options)

    def _shard_record(self, record: dict) -> dict:
        """The writer stores token vectors as float16 (its first step), so a shard keeps them so: half the bytes,
        the same index."""
        out = super()._shard_record(record)
        out["doc_embs"] = np.asarray(out["doc_embs"]).astype(np.float16)
        return out

    def _add(self, writer: TokenIndexWriter, records: list[dict]) -> None:
        ids = [r.get("doc_token_ids") for r in records]
        if any(i is None for i in ids) and not all(i is None for i in ids):
            missing = next(r["docno"] for r, i in zip(records, ids) if i is None)
            raise ValueError(f"document {missing!r} has no doc_token_ids, unlike others; give every record token ids "
                             "or none")
        writer.add([r["docno"] for r in records], [r["doc_embs"] for r in records],
                   None if all(i is None for i in ids) else ids)

    def __repr__(self) -> str:
        return f"{self.index_ref!r}.indexer(storage={self.options['storage'] or 'float16'!r}, mode={self.options['mode']!r})"
