"""Sparse index stages: exact retrieval of ``query_toks`` and re-scoring of candidates from stored term weights."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyterrier as pt

from ..indexes.sparse_search import score_pairs, sparse_top_k
from ..indexes.sparse_store import check_toks
from .columns import _row_id, check_frame_encoder, check_num_results, query_groups, require_columns, stored_rows
from .dense_retriever import RESULT_COLUMNS, results_frame, unique_queries
from .ranking import sort_and_rank

__all__ = ["SparseRetriever", "SparseScorer", "query_terms"]

log = logging.getLogger("pyterrier_dense")


def query_terms(snap, inp: pd.DataFrame, stage: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each row's ``query_toks``: the index's term ids (ascending) and float64 weights of the terms the index
    holds (terms it lacks are dropped, so a query may end up with none). A malformed dict is an error naming the
    qid."""
    out = []
    for i, toks in enumerate(inp["query_toks"].tolist()):
        terms, weights = check_toks(toks, f"{stage}: 'query_toks' of {_row_id(inp, i, ('qid',))}")
        ids = snap.term_ids(terms) if snap.nterms else np.full(len(terms), -1)
        found = ids >= 0
        ids, weights = ids[found].astype(np.int64), weights[found]
        order = np.argsort(ids)
        out.append((ids[order], weights[order]))
    return out


class SparseRetriever(pt.Transformer):
    """``splade.query_encoder() >> index.retriever(num_results=1000)``: the exact top documents by the dot product
    of ``query_toks`` with the stored weights. Output: the query columns (without ``query_toks``) + ``docno``,
    ``docid``, ``score``, ``rank``; a query none of whose terms the index holds gets no rows (counted in a
    warning that names one)."""

    def __init__(self, index, *, num_results: int, check_encoder: bool):
        self.index, self.num_results = index, check_num_results(num_results)
        self.check_encoder = check_encoder

    def transform_inputs(self):
        return [["qid", "query_toks"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        return [c for c in input_columns if c != "query_toks"] + RESULT_COLUMNS

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "query_toks"], "SparseRetriever",
                        "Encode queries first: splade.query_encoder() >> index.retriever()")
        snap = self.index.snapshot()
        check_frame_encoder(self.index, inp, snap, self.check_encoder, "query_toks")
        keep = [c for c in inp.columns if c != "query_toks"]
        if not len(inp):
            return pd.DataFrame(columns=keep + RESULT_COLUMNS)
        inp = unique_queries(inp, "SparseRetriever", "query_toks")
        queries = query_terms(snap, inp, "SparseRetriever")
        empty = [i for i, (ids, _) in enumerate(queries) if not len(ids)]
        if empty:
            log.warning("SparseRetriever: %d of %d queries have no term that %s holds and get no results, e.g. %s",
                        len(empty), len(queries), snap.path, _row_id(inp, empty[0], ("qid",)))
        k = min(self.num_results, snap.count)
        scores = np.zeros((len(queries), k), np.float64)
        rows = np.full((len(queries), k), -1, np.int64)
        for i, (ids, weights) in enumerate(queries):
            s, r = sparse_top_k(snap, ids, weights, k)
            scores[i, :len(s)], rows[i, :len(r)] = s, r
        return results_frame(inp, keep, scores, rows, snap.docnos)

    def fuse_rank_cutoff(self, k: int):
        # exact search: a smaller k gives the same head of the ranking
        if k < self.num_results:
            return SparseRetriever(self.index, num_results=k, check_encoder=self.check_encoder)
        return None

    def _key(self) -> tuple:
        return (type(self), self.index, self.num_results, self.check_encoder)

    def __eq__(self, other) -> bool:
        return isinstance(other, SparseRetriever) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"{self.index!r}.retriever(num_results={self.num_results})"


class SparseScorer(pt.Transformer):
    """``bm25 % 100 >> splade.query_encoder() >> index.scorer()``: each (``qid``, ``docno``) row gets the dot
    product of its ``query_toks`` with the document's stored weights (nothing is re-encoded); rows are re-ranked and
    other columns kept. A docno that is not in the index is an error naming it."""

    def __init__(self, index, *, check_encoder: bool = True):
        self.index, self.check_encoder = index, check_encoder

    def transform_inputs(self):
        return [["qid", "docno", "query_toks"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        return [c for c in input_columns if c not in ("query_toks", "score", "rank")] + ["score", "rank"]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "docno", "query_toks"], "SparseScorer",
                        "Encode queries first: first_stage >> splade.query_encoder() >> index.scorer()")
        snap = self.index.snapshot()
        check_frame_encoder(self.index, inp, snap, self.check_encoder, "query_toks")
        out = inp.drop(columns=[c for c in ("query_toks", "score", "rank") if c in inp.columns])
        if not len(inp):
            return out.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        rows = stored_rows(inp, snap, "SparseScorer")
        first, groups = query_groups(inp)
        queries = query_terms(snap, inp.iloc[first], "SparseScorer")
        scores = np.empty(len(inp), np.float64)
        for (ids, weights), at in zip(queries, groups):
            scores[at] = score_pairs(snap, rows[at], ids, weights)
        return sort_and_rank(out.assign(score=scores))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and (self.index, self.check_encoder) == (other.index, other.check_encoder)

    def __hash__(self) -> int:
        return hash((type(self), self.index, self.check_encoder))

    def __repr__(self) -> str:
        return f"{self.index!r}.scorer()"
