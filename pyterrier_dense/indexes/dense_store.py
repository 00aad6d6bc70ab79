"""Dense vectors on disk, without PyTerrier: one pinned generation to read (:class:`DenseSnapshot`) and a writer
that streams (docno, vector) rows into a new generation (:class:`DenseIndexWriter`)."""
from __future__ import annotations

import os

import numpy as np

from .docnos import DATA_FILE, OFFSETS_FILE, DocnoWriter, Docnos
from .exact_search import exact_top_k
from .storage import CorruptIndexError, IndexBuild, IndexReader, open_reader
from .vector_index import encoder_differences

__all__ = ["DenseSnapshot", "DenseIndexWriter", "open_dense", "query_matrix", "TYPE", "FORMAT", "DTYPES", "GATHER_BYTES"]

TYPE, FORMAT = "dense_index", "pyterrier_dense"
DTYPES = {"float32": "vecs.f4", "float16": "vecs.f2"}
GATHER_BYTES = 1 << 26   # float32 bytes of gathered vectors held at once: 64 MiB


def query_matrix(snapshot, query_vecs: np.ndarray) -> np.ndarray:
    """Query vectors as a contiguous float32 (n, dim) matrix for ``snapshot`` (any index kind with ``dim`` and
    ``path``); another shape is an error naming the index."""
    query_vecs = np.ascontiguousarray(query_vecs, dtype=np.float32)
    if query_vecs.ndim != 2 or query_vecs.shape[1] != snapshot.dim:
        raise ValueError(f"query vectors have shape {query_vecs.shape}, but {snapshot.path} holds "
                         f"{snapshot.dim}-dimensional vectors")
    return query_vecs


class DenseSnapshot:
    """One generation of a dense index, pinned for this object's life: vectors, docnos and manifest always agree."""

    def __init__(self, reader: IndexReader):
        self.reader, self.manifest = reader, reader.meta
        m = self.manifest
        self.path, self.count, self.dim, self.dtype = reader.path, m["count"], m["dim"], m["dtype"]
        self.vector_file = DTYPES[self.dtype]
        expected = self.count * self.dim * np.dtype(self.dtype).itemsize
        actual = m["files"].get(self.vector_file, {}).get("bytes")
        if actual != expected:
            raise CorruptIndexError(f"{self.path}: the vectors take {actual} bytes, but {self.count} x {self.dim} "
                                    f"{self.dtype} needs {expected}")
        offsets = m["files"].get(OFFSETS_FILE, {}).get("bytes")
        if offsets != 8 * (self.count + 1) or DATA_FILE not in m["files"]:
            raise CorruptIndexError(f"{self.path}: the docnos files do not hold {self.count} docnos, one per vector")
        self._vectors = None

    @property
    def encoder_settings(self) -> dict | None:
        return self.manifest.get("encoder")

    @property
    def vectors(self) -> np.ndarray:
        """All vectors, memory-mapped read-only: shape (count, dim)."""
        if self._vectors is None:
            if self.count == 0:
                self._vectors = np.empty((0, self.dim), dtype=self.dtype)
            else:   # a plain ndarray view of the map: slicing it skips np.memmap's per-slice Python overhead
                self._vectors = np.asarray(np.memmap(self.reader.file(self.vector_file), dtype=self.dtype, mode="r",
                                                     shape=(self.count, self.dim)))
        return self._vectors

    @property
    def docnos(self) -> Docnos:
        return Docnos.of(self.reader)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors at ``rows`` as float32, read in file order; at most ``GATHER_BYTES`` read at once
        beyond the result itself."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        step = max(1, GATHER_BYTES // (4 * self.dim))
        vectors = self.vectors
        for start in range(0, len(rows), step):
            r = rows[start:start + step]
            order = np.argsort(r, kind="stable")
            out[start + order] = vectors[r[order]]
        return out

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by inner product: ``(scores, rows)``, best first, ties by row."""
        return exact_top_k(query_matrix(self, query_vecs), self.vectors, k)

    def verify(self) -> None:
        self.reader.verify()


def open_dense(path: str | os.PathLike) -> DenseSnapshot:
    """Pin the current generation of the dense index at ``path`` (shared within the process)."""
    return open_reader(path, TYPE, FORMAT).snapshot(DenseSnapshot)


class DenseIndexWriter:
    """Streams (docnos, vectors) into a new generation of the index at ``path``; publishes atomically on clean exit.

    ``mode="error"`` (default) refuses an existing index, ``"overwrite"`` replaces it, ``"append"`` adds documents
    to it (or creates it): the stored vectors and docnos are copied into the new generation, checksums verified (no
    re-encoding), so the result equals a build from scratch over all documents. Writers of every process take the
    index's write lock for the whole build (``lock_timeout`` seconds, default: wait), so concurrent appends all land.
    Appending checks that the encoder settings and the dtype are those of the index, and that no docno repeats.

    Example::

        with DenseIndexWriter("x.dense", dim=4) as w:
            w.add(["d1", "d2"], np.eye(2, 4, dtype=np.float32))
        with DenseIndexWriter("x.dense", mode="append") as w:
            w.add(["d3"], np.ones((1, 4), dtype=np.float32))
    """

    def __init__(self, path: str | os.PathLike, *, dim: int | None = None, dtype: str | None = None,
                 mode: str = "error", encoder: dict | None = None, lock_timeout: float | None = None):
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1):
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self.dim = dim if dim is not None else (encoder or {}).get("dim")
        self.dtype, self.encoder, self._encoder_known = dtype, encoder, encoder is not None
        self._build = IndexBuild(path, artifact_type=TYPE, artifact_format=FORMAT, mode=mode,
                                 lock_timeout=lock_timeout)
        self.path = self._build.path
        self._vecs = self._docnos = None
        self._entered = False

    def set_encoder(self, encoder: dict | None) -> None:
        """The settings of the encoder that made the vectors, known only once the first records arrive."""
        if self._entered and self._build.current is not None:
            self._check_appendable(self._build.current.meta, encoder)
        self.encoder, self._encoder_known = encoder, True
        if self.dim is None and encoder:
            self.dim = encoder.get("dim")

    def _check_appendable(self, m: dict, encoder: dict | None) -> None:
        """Appended vectors must be comparable with the stored ones: same dim, dtype and encoder settings."""
        if self.dim is not None and self.dim != m["dim"]:
            raise ValueError(f"cannot append {self.dim}-dimensional vectors to {self.path}, which holds {m['dim']}-dimensional ones")
        if self.dtype is not None and self.dtype != m["dtype"]:
            raise ValueError(f"cannot append as {self.dtype} to {self.path}, which stores {m['dtype']}")
        stored = m.get("encoder")
        if (stored is None) != (encoder is None):
            made, how = (("by an encoder", 'enc >> index.indexer(mode="append")') if stored else
                         ("from vectors given directly", "records that carry doc_vec"))
            raise ValueError(f"{self.path} was built {made}; append the same way ({how})")
        diffs = encoder_differences(stored, encoder or {})
        if diffs:
            raise ValueError(f"cannot append to {self.path}: it was built with another encoder configuration "
                             f"({'; '.join(diffs)})")

    def __enter__(self) -> "DenseIndexWriter":
        self._build.__enter__()
        self._entered = True
        try:
            current = self._build.current
            if current is not None:
                if self._encoder_known:
                    self._check_appendable(current.meta, self.encoder)
                else:
                    self._check_appendable(current.meta, current.meta.get("encoder"))
                self.dim, self.dtype = current.meta["dim"], current.meta["dtype"]
            self.dtype = self.dtype or "float32"
            self._docnos = DocnoWriter(self._build)
            if current is not None:
                self._build.copy_current(DTYPES[self.dtype], self._vector_writer())
                self._docnos.copy_current(current)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _vector_writer(self):
        """The vectors file, opened on first use (the dimension may only be known from the first vectors)."""
        if self._vecs is None:
            self._vecs = self._build.array_writer(DTYPES[self.dtype], self.dtype, (self.dim,))
        return self._vecs

    def add(self, docnos: list, vectors: np.ndarray) -> None:
        """Add rows; ``vectors`` is a (len(docnos), dim) numeric matrix. Values that are not finite once stored in
        the index's dtype (NaN, inf, or too large for float16) are an error naming the docno."""
        vectors = np.asarray(vectors)
        if vectors.dtype.kind not in "fiub" or vectors.ndim != 2 or len(vectors) != len(docnos):
            raise ValueError(f"got {len(docnos)} docnos and a {vectors.dtype} array of shape {vectors.shape}; "
                             "expected one numeric vector per docno")
        if self.dim is None:
            self.dim = vectors.shape[1]
        if vectors.shape[1] != self.dim or self.dim == 0:
            want = f"this index holds {self.dim} dimensions" if self.dim else "vectors need at least one dimension"
            raise ValueError(f"document {docnos[0]!r} has a {vectors.shape[1]}-dimensional vector; {want}")
        with np.errstate(over="ignore", invalid="ignore"):
            stored = vectors.astype(self.dtype, copy=False)
        bad = ~np.isfinite(stored).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            why = "a NaN or infinite value" if not np.isfinite(vectors[row]).all() else \
                f"a value too large for {self.dtype} (max |x| = {np.abs(vectors[row]).max():.3g})"
            raise ValueError(f"document {docnos[row]!r} has {why} in its vector")
        self._docnos.append(list(docnos))
        self._vector_writer().append(stored)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.dim is None:
                    raise ValueError("no documents were given, so the vector dimension is unknown: pass dim= "
                                     "(index.indexer(dim=384)) to create an empty index")
                if not self._encoder_known and self._build.current is not None:
                    self.encoder = self._build.current.meta.get("encoder")   # nothing added: keep what it records
                rows = self._vector_writer().rows
                self._docnos.finish()
                if rows != self._docnos.count:
                    raise CorruptIndexError(f"{rows} vectors but {self._docnos.count} docnos were written")
                self._build.publish({"count": rows, "dim": self.dim, "dtype": self.dtype, "encoder": self.encoder})
        finally:
            self._build.__exit__(exc_type, exc, tb)   # removes the unfinished build unless published
