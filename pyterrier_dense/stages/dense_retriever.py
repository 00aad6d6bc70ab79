"""DenseRetriever: exact top-k retrieval of ``query_vec`` against a DenseIndex."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from ..indexes.dense_index import DenseIndex
from .columns import require_columns, vectors_of

__all__ = ["DenseRetriever"]

RESULT_COLUMNS = ["docno", "docid", "score", "rank"]


class DenseRetriever(pt.Transformer):
    """``enc >> index.retriever(num_results=1000)``: the top ``num_results`` documents by inner product.

    All queries of a frame are scored in one blocked matrix product. Output: the query columns (without
    ``query_vec``) + ``docno``, ``docid`` (row in the index), ``score``, ``rank``; ties by index order.
    """

    def __init__(self, index: DenseIndex, *, num_results: int = 1000, check_encoder: bool = True,
                 encoder: dict | None = None):
        if num_results < 1:
            raise ValueError(f"num_results must be >= 1, got {num_results}")
        self.index, self.num_results = index, num_results
        self.check_encoder, self.encoder = check_encoder, encoder
        self._checked = False

    def _copy(self, **changes) -> "DenseRetriever":
        args = dict(num_results=self.num_results, check_encoder=self.check_encoder, encoder=self.encoder)
        return type(self)(self.index, **{**args, **changes})

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
        return self._copy(num_results=k) if k < self.num_results else None

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "query_vec"], "DenseRetriever", "Encode queries first: enc >> index.retriever()")
        self._check()
        keep = [c for c in inp.columns if c != "query_vec"]
        if not len(inp):
            return pd.DataFrame(columns=keep + RESULT_COLUMNS)
        queries = vectors_of(inp, "query_vec", ("qid",), "DenseRetriever", dim=self.index.dim)
        scores, rows = self.index.search(queries, self.num_results)
        return results_frame(inp, keep, scores, rows, self.index)

    def __repr__(self) -> str:
        return f"{self.index!r}.retriever(num_results={self.num_results})"


def results_frame(queries: pd.DataFrame, keep: list[str], scores: np.ndarray, rows: np.ndarray,
                  index: DenseIndex) -> pd.DataFrame:
    """One row per (query, hit): the ``keep`` query columns repeated, then docno/docid/score/rank; no Python loop."""
    nq, k = rows.shape
    flat = rows.ravel()
    columns = {c: np.repeat(queries[c].to_numpy(), k) for c in keep}
    columns["docno"] = index.docnos[flat].astype(object)
    columns["docid"] = flat
    columns["score"] = scores.ravel().astype(np.float64)
    columns["rank"] = np.tile(np.arange(k), nq)
    return pd.DataFrame(columns, copy=False)
