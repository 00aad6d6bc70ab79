"""QdrantIndex in qdrant-client's local mode: exact search in the engine equals our own exact indexes for each
representation (dense, sparse, ColBERT MaxSim), re-scoring, the encoder check, bad input and an unreachable server."""
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qdrant_client", reason="QdrantIndex needs the qdrant extra: pip install 'pyterrier-dense[qdrant]'")

import pyterrier_dense as ptd
from pyterrier_dense.indexes.qdrant_store import QdrantUnavailableError
from conftest import random_vectors

DIM, ATTR = 16, "pyterrier_dense.encoder"


def top(run, k=10) -> dict:
    return {q: g.sort_values("rank").docno.tolist()[:k] for q, g in run.groupby("qid")}


def scores(run) -> dict:
    return {(r.qid, r.docno): r.score for r in run.itertuples()}


def same_runs(ours, engine, k=10, rtol=0.0):
    assert top(engine, k) == top(ours, k)
    a, b = scores(ours), scores(engine)
    assert np.allclose([a[key] for key in b], list(b.values()), atol=1e-4, rtol=rtol)


@pytest.fixture
def dense_records():
    vecs = random_vectors(200, DIM, seed=11)
    return [{"docno": f"d{i}", "doc_vec": vecs[i]} for i in range(200)]


def test_dense_exact_search_and_scorer_equal_ours(tmp_path, dense_records):
    ours = ptd.DenseIndex(tmp_path / "x.dense").indexer().index(dense_records)
    engine = ptd.QdrantIndex(tmp_path / "q", "dense")
    assert engine.indexer().index(dense_records) is engine and engine.count == 200
    q = pd.DataFrame({"qid": ["q1", "q2", "q3"], "query_vec": list(random_vectors(3, DIM, seed=5))})
    same_runs(ours.retriever(num_results=10)(q), engine.retriever(num_results=10)(q))
    candidates = pd.DataFrame({"qid": ["q1", "q1", "q2"], "docno": ["d3", "d150", "d9"]}).merge(q, on="qid")
    same_runs(ours.scorer()(candidates), engine.scorer()(candidates), k=2)
    with pytest.raises(ValueError, match="already exists.*overwrite"):
        engine.indexer().index(dense_records)
    with pytest.raises(ValueError, match="docno 'd5' is already in"):
        engine.indexer(mode="append").index(dense_records[5:7])
    with pytest.raises(ValueError, match="docno 'zz' .qid 'q1'. is not in"):
        engine.scorer()(pd.DataFrame({"qid": ["q1"], "docno": ["zz"]}).merge(q, on="qid"))


def test_sparse_and_maxsim_equal_ours(tmp_path):
    rng = np.random.default_rng(3)
    toks = [{"docno": f"d{i}", "toks": {f"t{j}": float(rng.random()) + 0.1 for j in rng.integers(0, 50, 8)}}
            for i in range(150)]
    ours = ptd.SparseIndex(tmp_path / "s").indexer().index(toks)
    engine = ptd.QdrantIndex(tmp_path / "q", "sparse")
    engine.indexer(representation="toks").index(toks)
    q = pd.DataFrame({"qid": ["q1", "q2", "q3"], "query_toks": [{"t1": 1.0, "t4": 0.3}, {"t9": 2.0}, {"unknown": 1.0}]})
    o, e = ours.retriever(num_results=10)(q), engine.retriever(num_results=10)(q)
    assert "q3" not in set(e.qid) and "q3" not in set(o.qid)   # no term of the query in the index: no rows
    same_runs(o, e)

    mats = [{"docno": f"d{i}", "doc_embs": random_vectors(int(rng.integers(2, 7)), DIM, seed=100 + i)}
            for i in range(80)]
    ours = ptd.ColBERTIndex(tmp_path / "c").indexer(ncentroids=4).index(mats)
    multi = ptd.QdrantIndex(tmp_path / "q2", "multi")
    multi.indexer(representation="doc_embs").index(mats)
    cq = pd.DataFrame({"qid": ["q1", "q2"], "query_embs": [random_vectors(3, DIM, seed=7), random_vectors(5, DIM, seed=8)]})
    # our token index stores float16 vectors, the engine float32: scores agree to float16's precision
    same_runs(ours.exhaustive_retriever(num_results=10)(cq), multi.retriever(num_results=10)(cq), rtol=1e-3)


def test_encoder_settings_are_checked(tmp_path, dense_records):
    enc_a = {"model": "a", "pooling": "mean", "dim": DIM}
    engine = ptd.QdrantIndex(tmp_path / "q", "dense")
    engine.indexer().index([{**r, ATTR: enc_a} for r in dense_records])
    assert engine.encoder_settings == enc_a
    q = pd.DataFrame({"qid": ["q1"], "query_vec": [dense_records[0]["doc_vec"]]})
    q.attrs[ATTR] = {**enc_a, "pooling": "cls"}
    with pytest.raises(ValueError, match="another encoder configuration.*pooling: index 'mean', encoder 'cls'"):
        engine.retriever()(q)
    assert len(engine.retriever(check_encoder=False, num_results=3)(q)) == 3
    with pytest.raises(ValueError, match="cannot append.*another encoder configuration"):
        engine.indexer(mode="append").index([{"docno": "new", "doc_vec": dense_records[0]["doc_vec"],
                                              ATTR: {**enc_a, "pooling": "cls"}}])


def test_bad_input_is_named_and_a_failed_build_leaves_nothing(tmp_path, dense_records):
    engine = ptd.QdrantIndex(tmp_path / "q", "dense")
    bad = dense_records[:50] + [{"docno": "nan", "doc_vec": np.full(DIM, np.nan, np.float32)}]
    with pytest.raises(ValueError, match="document 'nan': its doc_vec has a NaN"):
        engine.indexer().index(bad)
    assert not engine.exists()
    with pytest.raises(ValueError, match="duplicate docno 'd1'"):
        engine.indexer().index(dense_records[:3] + dense_records[1:2])
    with pytest.raises(ValueError, match="representation must be one of"):
        engine.indexer(representation="vectors")


def test_an_unreachable_server_is_a_clear_error_not_a_hang():
    engine = ptd.QdrantIndex("http://127.0.0.1:1", "dense", timeout=2)
    q = pd.DataFrame({"qid": ["q1"], "query_vec": [np.ones(DIM, np.float32)]})
    start = time.perf_counter()
    with pytest.raises(QdrantUnavailableError, match="Qdrant at http://127.0.0.1:1 did not answer"):
        engine.retriever()(q)
    assert time.perf_counter() - start < 10
