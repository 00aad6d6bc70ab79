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


def hybrid_records(n=120, seed=21):
    rng, vecs = np.random.default_rng(seed), random_vectors(n, DIM, seed=seed)
    return [{"docno": f"d{i}", "doc_vec": vecs[i],
             "toks": {f"t{j}": float(rng.random()) + 0.1 for j in rng.integers(0, 30, 6)}} for i in range(n)]


def test_hybrid_collection_fuses_dense_and_sparse_as_rrfusion_does(tmp_path):
    records = hybrid_records()
    dense = ptd.DenseIndex(tmp_path / "x.dense").indexer().index([{k: r[k] for k in ("docno", "doc_vec")} for r in records])
    sparse = ptd.SparseIndex(tmp_path / "s").indexer().index([{k: r[k] for k in ("docno", "toks")} for r in records])
    engine = ptd.QdrantIndex(tmp_path / "q", "hybrid")
    engine.indexer(representation=("doc_vec", "toks")).index(records)
    assert set(engine.representations) == {"doc_vec", "toks"} and engine.count == 120
    q = pd.DataFrame({"qid": ["q1", "q2"], "query_vec": list(random_vectors(2, DIM, seed=4)),
                      "query_toks": [{"t1": 1.0, "t4": 0.3}, {"t9": 2.0, "t2": 0.5}]})
    # one representation at a time: the engine's exact search equals ours
    same_runs(dense.retriever(num_results=10)(q), engine.retriever(num_results=10, representation="doc_vec")(q))
    same_runs(sparse.retriever(num_results=10)(q), engine.retriever(num_results=10, representation="toks")(q))
    # both (the default where the frame has both query columns): each one's top 20, fused by reciprocal rank
    fused = engine.retriever(num_results=10, depth=20)(q)
    ours = ptd.RRFusion(dense.retriever(num_results=20), sparse.retriever(num_results=20), k=60, num_results=10)(q)
    a, b = scores(ours), scores(fused)
    assert len(b) == 20 and sorted(b.values()) == pytest.approx(sorted(a.values()), abs=1e-7)
    shared = [key for key in b if key in a]      # the same documents (ties at the 10th score aside), same scores
    assert len(shared) >= 18 and all(abs(a[key] - b[key]) < 1e-7 for key in shared)
    dbsf = engine.retriever(num_results=10, fusion="dbsf")(q)
    assert len(dbsf) == 20 and set(dbsf.columns) >= {"qid", "docno", "score", "rank"}
    # re-scoring candidates with both: every candidate gets its fused score
    cands = fused[["qid", "docno"]].merge(q, on="qid")
    rescored = engine.scorer()(cands)
    assert scores(rescored).keys() == b.keys()
    with pytest.raises(ValueError, match=r"holds \['doc_vec', 'toks'\], not \['doc_embs'\]"):
        engine.retriever(representation="doc_embs")(q)
    with pytest.raises(ValueError, match="needs column.*query_vec.*query_toks.*any one of them"):
        engine.retriever()(q[["qid"]])
    with pytest.raises(ValueError, match="an append must add the same representations"):
        engine.indexer(mode="append").index([{k: records[0][k] for k in ("docno", "doc_vec")}])
    with pytest.raises(ValueError, match="needs 'docno' and 'doc_vec' and 'toks' in every record"):
        ptd.QdrantIndex(tmp_path / "q3", "other").indexer(representation=("doc_vec", "toks")).index(
            [{k: records[0][k] for k in ("docno", "doc_vec")}])


def test_each_representation_keeps_and_checks_its_own_encoder(tmp_path):
    dense_enc, sparse_enc = {"model": "a", "pooling": "mean", "dim": DIM}, {"model": "s", "head": "splade"}
    encoders = {ATTR + "s": {"doc_vec": dense_enc, "toks": sparse_enc}, ATTR: sparse_enc}
    engine = ptd.QdrantIndex(tmp_path / "q", "hybrid")
    engine.indexer(representation=("doc_vec", "toks")).index([{**r, **encoders} for r in hybrid_records(30)])
    assert engine.representations == {"doc_vec": dense_enc, "toks": sparse_enc}
    q = pd.DataFrame({"qid": ["q1"], "query_vec": [random_vectors(1, DIM)[0]], "query_toks": [{"t1": 1.0}]})
    q.attrs = {ATTR + "s": {"query_vec": dense_enc, "query_toks": sparse_enc}, ATTR: sparse_enc}
    assert len(engine.retriever(num_results=5)(q)) == 5   # each column checked against its own encoder
    q.attrs[ATTR + "s"] = {"query_vec": dense_enc, "query_toks": {**sparse_enc, "head": "terms"}}
    with pytest.raises(ValueError, match="the toks of Qdrant collection 'hybrid' was built with another encoder"
                                         ".*head: index 'splade', encoder 'terms'"):
        engine.retriever(num_results=5)(q)
    with pytest.raises(ValueError, match="holds \\['doc_vec', 'toks'\\]: read each one's encoder settings"):
        engine.encoder_settings
