"""Search across several indexes of the same kind (shards of one collection) merged into one run."""
from __future__ import annotations

import pandas as pd
import pyterrier as pt

from .columns import check_num_results
from .ranking import sort_and_rank

__all__ = ["ShardedRetriever"]


class ShardedRetriever(pt.Transformer):
    """Runs the same kind of retriever over each shard of a collection (one index per shard, or per machine) and
    merges their runs: each query's top ``num_results`` by score over all shards, which for exact retrievers is
    what one index over all the documents returns (ties: the earlier shard first, then the shard's own order).

    Example::

        shards = [ptd.DenseIndex(f"scifact.{i}.dense") for i in range(4)]
        dense = enc >> ptd.ShardedRetriever(*(s.retriever(num_results=100) for s in shards), num_results=100)

    Scores are merged as they are, so the retrievers must score alike: one class for all, and for a mix of kinds use
    :class:`~pyterrier_dense.ScoreFusion`. The shards must not share documents: a docno two shards return for a
    query is an error naming it. ``docid`` (a row within one shard) is dropped.
    """

    def __init__(self, *retrievers: pt.Transformer, num_results: int = 1000):
        if not retrievers:
            raise ValueError("ShardedRetriever needs at least one retriever (one per shard)")
        for i, r in enumerate(retrievers):
            if not isinstance(r, pt.Transformer):
                raise TypeError(f"ShardedRetriever: shard {i} must be a pt.Transformer, got {type(r).__name__}")
        kinds = {type(r).__name__ for r in retrievers}
        if len(kinds) > 1:
            raise ValueError(f"ShardedRetriever merges the scores of one kind of retriever, got {sorted(kinds)}; "
                             "to combine different kinds use ptd.ScoreFusion or ptd.RRFusion")
        self.retrievers, self.num_results = list(retrievers), check_num_results(num_results)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=["qid"], context=self)
        runs = []
        for i, retriever in enumerate(self.retrievers):
            run = retriever.transform(inp)
            runs.append(run.drop(columns=["docid"], errors="ignore").assign(_shard=i))
        merged = pd.concat(runs, ignore_index=True)
        if not len(merged):
            return merged.drop(columns="_shard")
        twice = merged.duplicated(["qid", "docno"], keep=False)
        if twice.any():
            row = merged[twice].iloc[0]
            shards = sorted(merged[twice & (merged.qid == row.qid) & (merged.docno == row.docno)]._shard.tolist())
            raise ValueError(f"docno {row.docno!r} comes from shards {shards} (for qid {row.qid!r}): shards must "
                             "hold different documents")
        merged = merged.sort_values(["_shard", "rank"], kind="stable")     # ties: earlier shard, then shard order
        out = sort_and_rank(merged.drop(columns=["_shard", "rank"]))
        return out[out["rank"] < self.num_results].reset_index(drop=True)

    def __repr__(self) -> str:
        return f"ShardedRetriever({', '.join(map(repr, self.retrievers))}, num_results={self.num_results})"
