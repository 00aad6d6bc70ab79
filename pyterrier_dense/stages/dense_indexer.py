"""DenseIndexer: writes ``docno`` + ``doc_vec`` records into a DenseIndex."""
from __future__ import annotations

import numpy as np
import pyterrier as pt

from ..indexes.dense_index import DenseIndex, DenseIndexWriter

__all__ = ["DenseIndexer"]

WRITE_CHUNK = 4096


class DenseIndexer(pt.Indexer):
    """``(enc >> index.indexer()).index(docs)`` encodes and stores; records that already carry ``doc_vec`` are
    stored as they are (``index.indexer().index(records)``). Returns the finished :class:`DenseIndex`.

    Memory does not grow with the corpus: records are written in chunks as they arrive. The index appears at its
    path only when complete; an error or Ctrl-C leaves no index (or the previous one with ``mode="overwrite"`` or
    ``"append"``). ``mode="append"`` adds documents to an existing index without re-encoding what it holds::

        (enc >> index.indexer(mode="append")).index(new_docs)   # same result as indexing everything at once
    """

    def __init__(self, index: DenseIndex, *, mode: str = "error", dtype: str | None = None, encoder=None):
        self.index_ref, self.mode, self.dtype, self.encoder = index, mode, dtype, encoder

    def bind_encoder(self, encoder) -> "DenseIndexer":
        """A copy that records the encoder's settings in the manifest (called by ``BiEncoder.__rshift__``)."""
        return DenseIndexer(self.index_ref, mode=self.mode, dtype=self.dtype, encoder=encoder)

    def index(self, iter) -> DenseIndex:
        settings = self.encoder.model.settings() if self.encoder is not None else None
        with DenseIndexWriter(self.index_ref.path, dtype=self.dtype, mode=self.mode, encoder=settings) as writer:
            docnos, vecs = [], []
            for i, record in enumerate(pt.tqdm(iter, desc="indexing", unit="doc")):
                if "docno" not in record or "doc_vec" not in record:
                    raise ValueError(f"DenseIndexer needs 'docno' and 'doc_vec' in every record; record {i} has "
                                     f"{sorted(record)}. Put an encoder first: (enc >> index.indexer()).index(docs)")
                docnos.append(record["docno"])
                vecs.append(record["doc_vec"])
                if len(docnos) == WRITE_CHUNK:
                    writer.add(docnos, np.stack(vecs))
                    docnos, vecs = [], []
            if docnos:
                writer.add(docnos, np.stack(vecs))
        if self.encoder is not None:
            self.encoder.model.report_truncation("doc")
        return DenseIndex(self.index_ref.path)

    def __repr__(self) -> str:
        return f"{self.index_ref!r}.indexer(mode={self.mode!r})"
