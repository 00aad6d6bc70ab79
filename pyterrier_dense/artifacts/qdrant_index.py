"""QdrantIndex: a Qdrant collection (a server, or qdrant-client's local mode) served through the same stages as
the package's own indexes."""
from __future__ import annotations

import os

from ..indexes.qdrant_store import QdrantStore
from ..stages.qdrant_stages import QdrantIndexer, QdrantRetriever
from ..stages.record_indexer import SHARD_SIZE

__all__ = ["QdrantIndex"]


class QdrantIndex:
    """One Qdrant collection holding one or more representations of the documents: ``doc_vec`` (dense), ``toks``
    (learned sparse), ``doc_embs`` (ColBERT token vectors, scored by the engine's MaxSim).

    Example::

        index = ptd.QdrantIndex("http://qdrant:6333", "scifact-minilm")      # or a directory, or ":memory:"
        (enc >> index.indexer()).index(collection.corpus_iter())
        dense = enc >> index.retriever(num_results=100)                      # exact search in the engine
        rerank = bm25 % 100 >> enc.query_encoder() >> index.scorer()
        splade_index = ptd.QdrantIndex("http://qdrant:6333", "scifact-splade")
        (splade.doc_encoder() >> splade_index.indexer(representation="toks")).index(collection.corpus_iter())

        # hybrid: dense and sparse vectors of each document in one collection, fused by the engine
        hybrid = ptd.QdrantIndex("http://qdrant:6333", "scifact-hybrid")
        (enc >> splade.doc_encoder() >> hybrid.indexer(representation=("doc_vec", "toks"))).index(docs)
        both = enc.query_encoder() >> splade.query_encoder() >> hybrid.retriever(num_results=100)   # RRF

    Each representation's encoder settings are kept in the collection's metadata and checked when queries meet it,
    as for the package's own indexes. A server that does not answer within ``timeout`` seconds is an error naming its URL.
    A location that is a directory or ``":memory:"`` uses qdrant-client's local mode: brute force in Python, one
    process at a time, for tests and small collections, not a production engine.
    """

    def __init__(self, location: str | os.PathLike, collection: str, *, timeout: float = 10.0,
                 api_key: str | None = None):
        location = os.fspath(location)
        self.store = QdrantStore(location, collection, timeout=timeout, api_key=api_key)
        # completed shards of resumable builds live beside a local collection; a server's builds do not resume
        remote = location.startswith(("http://", "https://")) or location == ":memory:"
        self.path = None if remote else f"{location.rstrip(os.sep)}.{collection}.partial"

    def exists(self) -> bool:
        return self.store.exists()

    @property
    def count(self) -> int:
        return self.store.count()

    @property
    def representations(self) -> dict[str, dict | None]:
        """``{representation: the settings of the encoder that made it}`` for what the collection holds."""
        return {rep: spec.get("encoder") for rep, spec in self.store.meta()["representations"].items()}

    @property
    def encoder_settings(self) -> dict | None:
        """The encoder's settings where the collection holds one representation (else see ``representations``)."""
        reps = self.representations
        if len(reps) != 1:
            raise ValueError(f"Qdrant collection {self.store.collection!r} holds {list(reps)}: read each one's "
                             "encoder settings from .representations")
        return next(iter(reps.values()))

    def indexer(self, *, representation: str | tuple[str, ...] = "doc_vec", mode: str = "error",
                resume: bool = True, shard_size: int = SHARD_SIZE) -> QdrantIndexer:
        """Writes ``docno`` + ``representation`` records (``"doc_vec"``, ``"toks"``, ``"doc_embs"``, or a tuple of
        several, each record carrying all of them); ``mode`` ``"error"`` / ``"overwrite"`` / ``"append"`` (the
        same representations and encoders; docnos already stored are refused)."""
        return QdrantIndexer(self, representation=representation, mode=mode, resume=resume, shard_size=shard_size)

    def retriever(self, num_results: int = 1000, *, representation: str | tuple[str, ...] | None = None,
                  fusion: str = "rrf", rrf_k: int = 60, depth: int | None = None,
                  check_encoder: bool = True) -> QdrantRetriever:
        """Exact top ``num_results`` in the engine for each query's ``query_vec`` / ``query_toks`` /
        ``query_embs``: those of ``representation``, by default every representation of the collection whose query
        column the frame has. Several are a hybrid search: each one's exact top ``depth`` (default
        ``num_results``) fused in the engine by ``fusion``: ``"rrf"`` (``1 / (rrf_k + rank)`` summed, the same
        scores as :class:`~pyterrier_dense.RRFusion` of the single runs; a server from Qdrant 1.16 on) or ``"dbsf"``
        (distribution-based)."""
        return QdrantRetriever(self, num_results=num_results, representation=representation, fusion=fusion,
                               rrf_k=rrf_k, depth=depth, check_encoder=check_encoder)

    def scorer(self, *, representation: str | tuple[str, ...] | None = None, fusion: str = "rrf",
               rrf_k: int = 60, check_encoder: bool = True) -> QdrantRetriever:
        """Re-scores candidates (``qid``, ``docno`` and the query columns, chosen as for :meth:`retriever`) in
        the engine."""
        return QdrantRetriever(self, candidates=True, representation=representation, fusion=fusion, rrf_k=rrf_k,
                               check_encoder=check_encoder)

    def __repr__(self) -> str:
        return f"QdrantIndex({self.store.location!r}, {self.store.collection!r})"
