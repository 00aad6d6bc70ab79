"""DenseIndex: the user-facing on-disk index of one vector per document, and the stages that use it."""
from __future__ import annotations

import os

import numpy as np

from ..indexes.ann_search import AnnSearcher
from ..indexes.ann_specs import HnswSpec, IvfSpec, PqSpec
from ..indexes.dense_store import DenseSnapshot, open_dense
from ..indexes.faiss_structure import cached_structure, verify_structures
from ..indexes.pq_store import build_pq_index
from ..indexes.vector_index import size_report
from ..stages.record_indexer import SHARD_SIZE
from ..stages.dense_indexer import DenseIndexer
from ..stages.dense_retriever import DenseRetriever
from ..stages.dense_scorer import DenseScorer
from .pq_index import PQIndex
from .vector_index import VectorIndex

__all__ = ["DenseIndex"]


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
    (``index.count``, a retriever's first call, ...) with a message that names the problem. Each build is a new
    immutable generation: readers in any process keep the one they started with, and this object moves to the
    newest one at its next use.
    """

    ARTIFACT_TYPE, ARTIFACT_FORMAT = "dense_index", "pyterrier_dense"

    def _open(self) -> DenseSnapshot:
        return open_dense(self.path)

    @property
    def vectors(self) -> np.ndarray:
        """All vectors of the current generation, memory-mapped read-only: shape (count, dim)."""
        return self.snapshot().vectors

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by inner product: ``(scores, rows)``, best first, ties by row."""
        return self.snapshot().search(query_vecs, k)

    def verify(self) -> None:
        """Re-read every file (cached FAISS structures included) and check it against the manifest's checksums."""
        snap = self.snapshot()
        snap.verify()
        verify_structures(snap)

    def size(self) -> dict:
        """Bytes on disk per document of the vectors, and compression against float32."""
        snap = self.snapshot()
        return size_report(snap.manifest["files"][snap.vector_file]["bytes"], snap.count, snap.dim)

    # ---- stages --------------------------------------------------------------------------------------------
    def indexer(self, *, mode: str = "error", dtype: str | None = None, dim: int | None = None,
                lock_timeout: float | None = None, resume: bool = True, shard_size: int = SHARD_SIZE) -> DenseIndexer:
        """A stage that writes ``docno`` + ``doc_vec`` records here: ``(enc >> index.indexer()).index(docs)``.

        ``mode``: ``"error"`` (refuse an existing index), ``"overwrite"``, or ``"append"`` (add documents to the
        index without re-encoding those it holds). ``dtype``: ``"float32"`` (default) or ``"float16"``. ``dim``:
        the dimension, needed only to create an empty index. Writers wait for each other (``lock_timeout`` seconds,
        default forever). ``resume`` (default True): an interrupted build run again with the same documents and options
        encodes only the documents after its last completed shard of ``shard_size`` and publishes the same index;
        ``resume=False`` starts from scratch."""
        return DenseIndexer(self, mode=mode, dtype=dtype, dim=dim, lock_timeout=lock_timeout, resume=resume,
                            shard_size=shard_size)

    def retriever(self, num_results: int = 1000, *, check_encoder: bool = True) -> DenseRetriever:
        """Exact retrieval of the top ``num_results`` for each ``query_vec``: ``enc >> index.retriever()``."""
        return DenseRetriever(self, num_results=num_results, check_encoder=check_encoder)

    def scorer(self, *, check_encoder: bool = True) -> DenseScorer:
        """Re-scores candidates (``qid``, ``docno``, ``query_vec``) from stored vectors, without re-encoding."""
        return DenseScorer(self, check_encoder=check_encoder)

    # ---- approximate and compressed retrieval (FAISS structures cached in the generation's faiss/) ----------
    def hnsw_retriever(self, num_results: int = 1000, *, m: int = 32, ef_construction: int = 200,
                       ef_search: int = 128, check_encoder: bool = True) -> DenseRetriever:
        """Approximate retrieval through an HNSW graph (built on first use, then cached); ``ef_search`` (the
        search beam, raised to ``num_results`` when smaller) changes per retriever without a rebuild."""
        return self._ann(HnswSpec(m=m, ef_construction=ef_construction, ef_search=ef_search), num_results,
                         check_encoder=check_encoder)

    def ivf_retriever(self, num_results: int = 1000, *, nlist: int | None = None, nprobe: int = 16, seed: int = 0,
                      train_size: int = 100_000, check_encoder: bool = True) -> DenseRetriever:
        """Approximate retrieval through an inverted file of ``nlist`` k-means lists (default 4 sqrt(n)), of
        which ``nprobe`` are searched per query."""
        return self._ann(IvfSpec(nlist=nlist, nprobe=nprobe, seed=seed), num_results, train_size=train_size,
                         check_encoder=check_encoder)

    def pq_retriever(self, num_results: int = 1000, *, m: int = 48, nbits: int = 8, opq: bool = False,
                     nlist: int | None = None, nprobe: int = 16, rerank: int = 0, seed: int = 0,
                     train_size: int = 100_000, opq_iterations: int = 50, quantizer: str = "pq",
                     check_encoder: bool = True) -> DenseRetriever:
        """Product-quantised retrieval: ``m`` codes of ``nbits`` (8, or 4 for fast-scan) a document, optional OPQ
        rotation and IVF coarse quantiser; ``rerank=n`` re-scores the top n exactly from the full vectors;
        ``quantizer="rq"`` for a residual quantiser of ``m`` codebooks (see :class:`PqSpec`).
        For a compressed-only index that drops the full vectors, see :meth:`compress`."""
        spec = PqSpec(m=m, nbits=nbits, opq=opq, nlist=nlist, nprobe=nprobe, seed=seed,
                      opq_iterations=opq_iterations, quantizer=quantizer)
        return self._ann(spec, num_results, rerank=rerank, train_size=train_size, check_encoder=check_encoder)

    def compress(self, path: str | os.PathLike, *, m: int = 48, nbits: int = 8, opq: bool = False,
                 nlist: int | None = None, nprobe: int = 16, seed: int = 0, train_size: int = 100_000,
                 opq_iterations: int = 50, quantizer: str = "pq", mode: str = "error") -> PQIndex:
        """Write a compressed-only :class:`PQIndex` of these vectors at ``path`` and return it."""
        spec = PqSpec(m=m, nbits=nbits, opq=opq, nlist=nlist, nprobe=nprobe, seed=seed,
                      opq_iterations=opq_iterations, quantizer=quantizer)
        build_pq_index(self.snapshot(), path, spec, train_size=train_size, mode=mode)
        return PQIndex(path)

    def _ann(self, spec, num_results: int, *, rerank: int = 0, train_size: int = 100_000,
             check_encoder: bool = True) -> DenseRetriever:
        if self.exists():
            spec.validate(self.dim, self.count)   # bad parameters fail now, before any work
        searcher = AnnSearcher(spec, lambda snap: cached_structure(snap, spec, train_size=train_size),
                               rerank=rerank, name=repr(self))
        searcher.key = ("ann", spec, train_size, rerank)
        return DenseRetriever(self, num_results=num_results, check_encoder=check_encoder, searcher=searcher)
