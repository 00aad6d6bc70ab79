"""The loop every indexer stage shares: take records (or a DataFrame), check them, pass the encoder's settings to the
writer, write in chunks with a progress bar, keep completed shards so that an interrupted build resumes
(:mod:`~pyterrier_dense.indexes.shards`, :mod:`~pyterrier_dense.stages.resume`), report deferred truncations at the
end."""
from __future__ import annotations

import contextlib
import json
import sys

import pandas as pd
import pyterrier as pt

from ..indexes.shards import ShardStore
from .columns import record_encoder
from .progress import expect_total, log, progress_bar
from .resume import resuming

__all__ = ["RecordIndexer", "WRITE_CHUNK", "SHARD_SIZE"]

WRITE_CHUNK = 4096
SHARD_SIZE = 10_000   # records a shard of a resumable build: what an interrupted build may have to encode again


def _report_truncation() -> None:
    """Encoders count truncated texts while indexing and report them once, here, at the end."""
    base = sys.modules.get("pyterrier_dense.models.encoder_base")
    if base is not None and hasattr(base, "report_pending_truncation"):
        base.report_pending_truncation()


class RecordIndexer(pt.Indexer):
    """Base of the indexer stages. A subclass names the column it stores (``VALUE``, and ``EXTRA`` columns its
    writer reads), defines ``_writer()`` (a context manager with ``set_encoder``) and ``_add(writer, records)``, and
    calls :meth:`_resumable` from its constructor.

    Builds are resumable: the records are also kept in completed shards of ``shard_size`` beside the index until it
    is published, and a build interrupted (Ctrl-C, a crash, a killed job) then run again with the same documents
    and options encodes only what comes after its last completed shard, and publishes the same index as an
    uninterrupted build. ``resume=False`` discards such a partial build and keeps none."""

    VALUE = "doc_vec"
    EXTRA: tuple[str, ...] = ()
    WRITE_CHUNK = WRITE_CHUNK   # records written at once
    ENCODER_HINT = "(enc >> index.indexer()).index(docs)"

    def _resumable(self, resume: bool, shard_size: int) -> None:
        if not isinstance(resume, bool):
            raise ValueError(f"resume must be True or False, got {resume!r}")
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be an int >= 1 (documents a shard), got {shard_size!r}")
        self.resume, self.shard_size = resume, shard_size

    @property
    def VALUES(self) -> tuple[str, ...]:
        """The columns this indexer stores: ``VALUE``, or several where an index holds several representations."""
        return (self.VALUE,)

    def _settings(self, holder: dict, default=None):
        """The settings of the encoder behind the stored column, from a record or a frame's ``attrs``."""
        return record_encoder(holder, self.VALUE, default)

    def _writer(self):
        raise NotImplementedError

    def _add(self, writer, records: list[dict]) -> None:
        raise NotImplementedError

    def _shard_record(self, record: dict) -> dict:
        """What a shard keeps of a record: the docno and the columns the writer reads."""
        return {k: record[k] for k in ("docno", *self.VALUES, *self.EXTRA) if k in record}

    def _store(self, writer) -> ShardStore:
        """The partial build of this index for these options (and the generation an append extends)."""
        build = getattr(writer, "_build", None)
        base = build.current.generation if build is not None and build.current is not None else None
        options = {k: v for k, v in vars(self).items()
                   if k not in ("index_ref", "lock_timeout", "resume") and not k.startswith("_")}
        if isinstance(options.get("options"), dict):
            options["options"] = {k: v for k, v in options["options"].items() if k != "lock_timeout"}
        key = {"indexer": type(self).__name__, "options": options, "extends": base}
        return ShardStore(self.index_ref.path, key, self.shard_size)

    def index(self, iter):
        settings_from_frame = None
        if isinstance(iter, pd.DataFrame):
            settings_from_frame = self._settings(iter.attrs)
            iter = iter.to_dict(orient="records")
        elif isinstance(iter, (str, bytes, dict)):
            raise TypeError(f"index() takes an iterable of records (dicts with docno and {self.VALUE}) or a "
                            f"DataFrame, not a {type(iter).__name__}")
        writer = self._writer()
        total = len(iter) if hasattr(iter, "__len__") else None
        # through enc >> indexer, PyTerrier hands us a generator of its own: a sized source announces its size
        with writer, progress_bar(desc="indexing", unit="doc", total=total) as bar, \
                expect_total(lambda n: _show_total(bar, n)):
            store = self._store(writer) if getattr(self.index_ref, "path", None) is not None else None
            if store is not None and not self.resume:
                store.discard()
                store = None
            try:
                self._write(writer, store, iter, settings_from_frame, bar)
            except BaseException:
                if store is not None:
                    store.close()   # its completed shards stay for the next run
                raise
        if store is not None:
            store.discard()         # published: nothing left to resume
        _report_truncation()
        return self.index_ref

    def _write(self, writer, store, records, settings_from_frame, bar) -> None:
        known, settings = False, None
        if store is not None and store.open():
            log.warning("resuming the interrupted build of %s: %d documents are done (in %d shards), only the "
                        "ones after them are encoded", self.index_ref.path, store.done, len(store.shards))
            writer.set_encoder(store.encoder)
            settings, known = store.encoder, True
            for chunk in store.records():
                self._add(writer, chunk)
                _advance(bar, len(chunk))
        # with shards, a chunk never outgrows one: each shard is completed as soon as its last record arrives
        flush_at = self.WRITE_CHUNK if store is None else min(self.WRITE_CHUNK, self.shard_size)
        with resuming(store) if store is not None else _no_resume() as point:
            chunk, live = [], 0
            for i, record in enumerate(records):
                if not isinstance(record, dict):
                    raise TypeError(f"record {i} is a {type(record).__name__}; index() takes dicts with docno and "
                                    f"{self.VALUE} (or a DataFrame)")
                if "docno" not in record or any(v not in record for v in self.VALUES):
                    needs = " and ".join(repr(v) for v in self.VALUES)
                    raise ValueError(f"{type(self).__name__} needs 'docno' and {needs} in every record; "
                                     f"record {i} has {sorted(record)}. Put an encoder first: {self.ENCODER_HINT}")
                if point is not None and point.drop(record["docno"]):
                    continue
                live += 1
                s = self._settings(record, settings_from_frame)
                if not known:
                    writer.set_encoder(s)
                    if store is not None:
                        store.set_encoder(s)
                    settings, known = s, True
                elif s is not settings and s != settings and _as_json(s) != _as_json(settings):
                    if store is not None and store.done and live == 1:
                        raise ValueError(f"the interrupted build of {self.index_ref.path} being resumed was made "
                                         "by another encoder configuration; index from the start with "
                                         "index.indexer(resume=False)")
                    raise ValueError(f"record {i} (docno {record['docno']!r}) was encoded by another encoder than "
                                     "the records before it; index one encoder's vectors at a time")
                chunk.append(record)
                if len(chunk) == flush_at:
                    self._flush(writer, store, chunk, bar)
                    chunk = []
            if chunk:
                self._flush(writer, store, chunk, bar)
        if store is not None:
            store.finish()

    def _flush(self, writer, store, chunk: list[dict], bar) -> None:
        self._add(writer, chunk)           # checked and written first: a bad record fails before it is kept
        if store is not None:
            store.add([self._shard_record(r) for r in chunk])
        _advance(bar, len(chunk))


def _as_json(settings):
    """Settings as a partial build keeps them (through JSON: tuples become lists), for comparison."""
    return json.loads(json.dumps(settings, default=str))


@contextlib.contextmanager
def _no_resume():
    yield None


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
