"""SparseIndex: the user-facing on-disk inverted index of learned sparse representations (``toks``), and its stages."""
from __future__ import annotations

from ..indexes.sparse_store import SparseSnapshot, open_sparse
from ..indexes.vector_index import encoder_differences
from ..stages.record_indexer import SHARD_SIZE
from ..stages.sparse_indexer import SparseIndexer
from ..stages.sparse_retriever import SparseRetriever, SparseScorer
from .vector_index import VectorIndex

__all__ = ["SparseIndex"]

# the settings a query encoder must share with the index: the same model and head give the same term space
QUERY_KEYS = ("fingerprint", "head")


class SparseIndex(VectorIndex):
    """An embedded on-disk inverted index over ``{term: weight}`` documents (SPLADE ``toks``, or any impact weights),
    searched exactly by the dot product with ``query_toks``.

    Example::

        splade = ptd.Splade("naver/splade-cocondenser-ensembledistil")
        index = ptd.SparseIndex("scifact.splade")
        (splade.doc_encoder() >> index.indexer()).index(collection.corpus_iter())
        sparse = splade.query_encoder() >> index.retriever(num_results=1000)
        rerank = bm25 % 100 >> splade.query_encoder() >> index.scorer()        # from the stored weights

    Records that already carry ``toks`` (from pyterrier-pisa's pipelines, pyt_splade, or your own weights) are
    stored as they are. Storage, appends, generations and ``verify()`` work as for :class:`DenseIndex`; each
    document's terms are also kept in document order for ``scorer()``. For collections of many millions of
    documents, pyterrier-pisa's ``toks_indexer()`` serves the same columns from native code (see the README).
    """

    ARTIFACT_TYPE, ARTIFACT_FORMAT = "sparse_index", "pyterrier_dense"

    def _open(self) -> SparseSnapshot:
        return open_sparse(self.path)

    @property
    def terms(self) -> int:
        """Distinct terms stored."""
        return self.snapshot().nterms

    def check_encoder(self, settings: dict, snapshot=None) -> None:
        """Raise if query weights made with ``settings`` do not live in this index's term space (another model or
        head). Settings that only shape queries or documents (lengths, top-k, quantisation) are not compared."""
        snap = snapshot or self.snapshot()
        diffs = encoder_differences(snap.encoder_settings, settings, QUERY_KEYS)
        if diffs:
            raise ValueError(f"{self.path} was built with another sparse encoder ({'; '.join(diffs)}); rebuild the "
                             "index or pass check_encoder=False")

    def size(self) -> dict:
        """``bytes_per_doc`` on disk (postings twice: by term for retrieval, by document for re-scoring),
        ``postings_per_doc``, terms and documents."""
        snap = self.snapshot()
        nbytes = sum(info["bytes"] for info in snap.manifest["files"].values())
        n = snap.count
        return {"bytes": nbytes, "bytes_per_doc": nbytes / n if n else 0.0, "documents": n, "terms": snap.nterms,
                "postings_per_doc": snap.postings / n if n else 0.0}

    # ---- stages ----------------------------------------------------------------------------------------------
    def indexer(self, *, mode: str = "error", lock_timeout: float | None = None, resume: bool = True,
                shard_size: int = SHARD_SIZE) -> SparseIndexer:
        """A stage that writes ``docno`` + ``toks`` records here: ``(splade.doc_encoder() >> index.indexer())
        .index(docs)``; ``mode`` ``"error"`` / ``"overwrite"`` / ``"append"``. ``resume`` (default True): an interrupted build run again with the same documents and options
        encodes only the documents after its last completed shard of ``shard_size`` and publishes the same index;
        ``resume=False`` starts from scratch."""
        return SparseIndexer(self, mode=mode, lock_timeout=lock_timeout, resume=resume, shard_size=shard_size)

    def retriever(self, num_results: int = 1000, *, check_encoder: bool = True) -> SparseRetriever:
        """Exact top ``num_results`` documents by the dot product of ``query_toks`` with the stored weights (no
        document left out; ties by index order). Query terms the index lacks are ignored; a query with none of its
        terms in the index gets no results."""
        return SparseRetriever(self, num_results=num_results, check_encoder=check_encoder)

    def scorer(self, *, check_encoder: bool = True) -> SparseScorer:
        """Re-scores candidates (``qid``, ``docno``, ``query_toks``) from the stored weights:
        ``bm25 % 100 >> splade.query_encoder() >> index.scorer()``."""
        return SparseScorer(self, check_encoder=check_encoder)



