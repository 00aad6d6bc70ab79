"""Learned sparse representations on disk ({term: weight} per document), without PyTerrier: one pinned generation to
read (:class:`SparseSnapshot`) and a writer that streams documents' ``toks`` into a new one (:class:`SparseIndexWriter`).

A generation holds, beside the docnos::

    terms.bin, terms.off    the term strings (UTF-8, int64 offsets), in term-id order (the order first seen)
    fwd.off                 int64 (count + 1): document j's postings are [off[j], off[j+1]) of the two files below
    fwd.terms.i4            int32 term ids, ascending within a document     (re-scoring: ``index.scorer()``)
    fwd.weights.f4          float32 weights
    inv.off                 int64 (terms + 1): term t's postings are [off[t], off[t+1]) of the two files below
    inv.docs.i4             int32 document rows, ascending within a term     (retrieval)
    inv.weights.f4          float32 weights
    inv.max.f4              float32 (terms,): each term's largest weight (the bound dynamic pruning needs)

Documents stream into the forward files; once the stream ends, the inverted file is built from them in two passes
over bounded blocks with positioned writes, so memory holds the term dictionary and one block, whatever the
collection. An append copies the stored forward files (checksums verified) and keeps the term ids, so an append
equals a build over all documents, file for file.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .docnos import DATA_FILE, OFFSETS_FILE, DocnoWriter, Docnos
from .storage import CorruptIndexError, IndexBuild, IndexReader, map_array, open_reader
from .token_ivf import doc_blocks
from .vector_index import encoder_differences

__all__ = ["SparseSnapshot", "SparseIndexWriter", "open_sparse", "check_toks", "TYPE", "FORMAT", "QUERY_SIDE_KEYS"]

TYPE, FORMAT = "sparse_index", "pyterrier_dense"
BLOCK_POSTINGS = 1 << 22   # postings handled at once when the inverted file is built
# encoder settings that change only query weights: the documents of an index do not depend on them
QUERY_SIDE_KEYS = ("query_length", "query_top_k")


def check_toks(toks, name: str) -> tuple[list[str], np.ndarray]:
    """Terms and float64 weights of one ``{term: weight}`` dict, zero weights dropped; an error starting with
    ``name`` for anything else than non-empty string terms with finite, non-negative weights, at least one > 0."""
    if not isinstance(toks, dict):
        raise ValueError(f"{name} is a {type(toks).__name__}, not a {{term: weight}} dict")
    terms = list(toks)
    try:
        weights = np.fromiter(toks.values(), dtype=np.float64, count=len(terms))
    except (TypeError, ValueError):
        bad = next(t for t, w in toks.items() if not _is_number(w))
        raise ValueError(f"{name} gives term {bad!r} the weight {toks[bad]!r}, which is not a number") from None
    for t in terms:
        if not isinstance(t, str) or not t:
            raise ValueError(f"{name} has the term {t!r}: terms must be non-empty strings")
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} gives term {terms[i]!r} the weight {float(weights[i])!r}: weights must be finite and >= 0")
    keep = weights > 0
    if not keep.any():
        what = "is empty" if not terms else "has only zero weights"
        raise ValueError(f"{name} {what}: nothing to index or search with")
    if not keep.all():
        terms = [t for t, k in zip(terms, keep.tolist()) if k]
        weights = weights[keep]
    return terms, weights


def _is_number(w) -> bool:
    try:
        float(w)
        return not isinstance(w, (str, bytes, bool))
    except (TypeError, ValueError):
        return False


class SparseSnapshot:
    """One generation of a sparse index, pinned for this object's life."""

    def __init__(self, reader: IndexReader):
        self.reader, self.manifest = reader, reader.meta
        m = self.manifest
        self.path, self.count, self.nterms, self.postings = reader.path, m["count"], m["terms"], m["postings"]
        self.dim = self.nterms
        files = m["files"]
        expect = {"fwd.off": 8 * (self.count + 1), OFFSETS_FILE: 8 * (self.count + 1),
                  "terms.off": 8 * (self.nterms + 1), "inv.off": 8 * (self.nterms + 1), "inv.max.f4": 4 * self.nterms,
                  "fwd.terms.i4": 4 * self.postings, "fwd.weights.f4": 4 * self.postings,
                  "inv.docs.i4": 4 * self.postings, "inv.weights.f4": 4 * self.postings}
        for name, size in expect.items():
            if files.get(name, {}).get("bytes") != size:
                raise CorruptIndexError(f"{self.path}: {name} takes {files.get(name, {}).get('bytes')} bytes, but "
                                        f"{self.count} documents, {self.nterms} terms and {self.postings} postings "
                                        f"need {size}")
        if DATA_FILE not in files or "terms.bin" not in files:
            raise CorruptIndexError(f"{self.path}: the docnos or term strings are missing")
        self._maps: dict[str, np.ndarray] = {}
        self._term_index: pd.Index | None = None

    def _map(self, name: str, dtype) -> np.ndarray:
        if name not in self._maps:
            self._maps[name] = map_array(self.reader, name, dtype)
        return self._maps[name]

    @property
    def encoder_settings(self) -> dict | None:
        return self.manifest.get("encoder")

    @property
    def docnos(self) -> Docnos:
        return Docnos.of(self.reader)

    @property
    def forward(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(offsets, term_ids, weights)`` by document."""
        return self._map("fwd.off", np.int64), self._map("fwd.terms.i4", np.int32), self._map("fwd.weights.f4", np.float32)

    @property
    def inverted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(offsets, docs, weights, max_weight)`` by term."""
        return (self._map("inv.off", np.int64), self._map("inv.docs.i4", np.int32),
                self._map("inv.weights.f4", np.float32), self._map("inv.max.f4", np.float32))

    @property
    def terms(self) -> np.ndarray:
        """Term strings by term id (object array)."""
        return _read_strings(self._map("terms.bin", np.uint8), self._map("terms.off", np.int64))

    def term_ids(self, terms) -> np.ndarray:
        """The term ids of ``terms`` (-1 for a term the index does not hold)."""
        if self._term_index is None:
            self._term_index = pd.Index(self.terms, copy=False)
        return self._term_index.get_indexer(pd.Index(np.asarray(terms, dtype=object)))

    def verify(self) -> None:
        self.reader.verify()


def _read_strings(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    raw = data.tobytes()
    bounds = offsets.tolist()
    out = np.empty(len(bounds) - 1, dtype=object)
    out[:] = [raw[a:b].decode("utf-8", "surrogatepass") for a, b in zip(bounds[:-1], bounds[1:])]
    return out


def open_sparse(path: str | os.PathLike) -> SparseSnapshot:
    """Pin the current generation of the sparse index at ``path`` (shared within the process)."""
    return open_reader(path, TYPE, FORMAT).snapshot(SparseSnapshot)


class SparseIndexWriter:
    """Streams (docnos, ``{term: weight}`` dicts) into a new generation of the index at ``path``; publishes
    atomically on clean exit. ``mode`` as for the dense index: ``"error"``, ``"overwrite"`` or ``"append"`` (the
    stored documents are copied, not re-encoded; the encoder settings must be those of the index).

    Example::

        with SparseIndexWriter("x.splade") as w:
            w.add(["d1", "d2"], [{"gene": 1.5, "cell": 0.25}, {"protein": 2.0}])
    """

    def __init__(self, path: str | os.PathLike, *, mode: str = "error", encoder: dict | None = None,
                 lock_timeout: float | None = None):
        self.encoder, self._encoder_known = encoder, encoder is not None
        self._build = IndexBuild(path, artifact_type=TYPE, artifact_format=FORMAT, mode=mode,
                                 lock_timeout=lock_timeout)
        self.path = self._build.path
        self._ids: dict[str, int] = {}
        self._entered = False

    def set_encoder(self, encoder: dict | None) -> None:
        """The settings of the encoder that made the weights, known only once the first records arrive."""
        if self._entered and self._build.current is not None:
            self._check_appendable(self._build.current.meta, encoder)
        self.encoder, self._encoder_known = encoder, True

    def _check_appendable(self, m: dict, encoder: dict | None) -> None:
        stored = m.get("encoder")
        if (stored is None) != (encoder is None):
            made, how = (("by an encoder", 'splade.doc_encoder() >> index.indexer(mode="append")') if stored else
                         ("from weights given directly", "records that carry toks"))
            raise ValueError(f"{self.path} was built {made}; append the same way ({how})")
        keys = tuple(k for k in (stored or {}) if k not in ("model",) + QUERY_SIDE_KEYS)
        diffs = encoder_differences(stored, encoder or {}, keys)
        if diffs:
            raise ValueError(f"cannot append to {self.path}: it was built with another encoder configuration "
                             f"({'; '.join(diffs)})")

    def __enter__(self) -> "SparseIndexWriter":
        self._build.__enter__()
        self._entered = True
        try:
            b = self._build
            self._docnos = DocnoWriter(b)
            self._off = b.array_writer("fwd.off", "int64", ())
            self._terms = b.array_writer("fwd.terms.i4", "int32", ())
            self._weights = b.array_writer("fwd.weights.f4", "float32", ())
            self._end = 0
            current = b.current
            if current is None:
                self._off.append(np.zeros(1, np.int64))
            else:
                self._check_appendable(current.meta, self.encoder if self._encoder_known else current.meta.get("encoder"))
                base = current.snapshot(SparseSnapshot)
                self._ids = {t: i for i, t in enumerate(base.terms.tolist())}
                offsets = base.forward[0]
                self._off.append(np.asarray(offsets))
                self._end = int(offsets[-1])
                b.copy_current("fwd.terms.i4", self._terms)
                b.copy_current("fwd.weights.f4", self._weights)
                self._docnos.copy_current(current)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def add(self, docnos: list, toks: list) -> None:
        """Add documents; ``toks[i]`` is document ``docnos[i]``'s ``{term: weight}`` dict (weights > 0 are kept;
        an empty or all-zero dict, a negative or non-finite weight, a term that is not a non-empty string is an error
        naming the docno). Weights are stored as float32."""
        if len(toks) != len(docnos):
            raise ValueError(f"got {len(docnos)} docnos and {len(toks)} toks")
        ids, weights, lengths = [], [], np.empty(len(docnos), np.int64)
        table = self._ids
        for i, (docno, t) in enumerate(zip(docnos, toks)):
            terms, w = check_toks(t, f"the toks of document {docno!r}")
            ids.append(np.fromiter((table.setdefault(term, len(table)) for term in terms), np.int64, len(terms)))
            weights.append(w)
            lengths[i] = len(terms)
        if self._ids and len(self._ids) >= 2 ** 31:
            raise ValueError("more than 2**31 distinct terms: too many for this index")
        self._docnos.append(list(docnos))
        if not len(docnos):
            return
        doc = np.repeat(np.arange(len(docnos)), lengths)
        term = np.concatenate(ids)
        order = np.lexsort((term, doc))   # ascending term ids within each document
        with np.errstate(over="ignore"):
            stored = np.concatenate(weights)[order].astype(np.float32)
        if not np.isfinite(stored).all():
            row = int(doc[order][np.argmax(~np.isfinite(stored))])
            raise ValueError(f"the toks of document {docnos[row]!r} hold a weight too large for float32")
        self._terms.append(term[order].astype(np.int32))
        self._weights.append(stored)
        self._off.append(self._end + np.cumsum(lengths))
        self._end += int(lengths.sum())

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if not self._encoder_known and self._build.current is not None:
                    self.encoder = self._build.current.meta.get("encoder")
                self._docnos.finish()
                count = self._off.rows - 1
                if count != self._docnos.count:
                    raise CorruptIndexError(f"{count} documents' postings but {self._docnos.count} docnos were written")
                self._finish()
                self._build.publish({"count": count, "terms": len(self._ids), "postings": self._end,
                                     "encoder": self.encoder})
        finally:
            self._build.__exit__(exc_type, exc, tb)   # removes the unfinished build unless published

    def _finish(self) -> None:
        b = self._build
        terms = list(self._ids)   # insertion order = term id order
        encoded = [t.encode("utf-8", "surrogatepass") for t in terms]
        b.array_writer("terms.bin", "uint8", ()).append_bytes(b"".join(encoded))
        b.array_writer("terms.off", "int64", ()).append(
            np.concatenate([[0], np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)))]))
        for w in (self._off, self._terms, self._weights):
            w.close()
        _write_inverted(b, len(terms), self._end)


def _blocks(offsets: np.ndarray):
    return doc_blocks(offsets, BLOCK_POSTINGS)


def _read(f, dtype, start: int, count: int) -> np.ndarray:
    f.seek(np.dtype(dtype).itemsize * start)
    return np.fromfile(f, dtype=dtype, count=count)


def _write_inverted(build, nterms: int, npostings: int) -> None:
    """``inv.*`` from the forward files: sizes in a first pass, then each block's postings written at their terms'
    places (documents ascend within a term because blocks go in document order)."""
    offsets = np.fromfile(build.tmp / "fwd.off", dtype=np.int64)
    sizes = np.zeros(nterms, np.int64)
    maxw = np.zeros(nterms, np.float32)
    with open(build.tmp / "fwd.terms.i4", "rb") as ft, open(build.tmp / "fwd.weights.f4", "rb") as fw:
        for d0, d1 in _blocks(offsets):
            a, n = int(offsets[d0]), int(offsets[d1] - offsets[d0])
            t, w = _read(ft, np.int32, a, n), _read(fw, np.float32, a, n)
            sizes += np.bincount(t, minlength=nterms)
            np.maximum.at(maxw, t, w)
        inv_off = np.zeros(nterms + 1, np.int64)
        np.cumsum(sizes, out=inv_off[1:])
        fds = [os.open(build.tmp / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
               for name in ("inv.docs.i4", "inv.weights.f4")]
        try:
            for fd in fds:
                os.ftruncate(fd, 4 * npostings)
            cursor = inv_off[:-1].copy()
            for d0, d1 in _blocks(offsets):
                a, n = int(offsets[d0]), int(offsets[d1] - offsets[d0])
                if not n:
                    continue
                t, w = _read(ft, np.int32, a, n), _read(fw, np.float32, a, n)
                docs = np.repeat(np.arange(d0, d1, dtype=np.int32), np.diff(offsets[d0:d1 + 1]))
                order = np.argsort(t, kind="stable")
                t = t[order]
                data = (docs[order].tobytes(), w[order].tobytes())
                bounds = np.flatnonzero(np.concatenate([[True], t[1:] != t[:-1], [True]])).tolist()
                for s, e in zip(bounds[:-1], bounds[1:]):
                    at = 4 * int(cursor[t[s]])
                    for fd, buf in zip(fds, data):
                        os.pwrite(fd, buf[4 * s:4 * e], at)
                cursor += np.bincount(t, minlength=nterms)
            for fd in fds:
                os.fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)
    build.array_writer("inv.off", "int64", ()).append(inv_off)
    build.array_writer("inv.max.f4", "float32", ()).append(maxw)
