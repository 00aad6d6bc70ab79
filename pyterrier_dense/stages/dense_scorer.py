"""DenseScorer: re-scores candidate documents from the vectors a dense index stores (no re-encoding)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from .columns import check_frame_encoder, require_columns, stored_rows, vectors_of
from .ranking import sort_and_rank

__all__ = ["DenseScorer"]

SCORE_CHUNK = 65536


class DenseScorer(pt.Transformer):
    """``bm25 >> enc >> index.scorer()``: each (``qid``, ``docno``) row gets the inner product of its query's
    ``query_vec`` with the document's stored vector; rows are re-ranked. Other columns (``text``, ...) are kept.
    A docno that is not in the index is an error naming it, never a silently dropped row. The encoder's settings,
    carried by the frame, are checked against the index's.
    """

    def __init__(self, index, *, check_encoder: bool = True):
        self.index, self.check_encoder = index, check_encoder

    def transform_inputs(self):
        return [["qid", "docno", "query_vec"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        return [c for c in input_columns if c not in ("query_vec", "score", "rank")] + ["score", "rank"]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "docno", "query_vec"], "DenseScorer",
                        "Encode queries first: first_stage >> enc >> index.scorer()")
        snap = self.index.snapshot()
        check_frame_encoder(self.index, inp, snap, self.check_encoder, "query_vec")
        out = inp.drop(columns=[c for c in ("query_vec", "score", "rank") if c in inp.columns])
        if not len(inp):
            return out.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        codes, _ = pd.factorize(inp["qid"])
        first = np.unique(codes, return_index=True)[1]
        queries = vectors_of(inp.iloc[first], "query_vec", ("qid",), "DenseScorer", dim=snap.dim)
        rows = stored_rows(inp, snap, "DenseScorer")
        scores = np.empty(len(inp), dtype=np.float64)
        for start in range(0, len(inp), SCORE_CHUNK):
            docs = snap.gather(rows[start:start + SCORE_CHUNK])
            scores[start:start + len(docs)] = np.einsum("ij,ij->i", queries[codes[start:start + len(docs)]], docs)
        return sort_and_rank(out.assign(score=scores))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and (self.index, self.check_encoder) == (other.index, other.check_encoder)

    def __hash__(self) -> int:
        return hash((type(self), self.index, self.check_encoder))

    def __repr__(self) -> str:
        return f"{self.index!r}.scorer()"
