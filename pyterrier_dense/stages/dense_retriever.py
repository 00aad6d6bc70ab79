"""DenseRetriever: top-k retrieval of ``query_vec`` against a dense index (exact, or through a FAISS searcher)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from .columns import check_frame_encoder, check_num_results, require_columns, vectors_of

__all__ = ["DenseRetriever", "results_frame", "unique_queries"]

RESULT_COLUMNS = ["docno", "docid", "score", "rank"]


def unique_queries(inp: pd.DataFrame, stage: str, column: str = "query_vec") -> pd.DataFrame:
    """One row per qid. Rows repeating a qid with the same ``column`` are one query; with another value, an error."""
    codes, uniques = pd.factorize(inp["qid"])
    if len(uniques) == len(inp):
        return inp
    first = np.unique(codes, return_index=True)[1]
    vecs = [np.asarray(v) for v in inp[column].tolist()]
    for row, code in enumerate(codes):
        ref = vecs[first[code]]
        if vecs[row] is not ref and (np.shape(vecs[row]) != np.shape(ref) or not np.array_equal(vecs[row], ref)):
            raise ValueError(f"{stage}: qid {uniques[code]!r} appears in several rows with different {column}; "
                             "give each query its own qid")
    return inp.iloc[np.sort(first)]


class DenseRetriever(pt.Transformer):
    """``enc >> index.retriever(num_results=1000)``: the top ``num_results`` documents by inner product.

    The ``searcher`` is exact (all queries of a frame in one blocked matrix product, ties by index order) or an
    approximate one (HNSW, IVF, PQ; see ``DenseIndex.hnsw_retriever`` and friends). Each call searches one pinned
    generation of the index. Output: the query columns (without ``query_vec``) + ``docno``, ``docid`` (row in the
    index), ``score``, ``rank``. When the frame carries its encoder's settings (every ``ptd.BiEncoder`` output
    does), they are checked against the index's, whatever the pipeline.
    """

    def __init__(self, index, *, num_results: int = 1000, check_encoder: bool = True, searcher=None):
        self.index, self.num_results = index, check_num_results(num_results)
        self.check_encoder, self.searcher = check_encoder, searcher

    def _search(self, snap, queries: np.ndarray, k: int):
        if self.searcher is None:
            return snap.search(queries, k)
        return self.searcher.search(snap, queries, k)

    def size(self) -> dict:
        """``bytes_per_doc`` and ``compression_vs_float32`` of what this retriever searches."""
        if self.searcher is None:
            return self.index.size()
        return self.searcher.size(self.index.snapshot())

    def fuse_rank_cutoff(self, k: int):
        # an approximate search with a smaller k can return other documents, so only exact search is cut early
        if k < self.num_results and self.searcher is None:
            return DenseRetriever(self.index, num_results=k, check_encoder=self.check_encoder)
        return None

    def transform_inputs(self):
        return [["qid", "query_vec"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        return [c for c in input_columns if c != "query_vec"] + RESULT_COLUMNS

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "query_vec"], "DenseRetriever", "Encode queries first: enc >> index.retriever()")
        snap = self.index.snapshot()
        check_frame_encoder(self.index, inp, snap, self.check_encoder, "query_vec")
        keep = [c for c in inp.columns if c != "query_vec"]
        if not len(inp):
            return pd.DataFrame(columns=keep + RESULT_COLUMNS)
        inp = unique_queries(inp, "DenseRetriever")
        queries = vectors_of(inp, "query_vec", ("qid",), "DenseRetriever", dim=snap.dim)
        scores, rows = self._search(snap, queries, self.num_results)
        return results_frame(inp, keep, scores, rows, snap.docnos)

    def _key(self) -> tuple:
        return (type(self), self.index, self.num_results, self.check_encoder,
                None if self.searcher is None else self.searcher.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, DenseRetriever) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        if self.searcher is None:
            return f"{self.index!r}.retriever(num_results={self.num_results})"
        return f"{self.searcher!r}.retriever(num_results={self.num_results})"


def results_frame(queries: pd.DataFrame, keep: list[str], scores: np.ndarray, rows: np.ndarray,
                  docnos) -> pd.DataFrame:
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
    columns["docno"] = docnos.take(flat)
    columns["docid"] = flat
    columns["score"] = flat_scores.astype(np.float64)
    columns["rank"] = rank
    return pd.DataFrame(columns, copy=False)
