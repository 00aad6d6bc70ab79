"""PQIndex: a compressed-only index (product-quantised codes + docnos, no full vectors), so the saving is real."""
from __future__ import annotations

import dataclasses

from ..indexes.ann_search import AnnSearcher
from ..indexes.ann_specs import PqSpec
from ..indexes.pq_store import PQSnapshot, open_pq
from ..indexes.vector_index import size_report
from ..stages.dense_retriever import DenseRetriever
from .vector_index import VectorIndex

__all__ = ["PQIndex"]


class PQIndex(VectorIndex):
    """Product-quantised codes of a DenseIndex's vectors, searched by asymmetric distance computation.

    Example::

        pq_index = dense_index.compress("scifact.pq", m=96, nbits=4)   # 48 bytes a document: 32x smaller
        pq = enc >> pq_index.retriever(num_results=1000)
        pq_index.size()   # {'bytes_per_doc': ..., 'compression_vs_float32': ...}
    """

    ARTIFACT_TYPE, ARTIFACT_FORMAT = "dense_index", "pyterrier_dense.pq"

    def _open(self) -> PQSnapshot:
        return open_pq(self.path)

    @property
    def spec(self) -> PqSpec:
        return self.snapshot().spec

    def size(self) -> dict:
        """Bytes per document of the codes file (codebooks included), compression against float32, and
        ``code_bytes_per_doc``: the codes alone."""
        snap = self.snapshot()
        report = size_report(snap.manifest["files"]["pq.faiss"]["bytes"], snap.count, snap.dim)
        return {**report, "code_bytes_per_doc": snap.spec.code_bytes()}

    def searcher(self, nprobe: int | None = None) -> AnnSearcher:
        def load(snap):
            return snap.structure()
        spec = self.spec if nprobe is None else dataclasses.replace(self.spec, nprobe=nprobe)
        searcher = AnnSearcher(spec, load, has_vectors=False, name=repr(self))
        searcher.key = ("pq", spec)
        return searcher

    def retriever(self, num_results: int = 1000, *, nprobe: int | None = None,
                  check_encoder: bool = True) -> DenseRetriever:
        """Approximate top ``num_results`` from the codes alone: ``enc >> pq_index.retriever()``."""
        return DenseRetriever(self, num_results=num_results, check_encoder=check_encoder,
                              searcher=self.searcher(nprobe))
