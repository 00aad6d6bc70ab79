"""ColBERT index stages: end-to-end (PLAID) and exhaustive retrieval of ``query_embs``, and re-scoring of candidate
documents from the stored token vectors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from ..indexes.late_search import DEFAULT_CANDIDATES, exhaustive_search, plaid_search, score_docs
from .columns import check_frame_encoder, check_num_results, matrices_of, query_groups, require_columns, stored_rows
from .dense_retriever import RESULT_COLUMNS, results_frame, unique_queries
from .ranking import sort_and_rank

__all__ = ["ColBERTRetriever", "ColBERTScorer"]


class ColBERTRetriever(pt.Transformer):
    """``colbert.query_encoder() >> index.retriever(num_results=1000)``: the top documents by MaxSim, found
    PLAID-style (``cells`` probed per query vector, ``candidates`` scored exactly) or, with ``cells=None``, by
    exact MaxSim over every document. Output: the query columns (without ``query_embs``) + ``docno``, ``docid``,
    ``score``, ``rank``."""

    def __init__(self, index, *, num_results: int, cells: int | None, candidates: int | None, check_encoder: bool):
        self.index, self.num_results = index, check_num_results(num_results)
        if cells is not None:
            check_num_results(cells, "cells")
        if candidates is not None:
            check_num_results(candidates, "candidates")
        self.cells, self.candidates, self.check_encoder = cells, candidates, check_encoder

    def search(self, snap, queries: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(scores, rows)`` of each query, best first."""
        if self.cells is None:
            return exhaustive_search(snap, queries, self.num_results)
        candidates = self.candidates or DEFAULT_CANDIDATES[snap.storage]
        return plaid_search(snap, queries, self.num_results, cells=self.cells, candidates=candidates)

    def transform_inputs(self):
        return [["qid", "query_embs"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        return [c for c in input_columns if c != "query_embs"] + RESULT_COLUMNS

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "query_embs"], "ColBERTRetriever",
                        "Encode queries first: colbert.query_encoder() >> index.retriever()")
        snap = self.index.snapshot()
        check_frame_encoder(self.index, inp, snap, self.check_encoder, "query_embs")
        keep = [c for c in inp.columns if c != "query_embs"]
        if not len(inp):
            return pd.DataFrame(columns=keep + RESULT_COLUMNS)
        inp = unique_queries(inp, "ColBERTRetriever", "query_embs")
        queries = matrices_of(inp, "query_embs", ("qid",), "ColBERTRetriever", dim=snap.dim)
        k = min(self.num_results, snap.count)
        scores = np.zeros((len(queries), k), np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for i, (s, r) in enumerate(self.search(snap, queries)):
            scores[i, :len(s)], rows[i, :len(r)] = s, r
        return results_frame(inp, keep, scores, rows, snap.docnos)

    def _key(self) -> tuple:
        return (type(self), self.index, self.num_results, self.cells, self.candidates, self.check_encoder)

    def __eq__(self, other) -> bool:
        return isinstance(other, ColBERTRetriever) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        if self.cells is None:
            return f"{self.index!r}.exhaustive_retriever(num_results={self.num_results})"
        return (f"{self.index!r}.retriever(num_results={self.num_results}, cells={self.cells}, "
                f"candidates={self.candidates})")


class ColBERTScorer(pt.Transformer):
    """``bm25 % 100 >> colbert.query_encoder() >> index.scorer()``: each (``qid``, ``docno``) row gets the MaxSim of
    its query's ``query_embs`` with the document's stored token vectors (nothing is re-encoded); rows are re-ranked
    and other columns kept. A docno that is not in the index is an error naming it."""

    def __init__(self, index, *, check_encoder: bool = True):
        self.index, self.check_encoder = index, check_encoder

    def transform_inputs(self):
        return [["qid", "docno", "query_embs"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        return [c for c in input_columns if c not in ("query_embs", "score", "rank")] + ["score", "rank"]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "docno", "query_embs"], "ColBERTScorer",
                        "Encode queries first: first_stage >> colbert.query_encoder() >> index.scorer()")
        snap = self.index.snapshot()
        check_frame_encoder(self.index, inp, snap, self.check_encoder, "query_embs")
        out = inp.drop(columns=[c for c in ("query_embs", "score", "rank") if c in inp.columns])
        if not len(inp):
            return out.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        rows = stored_rows(inp, snap, "ColBERTScorer")
        first, groups = query_groups(inp)
        queries = matrices_of(inp.iloc[first], "query_embs", ("qid",), "ColBERTScorer", dim=snap.dim)
        scores = np.empty(len(inp), np.float64)
        for query, at in zip(queries, groups):
            scores[at] = score_docs(snap, query, rows[at])
        return sort_and_rank(out.assign(score=scores))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and (self.index, self.check_encoder) == (other.index, other.check_encoder)

    def __hash__(self) -> int:
        return hash((type(self), self.index, self.check_encoder))

    def __repr__(self) -> str:
        return f"{self.index!r}.scorer()"
