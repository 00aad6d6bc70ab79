"""Fusion of two or more runs into one: normalised score interpolation, or reciprocal-rank fusion."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import pyterrier as pt

from .ranking import sort_and_rank
from .columns import require_columns

__all__ = ["ScoreFusion", "RRFusion"]

NORMS = ("minmax", "zscore", "none")


class _Fusion(pt.Transformer):
    """Runs every stage on the same queries and combines their (qid, docno) scores.

    Subclasses define ``_contribution(run) -> (values, missing)``: per-row values of a run, and (indexed by qid)
    the value a document missing from that run gets for the query.
    """

    def __init__(self, *stages: pt.Transformer, weights: Sequence[float] | None = None, num_results: int = 1000):
        if len(stages) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two stages, got {len(stages)}")
        weights = [1.0] * len(stages) if weights is None else [float(w) for w in weights]
        if len(weights) != len(stages):
            raise ValueError(f"{len(weights)} weights given for {len(stages)} stages")
        self.stages, self.weights, self.num_results = list(stages), weights, num_results

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid"], type(self).__name__)
        columns = []
        for i, stage in enumerate(self.stages):
            run = stage.transform(inp)
            require_columns(run, ["qid", "docno", "score"], f"{type(self).__name__} (output of stage {i}, {stage!r})")
            values, missing = self._contribution(run[["qid", "docno", "score"]].reset_index(drop=True))
            col = pd.Series(values.to_numpy(), index=pd.MultiIndex.from_frame(run[["qid", "docno"]]), name=i)
            columns.append((col[~col.index.duplicated()], missing))
        table = pd.concat([c for c, _ in columns], axis=1)
        qids = table.index.get_level_values("qid")
        score = np.zeros(len(table))
        for (col, missing), w in zip(columns, self.weights):
            vals = table[col.name].to_numpy(dtype=np.float64)
            fill = missing.reindex(qids).fillna(0.0).to_numpy()
            score += w * np.where(np.isnan(vals), fill, vals)
        fused = table.index.to_frame(index=False).assign(score=score)
        fused = fused.sort_values(["qid", "score", "docno"], ascending=[True, False, True], kind="stable")
        fused = fused.groupby("qid", sort=False).head(self.num_results)
        query_cols = [c for c in inp.columns if c not in ("docno", "score", "rank", "text") and not c.endswith("_vec")]
        fused = inp[query_cols].drop_duplicates("qid").merge(fused, on="qid", how="inner")
        return sort_and_rank(fused)

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """For ``pt.inspect`` (and so ``pt.Experiment``'s validation): the query columns + docno, score, rank."""
        return [c for c in input_columns if c not in ("docno", "score", "rank", "text") and not c.endswith("_vec")] \
            + ["docno", "score", "rank"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.stages))}, weights={self.weights})"


class ScoreFusion(_Fusion):
    """Weighted sum of per-query normalised scores (``norm`` = ``"minmax"``, ``"zscore"`` or ``"none"``).

    Example::

        hybrid = ptd.ScoreFusion(bm25, enc >> index.retriever(), weights=[0.3, 0.7])
        pt.Experiment([bm25, dense, hybrid], topics, qrels, [pt.measures.nDCG @ 10])

    Min-max maps each query's scores onto [0, 1] (a constant run maps to 1); z-score subtracts the query's mean
    and divides by its standard deviation. A document a run did not return gets that run's lowest normalised
    score for the query, i.e. it counts as ranked just below the run's last document.
    """

    def __init__(self, *stages: pt.Transformer, weights: Sequence[float] | None = None, norm: str = "minmax",
                 num_results: int = 1000):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        super().__init__(*stages, weights=weights, num_results=num_results)
        self.norm = norm

    def _contribution(self, run):
        g = run.groupby("qid")["score"]
        s = run["score"].astype(np.float64)
        if self.norm == "minmax":
            lo, hi = g.transform("min"), g.transform("max")
            span = (hi - lo).to_numpy()
            values = pd.Series(np.where(span > 0, (s - lo) / np.where(span > 0, span, 1), 1.0))
        elif self.norm == "zscore":
            sd = g.transform("std", ddof=0).to_numpy()
            values = pd.Series(np.where(sd > 0, (s - g.transform("mean")) / np.where(sd > 0, sd, 1), 0.0))
        else:
            values = s
        return values, values.groupby(run["qid"]).min()


class RRFusion(_Fusion):
    """Reciprocal-rank fusion (Cormack et al., 2009): score = sum over runs of weight / (k + rank), rank from 1.

    Example::

        hybrid = ptd.RRFusion(bm25, enc >> index.retriever(), k=60)

    A document a run did not return contributes nothing from that run.
    """

    def __init__(self, *stages: pt.Transformer, k: float = 60, weights: Sequence[float] | None = None,
                 num_results: int = 1000):
        super().__init__(*stages, weights=weights, num_results=num_results)
        self.k = k

    def _contribution(self, run):
        ranks = run.sort_values(["qid", "score", "docno"], ascending=[True, False, True], kind="stable") \
            .groupby("qid").cumcount().reindex(run.index)
        values = 1.0 / (self.k + ranks.to_numpy() + 1)
        return pd.Series(values), pd.Series(dtype=np.float64)
