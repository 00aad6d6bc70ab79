"""DenseScorer: re-scores candidate documents from the vectors a DenseIndex stores (no re-encoding)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from ..indexes.dense_index import DenseIndex
from .ranking import sort_and_rank
from .columns import require_columns, vectors_of
from .dense_retriever import DenseRetriever

__all__ = ["DenseScorer"]

GATHER_CHUNK = 65536


class DenseScorer(DenseRetriever):
    """``bm25 >> enc >> index.scorer()``: each (``qid``, ``docno``) row gets the inner product of its query's
    ``query_vec`` with the document's stored vector; rows are re-ranked. Other columns (``text``, ...) are kept.
    A docno that is not in the index is an error naming it, never a silently dropped row.
    """

    def __init__(self, index: DenseIndex, *, check_encoder: bool = True, encoder: dict | None = None):
        super().__init__(index, check_encoder=check_encoder, encoder=encoder)

    def _copy(self, **changes) -> "DenseScorer":
        changes.pop("num_results", None)
        changes.pop("searcher", None)
        return type(self)(self.index, **{"check_encoder": self.check_encoder, "encoder": self.encoder, **changes})

    def fuse_rank_cutoff(self, k: int):
        return None

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "docno", "query_vec"], "DenseScorer",
                        "Encode queries first: first_stage >> enc >> index.scorer()")
        self._check()
        out = inp.drop(columns=[c for c in ("query_vec", "score", "rank") if c in inp.columns])
        if not len(inp):
            return out.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        codes, _ = pd.factorize(inp["qid"])
        first = np.unique(codes, return_index=True)[1]
        queries = vectors_of(inp.iloc[first], "query_vec", ("qid",), "DenseScorer", dim=self.index.dim)
        rows = self.index.docnos.rows_of(inp["docno"].to_numpy())
        if (rows < 0).any():
            missing = inp["docno"].to_numpy()[rows < 0]
            raise ValueError(f"DenseScorer: {len(missing)} docno(s) are not in {self.index.path}, e.g. {list(missing[:5])}")
        scores = np.empty(len(inp), dtype=np.float64)
        vectors = self.index.vectors
        for start in range(0, len(inp), GATHER_CHUNK):
            r = rows[start:start + GATHER_CHUNK]
            order = np.argsort(r, kind="stable")     # read the memory map in file order
            docs = np.empty((len(r), self.index.dim), np.float32)
            docs[order] = vectors[r[order]]
            scores[start:start + len(r)] = np.einsum("ij,ij->i", queries[codes[start:start + len(r)]], docs)
        return sort_and_rank(out.assign(score=scores))

    def __repr__(self) -> str:
        return f"{self.index!r}.scorer()"
