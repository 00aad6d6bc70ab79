"""The loop every indexer stage shares: take records (or a DataFrame), check them, pass the encoder's settings to the
writer, write in chunks with a progress bar, report deferred truncations at the end."""
from __future__ import annotations

import sys

import pandas as pd
import pyterrier as pt

from .columns import ENCODER_ATTR
from .progress import expect_total, progress_bar

__all__ = ["RecordIndexer", "WRITE_CHUNK"]

WRITE_CHUNK = 4096


def _report_truncation() -> None:
    """Encoders count truncated texts while indexing and report them once, here, at the end."""
    base = sys.modules.get("pyterrier_dense.models.encoder_base")
    if base is not None and hasattr(base, "report_pending_truncation"):
        base.report_pending_truncation()


class RecordIndexer(pt.Indexer):
    """Base of the indexer stages. A subclass names the column it stores (``VALUE``) and defines ``_writer()`` (a
    context manager with ``set_encoder``) and ``_add(writer, records)``."""

    VALUE = "doc_vec"
    WRITE_CHUNK = WRITE_CHUNK   # records written at once
    ENCODER_HINT = "(enc >> index.indexer()).index(docs)"

    def _writer(self):
        raise NotImplementedError

    def _add(self, writer, records: list[dict]) -> None:
        raise NotImplementedError

    def index(self, iter):
        settings_from_frame = None
        if isinstance(iter, pd.DataFrame):
            settings_from_frame = iter.attrs.get(ENCODER_ATTR)
            iter = iter.to_dict(orient="records")
        elif isinstance(iter, (str, bytes, dict)):
            raise TypeError(f"index() takes an iterable of records (dicts with docno and {self.VALUE}) or a "
                            f"DataFrame, not a {type(iter).__name__}")
        writer = self._writer()
        total = len(iter) if hasattr(iter, "__len__") else None
        # through enc >> indexer, PyTerrier hands us a generator of its own: a sized source announces its size
        with writer, progress_bar(desc="indexing", unit="doc", total=total) as bar, \
                expect_total(lambda n: _show_total(bar, n)):
            chunk, known, settings = [], False, None
            for i, record in enumerate(iter):
                if not isinstance(record, dict):
                    raise TypeError(f"record {i} is a {type(record).__name__}; index() takes dicts with docno and "
                                    f"{self.VALUE} (or a DataFrame)")
                if "docno" not in record or self.VALUE not in record:
                    raise ValueError(f"{type(self).__name__} needs 'docno' and {self.VALUE!r} in every record; record "
                                     f"{i} has {sorted(record)}. Put an encoder first: {self.ENCODER_HINT}")
                s = record.get(ENCODER_ATTR, settings_from_frame)
                if not known:
                    writer.set_encoder(s)
                    settings, known = s, True
                elif s is not settings and s != settings:
                    raise ValueError(f"record {i} (docno {record['docno']!r}) was encoded by another encoder than "
                                     "the records before it; index one encoder's vectors at a time")
                chunk.append(record)
                if len(chunk) == self.WRITE_CHUNK:
                    self._add(writer, chunk)
                    _advance(bar, len(chunk))
                    chunk = []
            if chunk:
                self._add(writer, chunk)
                _advance(bar, len(chunk))
        _report_truncation()
        return self.index_ref


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
