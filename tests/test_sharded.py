"""ShardedRetriever: shards of a collection searched apart and merged give what one index over them all gives."""
import numpy as np
import pandas as pd
import pytest

import pyterrier_dense as ptd
from conftest import random_vectors

DIM = 16


def split(n: int, parts: int) -> list[range]:
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def query_frame(vecs, column="query_vec"):
    return pd.DataFrame({"qid": [f"q{i}" for i in range(len(vecs))], column: list(vecs)})


@pytest.mark.parametrize("parts", [1, 3])
def test_dense_shards_merge_to_the_whole_index(tmp_path, parts):
    vecs = random_vectors(90, DIM, seed=4)
    vecs[7] = vecs[50]                                   # a tie across shards: the earlier shard's document first
    records = [{"docno": f"d{i}", "doc_vec": vecs[i]} for i in range(90)]
    whole = ptd.DenseIndex(tmp_path / "whole").indexer().index(records)
    shards = [ptd.DenseIndex(tmp_path / f"s{k}").indexer().index([records[i] for i in rows])
              for k, rows in enumerate(split(90, parts))]
    queries = query_frame(np.vstack([random_vectors(4, DIM, seed=9), vecs[50:51]]))
    expected = whole.retriever(num_results=10)(queries).drop(columns="docid")
    merged = ptd.ShardedRetriever(*(s.retriever(num_results=10) for s in shards), num_results=10)(queries)
    pd.testing.assert_frame_equal(merged[expected.columns], expected)


def test_sparse_and_colbert_shards_merge_too(tmp_path):
    rng = np.random.default_rng(2)
    toks = [{"docno": f"d{i}", "toks": {f"t{j}": float(rng.random()) + 0.1 for j in rng.integers(0, 30, 5)}}
            for i in range(60)]
    whole = ptd.SparseIndex(tmp_path / "sw").indexer().index(toks)
    shards = [ptd.SparseIndex(tmp_path / f"s{k}").indexer().index([toks[i] for i in rows])
              for k, rows in enumerate(split(60, 2))]
    q = pd.DataFrame({"qid": ["q1", "q2"], "query_toks": [{"t1": 1.0, "t3": 0.5}, {"t7": 2.0}]})
    expected = whole.retriever(num_results=5)(q).drop(columns="docid")
    merged = ptd.ShardedRetriever(*(s.retriever(num_results=5) for s in shards), num_results=5)(q)
    pd.testing.assert_frame_equal(merged[expected.columns], expected)

    mats = [{"docno": f"d{i}", "doc_embs": random_vectors(int(rng.integers(2, 6)), DIM, seed=i)} for i in range(40)]
    cw = ptd.ColBERTIndex(tmp_path / "cw").indexer(ncentroids=4).index(mats)
    cshards = [ptd.ColBERTIndex(tmp_path / f"c{k}").indexer(ncentroids=4).index([mats[i] for i in rows])
               for k, rows in enumerate(split(40, 2))]
    cq = pd.DataFrame({"qid": ["q1"], "query_embs": [random_vectors(3, DIM, seed=77)]})
    expected = cw.exhaustive_retriever(num_results=8)(cq).drop(columns="docid")
    merged = ptd.ShardedRetriever(*(s.exhaustive_retriever(num_results=8) for s in cshards), num_results=8)(cq)
    pd.testing.assert_frame_equal(merged[expected.columns], expected)


def test_shared_documents_and_mixed_kinds_are_errors(tmp_path):
    vecs = random_vectors(10, DIM, seed=1)
    records = [{"docno": f"d{i}", "doc_vec": vecs[i]} for i in range(10)]
    a = ptd.DenseIndex(tmp_path / "a").indexer().index(records[:6])
    b = ptd.DenseIndex(tmp_path / "b").indexer().index(records[4:])
    with pytest.raises(ValueError, match=r"docno 'd[45]' comes from shards \[0, 1\]"):
        ptd.ShardedRetriever(a.retriever(num_results=10), b.retriever(num_results=10))(query_frame(vecs[:1]))
    s = ptd.SparseIndex(tmp_path / "s").indexer().index([{"docno": "x", "toks": {"t": 1.0}}])
    with pytest.raises(ValueError, match="one kind of retriever.*ScoreFusion"):
        ptd.ShardedRetriever(a.retriever(), s.retriever())
    with pytest.raises(ValueError, match="at least one"):
        ptd.ShardedRetriever()
