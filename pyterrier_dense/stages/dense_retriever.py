"""DenseRetriever: exact top-k retrieval of ``query_vec`` against a DenseIndex."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from .columns import require_columns, vectors_of

__all__ = ["DenseRetriever"]

RESULT_COLUMNS = ["docno", "docid", "score", "rank"]


class DenseRetriever(pt.Transformer):
    """``enc >> index.retriever(num_results=1000)``: the top ``num_results`` documents by inner product.

    The ``searcher`` is the index itself (exact: all queries of a frame in one blocked matrix product, ties by index
    order) or an approximate one (HNSW, IVF, PQ; see ``DenseIndex.hnsw_retriever`` and friends). Output: the query
    columns (without ``query_vec``) + ``docno``, ``docid`` (row in the index), ``score``, ``rank``.
    """

    def __init__(self, index, *, num_results: int = 1000, check_encoder: bool = True,
                 encoder: dict | None = None, searcher=None):
        if num_results < 1:
            raise ValueError(f"num_results must be >= 1, got {num_results}")
        self.index, self.num_results = index, num_results
        self.check_encoder, self.encoder = check_encoder, encoder
        self.searcher = index if searcher is None else searcher
        self._checked = False

    def _copy(self, **changes) -> "DenseRetriever":
        args = dict(num_results=self.num_results, check_encoder=self.check_encoder, encoder=self.encoder,
                    searcher=self.searcher)
        return type(self)(self.index, **{**args, **changes})

    def size(self) -> dict:
        """``bytes_per_doc`` and ``compression_vs_float32`` of what this retriever searches."""
        return self.searcher.size()

    def bind_encoder(self, encoder) -> "DenseRetriever":
        """A copy that knows the encoder before it; checked against the index now if it exists, else on first use."""
        bound = self._copy(encoder=encoder.model.settings())
        if self.check_encoder and self.index.exists():
            bound._check()
        return bound

    def _check(self) -> None:
        if self.check_encoder and self.encoder is not None and not self._checked:
            self.index.check_encoder(self.encoder)
        self._checked = True

    def fuse_rank_cutoff(self, k: int):
        # an approximate search with a smaller k can return other documents, so only exact search is cut early
        return self._copy(num_results=k) if k < self.num_results and self.searcher is self.index else None

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "query_vec"], "DenseRetriever", "Encode queries first: enc >> index.retriever()")
        self._check()
        keep = [c for c in inp.columns if c != "query_vec"]
        if not len(inp):
            return pd.DataFrame(columns=keep + RESULT_COLUMNS)
        queries = vectors_of(inp, "query_vec", ("qid",), "DenseRetriever", dim=self.index.dim)
        scores, rows = self.searcher.search(queries, self.num_results)
        return results_frame(inp, keep, scores, rows, self.index)

    def __repr__(self) -> str:
        if self.searcher is self.index:
            return f"{self.index!r}.retriever(num_results={self.num_results})"
        return f"{self.searcher!r}.retriever(num_results={self.num_results})"


def results_frame(queries: pd.DataFrame, keep: list[str], scores: np.ndarray, rows: np.ndarray,
                  index) -> pd.DataFrame:
    """One row per (query, hit): the ``keep`` query columns repeated, then docno/docid/score/rank; no Python loop.
    Rows of -1 (an approximate search that found fewer than k) are left out."""
    nq, k = rows.shape
    found = rows >= 0
    if found.all():
        counts, flat, flat_scores = np.full(nq, k), rows.ravel(), scores.ravel()
        rank = np.tile(np.arange(k), nq)
    else:
        counts, flat, flat_scores = found.sum(1), rows[found], scores[found]
        rank = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    query_rows = np.repeat(np.arange(nq), counts)
    columns = {c: queries[c].array.take(query_rows) for c in keep}   # keeps each column's dtype, no re-checks
    columns["docno"] = index.docnos.take(flat)
    columns["docid"] = flat
    columns["score"] = flat_scores.astype(np.float64)
    columns["rank"] = rank
    return pd.DataFrame(columns, copy=False)
