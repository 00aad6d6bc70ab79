"""ColBERTIndex: the user-facing on-disk index of token vectors (late interaction), and the stages that use it."""
from __future__ import annotations

import numpy as np

from ..indexes.token_store import DOC_SIDE_KEYS, TokenSnapshot, open_tokens
from ..indexes.vector_index import encoder_differences
from ..stages.record_indexer import SHARD_SIZE
from ..stages.colbert_indexer import ColBERTIndexer
from ..stages.colbert_retriever import ColBERTRetriever, ColBERTScorer
from .vector_index import VectorIndex

__all__ = ["ColBERTIndex"]


class ColBERTIndex(VectorIndex):
    """An on-disk index of every document's token vectors, scored by MaxSim.

    Example::

        colbert = ptd.ColBERT("colbert-ir/colbertv2.0")
        index = ptd.ColBERTIndex("scifact.colbert")
        (colbert >> index.indexer(storage="residual", nbits=2)).index(collection.corpus_iter())
        e2e = colbert.query_encoder() >> index.retriever(num_results=100)             # PLAID
        exact = colbert.query_encoder() >> index.exhaustive_retriever(num_results=100)
        rerank = bm25 % 100 >> colbert.query_encoder() >> index.scorer()              # from stored vectors

    Storage: ``"float16"`` keeps each token vector (2 bytes a dimension); ``"residual"`` keeps ColBERTv2's
    centroid code and an ``nbits`` (1 or 2) residual per dimension (about 6x / 11x smaller than float16 at 128
    dimensions). Every setting of the encoder that changes vectors is in the manifest and checked when an encoder's
    output meets the index. Builds, appends, generations and ``verify()`` work as for :class:`DenseIndex`.
    """

    ARTIFACT_TYPE, ARTIFACT_FORMAT = "colbert_index", "pyterrier_dense"
    ENCODER_KEYS = None   # every setting the manifest records is compared

    def _open(self) -> TokenSnapshot:
        return open_tokens(self.path)

    @property
    def tokens(self) -> int:
        """Token vectors stored."""
        return self.snapshot().tokens

    def check_encoder(self, settings: dict, snapshot=None, *, side: str = "query") -> None:
        """Raise if vectors made with ``settings`` are not comparable with this index's (on the query side,
        settings that only change document vectors are not compared)."""
        snap = snapshot or self.snapshot()
        stored = snap.encoder_settings
        if stored is None:
            return
        keys = [k for k in stored if k not in ("model", "query_model") and (side == "doc" or k not in DOC_SIDE_KEYS)]
        diffs = encoder_differences(stored, settings, tuple(keys))
        if diffs:
            raise ValueError(f"{self.path} was built with another ColBERT encoder configuration "
                             f"({'; '.join(diffs)}); rebuild the index or pass check_encoder=False")

    def token_frequencies(self) -> tuple[np.ndarray, int]:
        """``(counts, total)``: how many stored tokens have each token id, and how many tokens are stored (for
        query pruning by inverse collection frequency)."""
        snap = self.snapshot()
        if snap.token_counts is None:
            raise ValueError(f"{self.path} records no token ids (its token vectors were given without them), so it "
                             "has no collection frequencies for query pruning")
        return snap.token_counts, snap.tokens

    def size(self) -> dict:
        """``bytes_per_token`` on disk (vectors or residuals + centroid code), tokens and documents."""
        snap = self.snapshot()
        return {"bytes_per_token": snap.bytes_per_token(), "tokens": snap.tokens, "documents": snap.count,
                "tokens_per_document": snap.tokens / snap.count if snap.count else 0.0,
                "storage": snap.storage, "nbits": snap.nbits, "ncentroids": snap.ncentroids}

    # ---- stages ----------------------------------------------------------------------------------------------
    def indexer(self, *, storage: str | None = None, nbits: int | None = None, ncentroids: int | None = None,
                mode: str = "error", lock_timeout: float | None = None, seed: int = 0, resume: bool = True,
                shard_size: int = SHARD_SIZE) -> ColBERTIndexer:
        """A stage that writes ``docno`` + ``doc_embs`` records here: ``(colbert >> index.indexer()).index(docs)``.

        ``storage="float16"`` (default) or ``"residual"`` (``nbits`` 1 or 2, default 2); ``ncentroids`` (default:
        grows with the square root of the number of tokens) for candidate generation and residuals; ``mode``
        ``"error"`` / ``"overwrite"`` / ``"append"`` (appended documents reuse the index's storage and centroids;
        nothing stored is re-encoded). ``resume`` (default True): an interrupted build run again with the same documents and options
        encodes only the documents after its last completed shard of ``shard_size`` and publishes the same index;
        ``resume=False`` starts from scratch."""
        return ColBERTIndexer(self, storage=storage, nbits=nbits, ncentroids=ncentroids, mode=mode,
                              lock_timeout=lock_timeout, seed=seed, resume=resume, shard_size=shard_size)

    def retriever(self, num_results: int = 1000, *, cells: int = 4, candidates: int | None = None,
                  check_encoder: bool = True) -> ColBERTRetriever:
        """End-to-end retrieval, PLAID-style: each query vector probes its ``cells`` nearest centroids; the
        documents found there are ranked by centroid interaction and the best ``candidates`` (at least
        ``num_results``) are scored by exact MaxSim. ``candidates`` defaults to 320 for float16 storage and 256 for
        residual storage, whose centroid interaction is a closer stand-in for its own MaxSim: on SciFact (zero-shot
        MiniLM) they find 96% of the exhaustive top 100 of float16 storage and 96% / 98% of 2- / 1-bit storage's own.
        Raise ``candidates`` for more, lower it for speed: the exact stage takes most of the time, in proportion
        to ``candidates``::

            e2e = colbert.query_encoder() >> index.retriever(num_results=100)
        """
        return ColBERTRetriever(self, num_results=num_results, cells=cells, candidates=candidates,
                                check_encoder=check_encoder)

    def exhaustive_retriever(self, num_results: int = 1000, *, check_encoder: bool = True) -> ColBERTRetriever:
        """Exact MaxSim against every stored document (the reference; the right choice for small collections)."""
        return ColBERTRetriever(self, num_results=num_results, cells=None, candidates=None,
                                check_encoder=check_encoder)

    def scorer(self, *, check_encoder: bool = True) -> ColBERTScorer:
        """Re-scores candidates (``qid``, ``docno``, ``query_embs``) by MaxSim with the stored token vectors:
        ``bm25 % 100 >> colbert.query_encoder() >> index.scorer()``."""
        return ColBERTScorer(self, check_encoder=check_encoder)
