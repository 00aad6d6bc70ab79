"""DenseIndex: single vectors on disk (memory-mapped), docnos, and a manifest of how the vectors were made."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyterrier as pt

from .docnos import DocnoWriter
from .ann_search import AnnSearcher
from .ann_specs import HnswSpec, IvfSpec, PqSpec
from .exact_search import exact_top_k
from .faiss_structure import cached_structure
from .pq_index import PQIndex, build_pq_index
from .storage import CorruptIndexError, IndexBuild, open_array, verify_files
from .vector_index import VectorIndex, encoder_differences

__all__ = ["DenseIndex", "DenseIndexWriter"]

TYPE, FORMAT = "dense_index", "pyterrier_dense"
DTYPES = {"float32": "vecs.f4", "float16": "vecs.f2"}


class DenseIndex(VectorIndex):
    """An on-disk index of one vector per document, searched exactly by inner product.

    Example::

        enc = ptd.BiEncoder("sentence-transformers/all-MiniLM-L6-v2")
        index = ptd.DenseIndex("scifact.dense")
        (enc >> index.indexer()).index(collection.corpus_iter())
        dense = enc >> index.retriever(num_results=1000)
        rerank = bm25 >> enc >> index.scorer()
        hnsw = enc >> index.hnsw_retriever(ef_search=128)      # approximate, cached inside the index directory
        pq = enc >> index.pq_retriever(m=48, opq=True)         # product-quantised

    ``pt.Artifact.load(path)`` opens it too. Opening is lazy: a missing or corrupt index raises on first use
    (``index.count``, a retriever's first call, ...) with a message that names the problem.
    """

    ARTIFACT_TYPE, ARTIFACT_FORMAT = TYPE, FORMAT

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._vectors = None

    def _check_manifest(self, meta: dict) -> None:
        expected = meta["count"] * meta["dim"] * np.dtype(meta["dtype"]).itemsize
        actual = meta["files"].get(DTYPES[meta["dtype"]], {}).get("bytes")
        if actual != expected:
            raise CorruptIndexError(f"{self.path}: the vectors take {actual} bytes, but {meta['count']} x "
                                    f"{meta['dim']} {meta['dtype']} needs {expected}")

    def _searched_bytes(self) -> int:
        return self.manifest["files"][DTYPES[self.manifest["dtype"]]]["bytes"]

    @property
    def vectors(self) -> np.ndarray:
        """All vectors, memory-mapped read-only: shape (count, dim)."""
        if self._vectors is None:
            m = self.manifest
            self._vectors = open_array(Path(self.path) / DTYPES[m["dtype"]], m["dtype"], (m["count"], m["dim"]))
        return self._vectors

    def verify(self) -> None:
        """Re-read every file and check it against the manifest's checksums; raises on any difference."""
        verify_files(self.path, self.manifest)

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by inner product: ``(scores, rows)``, best first, ties by row."""
        query_vecs = np.asarray(query_vecs, dtype=np.float32)
        if query_vecs.ndim != 2 or query_vecs.shape[1] != self.dim:
            raise ValueError(f"query vectors have shape {query_vecs.shape}, but {self.path} holds {self.dim}-dimensional vectors")
        return exact_top_k(query_vecs, self.vectors, k)

    # ---- stages --------------------------------------------------------------------------------------------
    def indexer(self, *, mode: str = "error", dtype: str | None = None) -> "pt.Indexer":
        """A stage that writes ``docno`` + ``doc_vec`` records here: ``(enc >> index.indexer()).index(docs)``.

        ``mode``: ``"error"`` (refuse an existing index), ``"overwrite"``, or ``"append"`` (add documents to the
        index without re-encoding those it holds). ``dtype``: ``"float32"`` (default) or ``"float16"``."""
        from ..stages.dense_indexer import DenseIndexer
        return DenseIndexer(self, mode=mode, dtype=dtype)

    def retriever(self, num_results: int = 1000, *, check_encoder: bool = True) -> pt.Transformer:
        """Exact retrieval of the top ``num_results`` for each ``query_vec``: ``enc >> index.retriever()``."""
        from ..stages.dense_retriever import DenseRetriever
        return DenseRetriever(self, num_results=num_results, check_encoder=check_encoder)

    def scorer(self, *, check_encoder: bool = True) -> pt.Transformer:
        """Re-scores candidates (``qid``, ``docno``, ``query_vec``) from stored vectors, without re-encoding."""
        from ..stages.dense_scorer import DenseScorer
        return DenseScorer(self, check_encoder=check_encoder)

    # ---- approximate and compressed retrieval (FAISS structures cached in <index>/faiss/) -------------------
    def hnsw_retriever(self, num_results: int = 1000, *, m: int = 32, ef_construction: int = 200,
                       ef_search: int = 128, check_encoder: bool = True) -> pt.Transformer:
        """Approximate retrieval through an HNSW graph (built on first use, then cached); ``ef_search`` (the
        search beam, raised to ``num_results`` when smaller) changes per retriever without a rebuild."""
        return self._ann(HnswSpec(m=m, ef_construction=ef_construction, ef_search=ef_search), num_results,
                         check_encoder=check_encoder)

    def ivf_retriever(self, num_results: int = 1000, *, nlist: int | None = None, nprobe: int = 16, seed: int = 0,
                      train_size: int = 100_000, check_encoder: bool = True) -> pt.Transformer:
        """Approximate retrieval through an inverted file of ``nlist`` k-means lists (default 4 sqrt(n)), of
        which ``nprobe`` are searched per query."""
        return self._ann(IvfSpec(nlist=nlist, nprobe=nprobe, seed=seed), num_results, train_size=train_size,
                         check_encoder=check_encoder)

    def pq_retriever(self, num_results: int = 1000, *, m: int = 48, nbits: int = 8, opq: bool = False,
                     nlist: int | None = None, nprobe: int = 16, rerank: int = 0, seed: int = 0,
                     train_size: int = 100_000, opq_iterations: int = 50, quantizer: str = "pq",
                     check_encoder: bool = True) -> pt.Transformer:
        """Product-quantised retrieval: ``m`` codes of ``nbits`` (8, or 4 for fast-scan) a document, optional OPQ
        rotation and IVF coarse quantiser; ``rerank=n`` re-scores the top n exactly from the full vectors;
        ``quantizer="rq"`` for a residual quantiser of ``m`` codebooks (see :class:`PqSpec`).
        For a compressed-only index that drops the full vectors, see :meth:`compress`."""
        spec = PqSpec(m=m, nbits=nbits, opq=opq, nlist=nlist, nprobe=nprobe, seed=seed,
                      opq_iterations=opq_iterations, quantizer=quantizer)
        return self._ann(spec, num_results, rerank=rerank, train_size=train_size, check_encoder=check_encoder)

    def compress(self, path: str | os.PathLike, *, m: int = 48, nbits: int = 8, opq: bool = False,
                 nlist: int | None = None, nprobe: int = 16, seed: int = 0, train_size: int = 100_000,
                 opq_iterations: int = 50, quantizer: str = "pq", mode: str = "error") -> "PQIndex":
        """Write a compressed-only :class:`PQIndex` of these vectors at ``path`` and return it."""
        spec = PqSpec(m=m, nbits=nbits, opq=opq, nlist=nlist, nprobe=nprobe, seed=seed,
                      opq_iterations=opq_iterations, quantizer=quantizer)
        return build_pq_index(self, path, spec, train_size=train_size, mode=mode)

    def _ann(self, spec, num_results: int, *, rerank: int = 0, train_size: int = 100_000,
             check_encoder: bool = True) -> pt.Transformer:
        from ..stages.dense_retriever import DenseRetriever
        if self.exists():
            spec.validate(self.dim, self.count)   # bad parameters fail now, before any work
        searcher = AnnSearcher(spec, lambda: cached_structure(self, spec, train_size=train_size), self,
                               rerank=rerank)
        return DenseRetriever(self, num_results=num_results, check_encoder=check_encoder, searcher=searcher)



class DenseIndexWriter:
    """Streams (docnos, vectors) into a new index at ``path``; publishes atomically on clean exit.

    ``mode="error"`` (default) refuses an existing index, ``"overwrite"`` replaces it, ``"append"`` adds documents
    to it (or creates it): the stored vectors and docnos are copied into the new build (no re-encoding), so the
    result equals a build from scratch over all documents, and the old index stays in place until the new one is
    complete. Appending checks that the encoder settings and the dtype are those of the index, and that no docno
    repeats one already stored.

    Example::

        with DenseIndexWriter("x.dense", dim=4) as w:
            w.add(["d1", "d2"], np.eye(2, 4, dtype=np.float32))
        with DenseIndexWriter("x.dense", mode="append") as w:
            w.add(["d3"], np.ones((1, 4), dtype=np.float32))
    """

    COPY_BLOCK = 65536

    def __init__(self, path: str | os.PathLike, *, dim: int | None = None, dtype: str | None = None,
                 mode: str = "error", encoder: dict | None = None):
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if mode not in ("error", "overwrite", "append"):
            raise ValueError(f"mode must be 'error', 'overwrite' or 'append', got {mode!r}")
        self.dim = dim if dim is not None else (encoder or {}).get("dim")
        self.dtype, self.encoder = dtype, encoder
        existing = DenseIndex(path)
        self._base = existing if mode == "append" and existing.exists() else None
        if self._base is not None:
            self._check_appendable(self._base)
            mode = "overwrite"   # the new build, holding the old documents too, replaces the index
        elif mode == "append":
            mode = "error"       # nothing to append to: a new index, which must not appear meanwhile
        self.dtype = self.dtype or "float32"
        self._build = IndexBuild(path, artifact_type=TYPE, artifact_format=FORMAT, mode=mode)
        self._vecs = self._docnos = None

    def _check_appendable(self, base: DenseIndex) -> None:
        """Appended vectors must be comparable with the stored ones: same dim, dtype and encoder settings."""
        m = base.manifest
        if self.dim is not None and self.dim != m["dim"]:
            raise ValueError(f"cannot append {self.dim}-dimensional vectors to {base.path}, which holds {m['dim']}-dimensional ones")
        if self.dtype is not None and self.dtype != m["dtype"]:
            raise ValueError(f"cannot append as {self.dtype} to {base.path}, which stores {m['dtype']}")
        stored = m.get("encoder")
        if (stored is None) != (self.encoder is None):
            made, how = (("by an encoder", 'enc >> index.indexer(mode="append")') if stored else
                         ("from vectors given directly", "records that carry doc_vec"))
            raise ValueError(f"{base.path} was built {made}; append the same way ({how})")
        diffs = encoder_differences(stored, self.encoder or {})
        if diffs:
            raise ValueError(f"cannot append to {base.path}: it was built with another encoder configuration "
                             f"({'; '.join(diffs)})")
        self.dim, self.dtype = m["dim"], m["dtype"]

    def __enter__(self) -> "DenseIndexWriter":
        self._build.__enter__()
        try:
            self._docnos = DocnoWriter(self._build.tmp)
            if self._base is not None:
                self._copy_base()
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _vector_writer(self):
        """The vectors file, opened on first use (the dimension may only be known from the first vectors)."""
        if self._vecs is None:
            self._vecs = self._build.array_writer(DTYPES[self.dtype], self.dtype, (self.dim,))
        return self._vecs

    def _copy_base(self) -> None:
        vectors, docnos = self._base.vectors, self._base.docnos
        for start in range(0, len(vectors), self.COPY_BLOCK):
            self._vector_writer().append(vectors[start:start + self.COPY_BLOCK])
            self._docnos.append(docnos[start:start + self.COPY_BLOCK].tolist())
        self._base_files = self._base.manifest["files"]

    def add(self, docnos: list, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(docnos):
            raise ValueError(f"got {len(docnos)} docnos and vectors of shape {vectors.shape}")
        if self.dim is None:
            self.dim = vectors.shape[1]
        if vectors.shape[1] != self.dim:
            raise ValueError(f"document {docnos[0]!r} has a {vectors.shape[1]}-dimensional vector; this index holds {self.dim} dimensions")
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            raise ValueError(f"document {docnos[int(np.argmax(bad))]!r} has a NaN or infinite value in its vector")
        self._docnos.append(list(docnos))
        self._vector_writer().append(vectors)

    def _check_base_unchanged(self) -> None:
        if self._base is not None and DenseIndex(self._base.path).manifest["files"] != self._base_files:
            raise RuntimeError(f"{self._base.path} changed while documents were being appended to it; "
                               "append again (nothing was written)")

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.dim is None:
                    raise ValueError("no documents were given and no dim is known: pass dim= to index an empty collection")
                rows = self._vector_writer().rows
                self._docnos.finish()
                self._check_base_unchanged()
                self._build.publish({"count": rows, "dim": self.dim, "dtype": self.dtype,
                                     "encoder": self.encoder})
        finally:
            if self._docnos is not None:
                self._docnos.close()
            self._build.__exit__(exc_type, exc, tb)   # removes the temporary directory unless published
