"""Fusion of two or more runs into one: normalised score interpolation, or reciprocal-rank fusion."""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import numpy as np
import pandas as pd
import pyterrier as pt

from .columns import check_num_results
from .ranking import sort_and_rank

__all__ = ["ScoreFusion", "RRFusion"]

NORMS = ("minmax", "zscore", "none")


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x)


def _query_columns(columns: list[str]) -> list[str]:
    """The input columns a fused row carries: all of a query frame's, only the query columns of a result frame
    (a document-level column such as ``docid`` belongs to one input row, not to the fused documents)."""
    if "docno" in columns:
        wanted = set(pt.model.query_columns(pd.DataFrame(columns=columns)))
        columns = [c for c in columns if c in wanted]
    return [c for c in columns if c not in ("docno", "score", "rank", "text") and not c.endswith("_vec")]


class _Fusion(pt.Transformer):
    """Runs every stage on the same queries and combines their (qid, docno) scores.

    Subclasses define ``_contribution(run) -> (values, missing)``: per-row values of a run (a float ``score``
    column, finite), and (indexed by qid) the value a document missing from that run gets for the query.
    """

    def __init__(self, *stages: pt.Transformer, weights: Sequence[float] | None = None, num_results: int = 1000):
        name = type(self).__name__
        if len(stages) < 2:
            raise ValueError(f"{name} needs at least two stages, got {len(stages)}")
        for i, stage in enumerate(stages):
            if not isinstance(stage, pt.Transformer):
                raise TypeError(f"{name}: stage {i} must be a pt.Transformer, got {type(stage).__name__} ({stage!r})")
        weights = [1.0] * len(stages) if weights is None else list(weights)
        if len(weights) != len(stages):
            raise ValueError(f"{len(weights)} weights given for {len(stages)} stages")
        if not all(_is_number(w) for w in weights):
            raise ValueError(f"{name}: weights must be finite numbers, got {weights!r}")
        self.stages, self.weights = list(stages), [float(w) for w in weights]
        self.num_results = check_num_results(num_results)

    def _run(self, i: int, stage: pt.Transformer, inp: pd.DataFrame) -> pd.DataFrame:
        """Stage ``i``'s (qid, docno, score) rows, score as float64; a non-finite score is an error naming the row."""
        run = stage.transform(inp)
        where = f"{type(self).__name__}: stage {i} ({stage!r})"
        try:
            pt.validate.result_frame(run)
        except pt.validate.InputValidationError as e:
            raise ValueError(f"{where} did not return a result frame: {e}") from None
        run = run[["qid", "docno", "score"]].reset_index(drop=True)
        try:
            run["score"] = run["score"].astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where} gave non-numeric scores: {e}") from None
        bad = ~np.isfinite(run["score"].to_numpy())
        if bad.any():
            row = run.iloc[int(np.argmax(bad))]
            raise ValueError(f"{where} gave score {row['score']} for qid {row['qid']!r}, docno {row['docno']!r}; "
                             "fusion needs finite scores")
        return run

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=["qid"], context=self)
        columns = []
        for i, stage in enumerate(self.stages):
            run = self._run(i, stage, inp)
            values, missing = self._contribution(run)
            col = pd.Series(np.asarray(values, np.float64), index=pd.MultiIndex.from_frame(run[["qid", "docno"]]),
                            name=i)
            columns.append((col[~col.index.duplicated()], missing))
        table = pd.concat([c for c, _ in columns], axis=1)
        qids = table.index.get_level_values("qid")
        score = np.zeros(len(table))
        for (col, missing), w in zip(columns, self.weights):
            vals = table[col.name].to_numpy(dtype=np.float64)
            fill = missing.reindex(qids).fillna(0.0).to_numpy(dtype=np.float64)
            score += w * np.where(np.isnan(vals), fill, vals)
        fused = table.index.to_frame(index=False).assign(score=score)
        fused = fused.sort_values(["qid", "score", "docno"], ascending=[True, False, True], kind="stable")
        fused = fused.groupby("qid", sort=False).head(self.num_results)
        queries = inp[_query_columns(list(inp.columns))].drop_duplicates("qid")
        return sort_and_rank(queries.merge(fused, on="qid", how="inner"))

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """For ``pt.inspect`` (and so ``pt.Experiment``'s validation): the query columns + docno, score, rank."""
        pt.validate.columns(input_columns, includes=["qid"], context=self)
        return _query_columns(list(input_columns)) + ["docno", "score", "rank"]

    def _params(self) -> dict:
        return {}

    def _key(self) -> tuple:
        return (type(self), tuple(self.stages), tuple(self.weights), self.num_results, tuple(self._params().items()))

    def __eq__(self, other) -> bool:
        """Equal when of the same class with equal stages and settings (lets ``pt.Experiment`` share prefixes)."""
        return self._key() == other._key() if isinstance(other, _Fusion) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({', '.join(map(repr, self.stages))}, weights={self.weights}{params})"


class ScoreFusion(_Fusion):
    """Weighted sum of per-query normalised scores (``norm`` = ``"minmax"``, ``"zscore"`` or ``"none"``).

    Example::

        hybrid = ptd.ScoreFusion(bm25, enc >> index.retriever(), weights=[0.3, 0.7])
        pt.Experiment([bm25, dense, hybrid], topics, qrels, [pt.measures.nDCG @ 10])

    Min-max maps each query's scores onto [0, 1] (a constant run maps to 1); z-score subtracts the query's mean
    and divides by its standard deviation. A document a run did not return gets that run's lowest normalised
    score for the query, i.e. it counts as ranked just below the run's last document. A stage that returns a
    non-finite score (inf, NaN) is an error naming the stage, qid and docno.
    """

    def __init__(self, *stages: pt.Transformer, weights: Sequence[float] | None = None, norm: str = "minmax",
                 num_results: int = 1000):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        super().__init__(*stages, weights=weights, num_results=num_results)
        self.norm = norm

    def _params(self) -> dict:
        return {"norm": self.norm}

    def _contribution(self, run):
        g = run.groupby("qid")["score"]
        s = run["score"]
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
        if not _is_number(k) or k <= 0:
            raise ValueError(f"k must be a finite number > 0, got {k!r}")
        super().__init__(*stages, weights=weights, num_results=num_results)
        self.k = float(k)

    def _params(self) -> dict:
        return {"k": self.k}

    def _contribution(self, run):
        ranks = run.sort_values(["qid", "score", "docno"], ascending=[True, False, True], kind="stable") \
            .groupby("qid").cumcount().reindex(run.index)
        values = 1.0 / (self.k + ranks.to_numpy(dtype=np.float64) + 1)
        return pd.Series(values), pd.Series(dtype=np.float64)
