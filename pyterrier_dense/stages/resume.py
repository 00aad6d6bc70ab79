"""How a resumed build skips the documents it already has, before they are encoded.

An indexer that resumes a partial build (:class:`~pyterrier_dense.indexes.shards.ShardStore`) opens
:func:`resuming` around its loop. PyTerrier's ``Compose.index`` hands the indexer a generator that encodes the
documents batch by batch as the indexer pulls them, in the indexer's thread and context; so the first of our
encoders to see a batch inside that context calls :func:`skip_resumed` and drops the leading documents the partial
build already holds -- they are never encoded. The indexer drops whatever still arrives of them (records given with
their vectors, or an encoder of another package) with :meth:`ResumePoint.drop`. Either way each dropped document's
docno is checked against the one recorded in its place: different documents are an error, never a silent mix.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator

import pandas as pd

__all__ = ["ResumePoint", "resuming", "skip_resumed"]


class ResumePoint:
    """The first ``done`` documents of the input are in the partial build; ``skipped`` of them were dropped so far
    (before encoding, or by the indexer)."""

    def __init__(self, store):
        self.store, self.done, self.skipped = store, store.done, 0
        self._skipper: int | None = None

    def _check(self, docno, i: int) -> None:
        expected = self.store.docno(i)
        if docno != expected:
            raise ValueError(f"document {i} of the input has docno {docno!r}, but the interrupted build being resumed "
                             f"({self.store.dir}) has {expected!r} there: the documents differ. Index them from the "
                             "start with index.indexer(resume=False)")

    def take(self, docnos: list, who) -> int:
        """How many of these leading docnos are done (checked and counted as skipped), for the stage ``who``: only
        the first stage that asks skips anything."""
        if self.skipped >= self.done:
            return 0
        if self._skipper is None:
            self._skipper = id(who)
        elif self._skipper != id(who):
            return 0
        n = min(self.done - self.skipped, len(docnos))
        for j in range(n):
            self._check(docnos[j], self.skipped + j)
        self.skipped += n
        return n

    def drop(self, docno) -> bool:
        """Whether the indexer should drop this record (a done document that reached it); checks its docno."""
        if self.skipped >= self.done:
            return False
        self._check(docno, self.skipped)
        self.skipped += 1
        return True


_RESUMING: ContextVar[ResumePoint | None] = ContextVar("pyterrier_dense_resuming", default=None)


@contextlib.contextmanager
def resuming(store) -> Iterator[ResumePoint]:
    point = ResumePoint(store)
    token = _RESUMING.set(point if point.done else None)
    try:
        yield point
    finally:
        _RESUMING.reset(token)


def skip_resumed(inp, stage):
    """``inp`` (a DataFrame, or a list of records on PyTerrier's indexing path) without its leading documents that
    the build being resumed already holds: document encoders call it before encoding. Outside a resumed build it
    returns ``inp`` unchanged."""
    point = _RESUMING.get()
    if point is None or not len(inp):
        return inp
    if isinstance(inp, pd.DataFrame):
        if "docno" not in inp.columns:
            return inp
        n = point.take(inp["docno"].tolist(), stage)
        return inp.iloc[n:] if n else inp
    docnos = [r.get("docno") if isinstance(r, dict) else None for r in inp]
    if None in docnos:
        return inp
    return inp[point.take(docnos, stage):]
