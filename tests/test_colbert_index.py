"""ColBERTIndex: token storage (float16 and residual), exhaustive and PLAID retrieval, MaxSim re-scoring, appends,
manifests and bad input — checked against brute-force MaxSim written out here."""
import gc
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

import pyterrier_dense as ptd
import pyterrier_dense.indexes.late_search
from pyterrier_dense.indexes.token_store import TokenIndexWriter

DIM = 16


def unit(m):
    return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)


def corpus(n=60, seed=0, prefix="d"):
    """Documents of 3-14 clustered token vectors (clusters make centroids meaningful)."""
    rng = np.random.default_rng(seed)
    centres = unit(np.random.default_rng(99).standard_normal((12, DIM)))
    docs = []
    for i in range(n):
        length = int(rng.integers(3, 15))
        toks = centres[rng.integers(0, 12, length)] + 0.3 * rng.standard_normal((length, DIM))
        docs.append({"docno": f"{prefix}{i}", "doc_embs": unit(toks),
                     "doc_token_ids": rng.integers(5, 50, length).astype(np.int32)})
    return docs


def queries(n=5, seed=1):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"qid": [f"q{i}" for i in range(n)], "query": [f"query {i}" for i in range(n)],
                         "query_embs": [unit(rng.standard_normal((int(rng.integers(2, 7)), DIM))) for _ in range(n)]})


def brute_maxsim(q, d):
    return float(sum(max(float(np.dot(qi, dj)) for dj in d) for qi in q))


def brute_ranking(qs, docs, as_stored=lambda m: m):
    out = {}
    for _, row in qs.iterrows():
        scores = [(brute_maxsim(row.query_embs, as_stored(d["doc_embs"])), d["docno"]) for d in docs]
        out[row.qid] = sorted(scores, key=lambda t: (-t[0], t[1]))
    return out


def f16(m):
    return m.astype(np.float16).astype(np.float32)


@pytest.fixture
def docs():
    return corpus()


@pytest.fixture
def fp16_index(tmp_path, docs):
    index = ptd.ColBERTIndex(tmp_path / "x.colbert")
    index.indexer(ncentroids=8).index(docs)
    return index


@pytest.mark.parametrize("scan_tokens,query_rows", [(1 << 17, 1024), (40, 7)])   # one block and group, or many
def test_exhaustive_retrieval_equals_brute_force_maxsim(fp16_index, docs, scan_tokens, query_rows, monkeypatch):
    monkeypatch.setattr("pyterrier_dense.indexes.late_search.SCAN_TOKENS", scan_tokens)
    monkeypatch.setattr("pyterrier_dense.indexes.late_search.QUERY_ROWS", query_rows)
    qs = queries()
    res = fp16_index.exhaustive_retriever(num_results=10)(qs)
    expected = brute_ranking(qs, docs, f16)
    for qid, group in res.groupby("qid"):
        want = expected[qid][:10]
        assert group.sort_values("rank").docno.tolist() == [d for _, d in want]
        assert np.allclose(group.sort_values("rank").score, [s for s, _ in want], atol=1e-4)
    assert "query_embs" not in res.columns and {"docno", "docid", "score", "rank", "query"} <= set(res.columns)


# the exact stage reads each document once for all queries that chose it (shared) or gathers each query's own
SHARED, PER_QUERY = (0, 40), (10 ** 9, 1 << 13)   # (SHARED_DOCS, SCAN_TOKENS): several blocks when shared


@pytest.mark.parametrize("shared_docs,scan_tokens", [SHARED, PER_QUERY])
@pytest.mark.parametrize("storage", ["float16", "residual"])
def test_plaid_probing_every_cell_equals_exhaustive(tmp_path, docs, storage, shared_docs, scan_tokens, monkeypatch):
    monkeypatch.setattr("pyterrier_dense.indexes.late_search.SHARED_DOCS", shared_docs)
    monkeypatch.setattr("pyterrier_dense.indexes.late_search.SCAN_TOKENS", scan_tokens)
    index = ptd.ColBERTIndex(tmp_path / "x.colbert")
    index.indexer(ncentroids=8, storage=storage).index(docs)
    qs = queries(8)
    exact = index.exhaustive_retriever(num_results=20)(qs)
    e2e = index.retriever(num_results=20, cells=8, candidates=1000)(qs)
    pd.testing.assert_frame_equal(exact.reset_index(drop=True), e2e.reset_index(drop=True), atol=1e-5)


@pytest.mark.parametrize("storage,default", [("float16", 320), ("residual", 256)])
def test_plaid_candidates_default_by_storage(tmp_path, docs, storage, default, monkeypatch):
    """Residual storage's centroid interaction is closer to its own MaxSim: it scores fewer documents exactly."""
    index = ptd.ColBERTIndex(tmp_path / "x.colbert")
    index.indexer(ncentroids=8, storage=storage).index(docs)
    seen = []
    search = pyterrier_dense.indexes.late_search.plaid_search
    monkeypatch.setattr("pyterrier_dense.stages.colbert_retriever.plaid_search",
                        lambda *a, **kw: seen.append(kw["candidates"]) or search(*a, **kw))
    qs = queries(3)
    pd.testing.assert_frame_equal(index.retriever(num_results=5)(qs), index.retriever(num_results=5,
                                                                                    candidates=default)(qs))
    assert seen == [default, default]
    with pytest.raises(ValueError, match="candidates"):
        index.retriever(candidates=0)


@pytest.mark.parametrize("shared_docs,scan_tokens", [SHARED, PER_QUERY])
def test_plaid_with_few_cells_returns_true_maxsim_scores(fp16_index, docs, shared_docs, scan_tokens, monkeypatch):
    monkeypatch.setattr("pyterrier_dense.indexes.late_search.SHARED_DOCS", shared_docs)
    monkeypatch.setattr("pyterrier_dense.indexes.late_search.SCAN_TOKENS", scan_tokens)
    qs = queries(4)
    e2e = fp16_index.retriever(num_results=5, cells=1, candidates=6)(qs)
    by_docno = {d["docno"]: d["doc_embs"] for d in docs}
    for _, r in e2e.iterrows():
        q = qs.set_index("qid").loc[r.qid, "query_embs"]
        assert r.score == pytest.approx(brute_maxsim(q, f16(by_docno[r.docno])), abs=1e-4)


def test_scorer_rescoring_from_stored_vectors(fp16_index, docs):
    qs = queries(3)
    cands = qs.merge(pd.DataFrame({"docno": ["d3", "d17", "d40", "d8"]}), how="cross").assign(text="kept")
    out = fp16_index.scorer()(cands)
    by_docno = {d["docno"]: d["doc_embs"] for d in docs}
    for _, r in out.iterrows():
        q = qs.set_index("qid").loc[r.qid, "query_embs"]
        assert r.score == pytest.approx(brute_maxsim(q, f16(by_docno[r.docno])), abs=1e-4)
    assert (out.text == "kept").all() and "query_embs" not in out.columns
    for _, g in out.groupby("qid"):
        assert g["rank"].tolist() == [0, 1, 2, 3] and g.score.is_monotonic_decreasing
    with pytest.raises(ValueError, match="nope"):
        fp16_index.scorer()(cands.assign(docno=["nope"] + cands.docno.tolist()[1:]))


@pytest.mark.parametrize("nbits,min_cos", [(1, 0.83), (2, 0.93)])   # measured: mean cosine 0.852 / 0.947
def test_residual_storage_is_close_and_small(tmp_path, docs, nbits, min_cos):
    index = ptd.ColBERTIndex(tmp_path / "r.colbert")
    index.indexer(storage="residual", nbits=nbits, ncentroids=8).index(docs)
    snap = index.snapshot()
    stored, off = snap.doc_tokens(np.arange(len(docs)))
    original = np.concatenate([d["doc_embs"] for d in docs])
    cos = (stored * original).sum(1)
    assert cos.mean() > min_cos
    assert index.size()["bytes_per_token"] == pytest.approx(DIM * nbits / 8 + 4)
    # the ranking it gives is the brute-force ranking of the decompressed vectors
    qs = queries(2)
    res = index.exhaustive_retriever(num_results=5)(qs)
    per_doc = {d["docno"]: stored[off[i]:off[i + 1]] for i, d in enumerate(docs)}
    for _, r in res.iterrows():
        q = qs.set_index("qid").loc[r.qid, "query_embs"]
        assert r.score == pytest.approx(brute_maxsim(q, per_doc[r.docno]), abs=1e-4)


@pytest.mark.parametrize("storage", ["float16", "residual"])
def test_append_equals_one_build(tmp_path, storage):
    """An append keeps the base's centroids (and buckets): it equals one build over all documents with that codec,
    file for file; and for float16 storage, exact retrieval equals that of any build from scratch."""
    docs = corpus(50)
    one = ptd.ColBERTIndex(tmp_path / "one")
    two = ptd.ColBERTIndex(tmp_path / "two")
    two.indexer(storage=storage, ncentroids=8).index(docs[:30])
    base_codec = two.snapshot().codec
    two.indexer(mode="append").index(docs[30:])   # the index's own storage and nbits
    with pytest.raises(ValueError, match="cannot append with storage"):
        two.indexer(storage="residual" if storage == "float16" else "float16", mode="append").index(docs[30:31])
    with TokenIndexWriter(one.path, storage=storage, nbits=2) as w:
        w._codec, w.ncentroids = base_codec, base_codec.centroids.shape[0]
        w.add([d["docno"] for d in docs], [d["doc_embs"] for d in docs], [d["doc_token_ids"] for d in docs])
    a, b = one.snapshot(), two.snapshot()
    assert a.count == b.count == 50 and list(a.docnos[np.arange(50)]) == list(b.docnos[np.arange(50)])
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.codes, b.codes)
    assert np.array_equal(a.doc_tokens(np.arange(50))[0], b.doc_tokens(np.arange(50))[0])
    assert np.array_equal(a.ivf[0], b.ivf[0]) and np.array_equal(a.ivf[1], b.ivf[1])
    assert np.array_equal(a.token_counts, b.token_counts)
    qs = queries(3)
    pd.testing.assert_frame_equal(one.retriever(num_results=10, cells=2, candidates=15)(qs),
                                  two.retriever(num_results=10, cells=2, candidates=15)(qs))
    if storage == "float16":
        scratch = ptd.ColBERTIndex(tmp_path / "scratch")
        scratch.indexer(ncentroids=8, seed=7).index(docs)
        pd.testing.assert_frame_equal(scratch.exhaustive_retriever(num_results=10)(qs),
                                      two.exhaustive_retriever(num_results=10)(qs))


def test_ivf_lists_every_document_under_each_of_its_codes(fp16_index):
    snap = fp16_index.snapshot()
    ivf_off, ivf_docs = snap.ivf
    expected = {c: set() for c in range(snap.ncentroids)}
    for d in range(snap.count):
        for c in snap.codes[snap.offsets[d]:snap.offsets[d + 1]]:
            expected[int(c)].add(d)
    for c in range(snap.ncentroids):
        listed = ivf_docs[ivf_off[c]:ivf_off[c + 1]].tolist()
        assert listed == sorted(expected[c])


def test_manifest_artifact_load_verify_and_corruption(fp16_index):
    loaded = pt.Artifact.load(str(fp16_index.path))
    assert isinstance(loaded, ptd.ColBERTIndex) and loaded.count == 60
    fp16_index.verify()
    snap = fp16_index.snapshot()
    embs = snap.reader.file("embs.f2")
    del snap
    gc.collect()
    data = bytearray(embs.read_bytes())
    data[100] ^= 0xFF
    embs.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        ptd.ColBERTIndex(fp16_index.path).verify()


def test_token_frequencies_count_the_stored_token_ids(fp16_index, docs):
    counts, total = fp16_index.token_frequencies()
    ids = np.concatenate([d["doc_token_ids"] for d in docs])
    assert total == len(ids) and np.array_equal(counts[:50], np.bincount(ids, minlength=50))


@pytest.mark.parametrize("bad,match", [
    (lambda d: d.update(doc_embs=np.zeros((0, DIM), np.float32)), "no token vectors"),
    (lambda d: d.update(doc_embs=np.full((3, DIM), np.nan, np.float32)), "NaN"),
    (lambda d: d.update(doc_embs=np.ones((3, DIM + 1), np.float32)), "dimension"),
    (lambda d: d.update(doc_embs=np.ones(DIM, np.float32)), "shape"),
    (lambda d: d.update(docno="d0"), "duplicate docno 'd0'"),
])
def test_bad_documents_are_named(tmp_path, bad, match):
    docs = corpus(10)
    bad(docs[4])
    docs[4]["doc_token_ids"] = np.arange(len(docs[4]["doc_embs"]), dtype=np.int32)
    index = ptd.ColBERTIndex(tmp_path / "bad")
    with pytest.raises(ValueError, match=match):
        index.indexer(ncentroids=4).index(docs)
    assert not index.exists()


def test_bad_queries_are_named(fp16_index):
    qs = queries(3)
    qs.at[1, "query_embs"] = np.zeros((0, DIM), np.float32)
    with pytest.raises(ValueError, match="qid='q1'.*no vectors"):
        fp16_index.retriever()(qs)
    qs.at[1, "query_embs"] = np.ones((2, DIM + 2), np.float32)
    with pytest.raises(ValueError, match="qid='q1'"):
        fp16_index.scorer()(qs.assign(docno="d1"))
    with pytest.raises(ValueError, match="query_embs"):
        fp16_index.retriever()(qs.drop(columns="query_embs"))


def test_encoder_settings_are_checked_where_index_and_queries_meet(tmp_path):
    docs = corpus(12)
    frame = pd.DataFrame(docs)
    frame.attrs["pyterrier_dense.encoder"] = {"model": "m", "fingerprint": "abc", "dim": DIM, "doc_length": 180,
                                             "query_length": 32}
    index = ptd.ColBERTIndex(tmp_path / "enc")
    index.indexer(ncentroids=4).index(frame)
    assert index.encoder_settings["fingerprint"] == "abc"
    qs = queries(2)
    qs.attrs["pyterrier_dense.encoder"] = {"model": "other/path", "fingerprint": "abc", "dim": DIM,
                                          "doc_length": 300, "query_length": 32}
    assert len(index.retriever(num_results=3)(qs)) == 6   # a document-side setting does not matter for queries
    qs.attrs["pyterrier_dense.encoder"] = {"model": "m", "fingerprint": "abc", "dim": DIM, "query_length": 64}
    with pytest.raises(ValueError, match="query_length: index 32, encoder 64"):
        index.retriever()(qs)
    assert len(index.retriever(num_results=3, check_encoder=False)(qs)) == 6
    other = pd.DataFrame(corpus(2, prefix="n"))
    other.attrs["pyterrier_dense.encoder"] = {"model": "m", "fingerprint": "abc", "dim": DIM, "doc_length": 300,
                                             "query_length": 32}
    with pytest.raises(ValueError, match="doc_length"):
        index.indexer(mode="append").index(other)


CHILD = textwrap.dedent("""
    import sys, numpy as np, pyterrier_dense as ptd
    sys.path.insert(0, sys.argv[3])
    from test_colbert_index import corpus
    ptd.ColBERTIndex(sys.argv[1]).indexer(storage=sys.argv[2], ncentroids=4, mode="overwrite").index(corpus(30, seed=5, prefix="new"))
    print("finished", flush=True)
""")


@pytest.mark.parametrize("phase", ["before_manifest", "after_manifest", "after_rename"])
def test_a_kill_during_a_colbert_build_leaves_the_old_index(tmp_path, phase):
    path = tmp_path / "k.colbert"
    old = corpus(10)
    ptd.ColBERTIndex(path).indexer(storage="residual", ncentroids=4).index(old)
    env = {**os.environ, "PYTERRIER_DENSE_FAULT": phase}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), "residual", os.path.dirname(__file__)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 99 and "finished" not in proc.stdout, proc.stderr
    index = ptd.ColBERTIndex(path)
    index.verify()
    assert index.count == 10 and list(index.docnos[np.arange(10)]) == [d["docno"] for d in old]
    # the next build cleans up what the killed one left, and succeeds
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), "residual", os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert index.count == 30 and not [p for p in os.listdir(path) if p.startswith("build-")]
    index.verify()


def test_empty_frames_and_sizes(fp16_index):
    empty = queries(1).iloc[:0]
    assert list(fp16_index.retriever()(empty).columns) == ["qid", "query", "docno", "docid", "score", "rank"]
    assert len(fp16_index.scorer()(empty.assign(docno=[]))) == 0
    size = fp16_index.size()
    assert size["bytes_per_token"] == pytest.approx(2 * DIM + 4) and size["documents"] == 60
    assert json.loads((fp16_index.path / "pt_meta.json").read_text())["type"] == "colbert_index"
