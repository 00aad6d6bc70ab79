"""DenseIndexer: writes ``docno`` + ``doc_vec`` records into a dense index."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyterrier as pt

from ..indexes.dense_store import DenseIndexWriter
from .columns import ENCODER_ATTR, stack_vectors
from .progress import expect_total, progress_bar

__all__ = ["DenseIndexer"]

WRITE_CHUNK = 4096


def _report_truncation() -> None:
    """Encoders count truncated texts while indexing and report them once, here, at the end."""
    base = sys.modules.get("pyterrier_dense.models.encoder_base")
    if base is not None and hasattr(base, "report_pending_truncation"):
        base.report_pending_truncation()


class DenseIndexer(pt.Indexer):
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
                 lock_timeout: float | None = None):
        self.index_ref, self.mode, self.dtype, self.dim, self.lock_timeout = index, mode, dtype, dim, lock_timeout
        # a writer checks mode, dtype and dim without touching the disk: bad arguments fail now, before any work
        DenseIndexWriter(index.path, dim=dim, dtype=dtype, mode=mode)

    def index(self, iter):
        settings_from_frame = None
        if isinstance(iter, pd.DataFrame):
            settings_from_frame = iter.attrs.get(ENCODER_ATTR)
            iter = iter.to_dict(orient="records")
        elif isinstance(iter, (str, bytes, dict)):
            raise TypeError(f"index() takes an iterable of records (dicts with docno and doc_vec) or a DataFrame, "
                            f"not a {type(iter).__name__}")
        writer = DenseIndexWriter(self.index_ref.path, dim=self.dim, dtype=self.dtype, mode=self.mode,
                                  lock_timeout=self.lock_timeout)
        total = len(iter) if hasattr(iter, "__len__") else None
        # through enc >> indexer, PyTerrier hands us a generator of its own: a sized source announces its size
        with writer, progress_bar(desc="indexing", unit="doc", total=total) as bar, \
                expect_total(lambda n: _show_total(bar, n)):
            docnos, vecs, known, settings = [], [], False, None
            for i, record in enumerate(iter):
                if not isinstance(record, dict):
                    raise TypeError(f"record {i} is a {type(record).__name__}; index() takes dicts with docno and "
                                    "doc_vec (or a DataFrame)")
                if "docno" not in record or "doc_vec" not in record:
                    raise ValueError(f"DenseIndexer needs 'docno' and 'doc_vec' in every record; record {i} has "
                                     f"{sorted(record)}. Put an encoder first: (enc >> index.indexer()).index(docs)")
                s = record.get(ENCODER_ATTR, settings_from_frame)
                if not known:
                    writer.set_encoder(s)
                    settings, known = s, True
                elif s is not settings and s != settings:
                    raise ValueError(f"record {i} (docno {record['docno']!r}) was encoded by another encoder than "
                                     "the records before it; index one encoder's vectors at a time")
                docnos.append(record["docno"])
                vecs.append(record["doc_vec"])
                if len(docnos) == WRITE_CHUNK:
                    writer.add(docnos, _stack(docnos, vecs, writer.dim))
                    _advance(bar, len(docnos))
                    docnos, vecs = [], []
            if docnos:
                writer.add(docnos, _stack(docnos, vecs, writer.dim))
                _advance(bar, len(docnos))
        _report_truncation()
        return self.index_ref

    def __repr__(self) -> str:
        return f"{self.index_ref!r}.indexer(mode={self.mode!r})"


def _show_total(bar, total: int) -> None:
    if bar.total is None:
        bar.total = total
        bar.refresh()


def _advance(bar, n: int) -> None:
    """Count a written chunk. Per chunk, not per record: records come in bursts (an encoder's window at a time), and
    a bar moved by the first record of a burst would extrapolate the time left from it."""
    if bar.total is not None and bar.n + n > bar.total:   # more records than documents (passages)
        bar.total = None
    bar.update(n)


def _stack(docnos: list, vecs: list, dim: int | None) -> np.ndarray:
    """One numeric matrix of the chunk's vectors; a missing, empty, ragged or non-numeric vector names its docno."""
    return stack_vectors(vecs, dim, lambda i: f"the doc_vec of document {docnos[i]!r}")
