"""Validation by ``pt.Experiment``: each epoch, the model re-ranks a fixed candidate run of the dev topics (what the
negatives pipeline or the teacher retrieves for them), and the measure (nDCG@10 by default) picks the best epoch."""
from __future__ import annotations

import logging
from typing import Callable

import ir_measures
import pandas as pd
import pyterrier as pt

from .examples import _ranked_run, text_lookup

__all__ = ["rerank_validation"]

log = logging.getLogger("pyterrier_dense")


def rerank_validation(scorer: pt.Transformer, candidates, topics: pd.DataFrame, qrels: pd.DataFrame, texts, *,
                      metric: str = "nDCG@10", stage: str = "fit (validation)") -> Callable[[], float]:
    """A function measuring ``metric`` of ``scorer`` (a stage taking qid, query, docno, text) re-ranking
    ``candidates`` (a pipeline run once here on ``topics``, or a run DataFrame) against ``qrels``."""
    topics = topics[["qid", "query"]].astype({"qid": str}).drop_duplicates("qid")
    run = _ranked_run(candidates, topics, stage)[["qid", "docno"]].merge(topics, on="qid")
    if not len(run):
        raise ValueError(f"{stage}: the candidates returned nothing for the {len(topics)} validation topics")
    run["text"] = text_lookup(texts)(run["docno"].tolist())
    known = run["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))
    if not known.all():
        log.warning("%s: %d of %d candidates have no text and are left out", stage, int((~known).sum()), len(run))
        run = run[known]
    run = run.reset_index(drop=True)

    measure_obj = ir_measures.parse_measure(metric) if isinstance(metric, str) else metric

    def measure() -> float:
        if hasattr(scorer, "clear_query_cache"):   # vectors cached before this epoch's updates are stale
            scorer.clear_query_cache()
        result = scorer.transform(run.copy())
        return float(pt.Experiment([result], topics, qrels, [measure_obj], names=["model"])[str(measure_obj)].iloc[0])
    return measure
