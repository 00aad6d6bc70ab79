"""SparseIndex: exact retrieval against brute force (ties included, dynamic pruning on and off), re-scoring from
stored weights, append equals one build, a kill leaves the old index, bad input named."""
from __future__ import annotations

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
from pyterrier_dense.indexes import sparse_search
from pyterrier_dense.indexes.sparse_store import SparseIndexWriter

VOCAB = 300


def corpus(n: int, seed: int = 0, prefix: str = "d", integer: bool = False) -> list[dict]:
    """Documents with Zipf-like term use (a few frequent terms with small weights, many rare ones), as SPLADE's."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB + 1)
    p /= p.sum()
    docs = []
    for j in range(n):
        terms = np.unique(rng.choice(VOCAB, size=int(rng.integers(1, 40)), p=p))
        w = rng.integers(1, 30, len(terms)) if integer else rng.gamma(2.0, 0.5, len(terms)) * (1 + terms / 50)
        docs.append({"docno": f"{prefix}{j}", "toks": {f"t{t}": (int(x) if integer else float(x))
                                                        for t, x in zip(terms, w)}})
    return docs


def queries(n: int, seed: int = 1, integer: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        terms = rng.choice(VOCAB, size=int(rng.integers(1, 12)), replace=False)
        w = rng.integers(1, 5, len(terms)) if integer else rng.uniform(0.1, 3, len(terms))
        rows.append({"qid": f"q{i}", "query": f"query {i}",
                     "query_toks": {f"t{t}": (int(x) if integer else float(x)) for t, x in zip(terms, w)}})
    return pd.DataFrame(rows)


def brute_force(docs: list[dict], qs: pd.DataFrame, k: int) -> dict:
    """qid -> (docnos, scores): every document scored with float64 dot products, ties by index order."""
    out = {}
    for qid, q in zip(qs["qid"], qs["query_toks"]):
        scores = np.array([sum(w * d["toks"].get(t, 0.0) for t, w in q.items()) for d in docs], np.float64)
        order = np.lexsort((np.arange(len(docs)), -scores))
        order = order[scores[order] > 0][:k]
        out[qid] = ([docs[i]["docno"] for i in order], scores[order])
    return out


@pytest.fixture(scope="module")
def docs():
    return corpus(400)


@pytest.fixture(scope="module")
def index(tmp_path_factory, docs):
    index = ptd.SparseIndex(tmp_path_factory.mktemp("sparse") / "s.splade")
    index.indexer().index(docs)
    return index


@pytest.mark.parametrize("integer", [False, True], ids=["float", "integer-ties"])
@pytest.mark.parametrize("k", [1, 10, 1000])
def test_retrieval_equals_brute_force(tmp_path, integer, k):
    docs = corpus(300, seed=3, integer=integer)
    docs += [dict(d, docno=d["docno"] + "-copy") for d in docs[:40]]   # exact ties: duplicates of earlier docs
    index = ptd.SparseIndex(tmp_path / "x")
    index.indexer().index(docs)
    qs = queries(30, integer=integer)
    got = index.retriever(num_results=k)(qs)
    expected = brute_force(docs, qs, k)
    for qid, (docnos, scores) in expected.items():
        run = got[got.qid == qid]
        assert list(run.docno) == docnos, qid
        np.testing.assert_allclose(run.score.to_numpy(), scores, rtol=1e-6)
        assert list(run["rank"]) == list(range(len(docnos)))


def test_dynamic_pruning_skips_work_and_changes_nothing(index, docs, monkeypatch):
    """A query with one dominant term: MaxScore stops scanning after it, and the results are still exact."""
    qs = pd.DataFrame([{"qid": "a", "query_toks": {"t299": 50.0, "t0": 0.01, "t1": 0.01, "t2": 0.01}},
                       {"qid": "b", "query_toks": {"t250": 20.0, "t270": 20.0, "t0": 0.02, "t3": 0.02}}])
    scanned = []
    real = sparse_search._lookup
    monkeypatch.setattr(sparse_search, "_lookup", lambda *a: scanned.append(len(a[0])) or real(*a))
    got = index.retriever(num_results=3)(qs)
    assert scanned, "the rare, heavy terms alone should settle the top 3, leaving the frequent terms to lookups"
    expected = brute_force(docs, qs, 3)
    for qid, (docnos, scores) in expected.items():
        assert list(got[got.qid == qid].docno) == docnos
        np.testing.assert_allclose(got[got.qid == qid].score, scores, rtol=1e-6)


def test_scorer_rescoring_from_stored_weights(index, docs):
    qs = queries(5)
    rng = np.random.default_rng(4)
    cands = pd.concat([qs.assign(docno=[docs[i]["docno"] for i in rng.choice(len(docs), len(qs))])
                       for _ in range(20)], ignore_index=True).assign(extra="kept")
    out = index.scorer()(cands)
    by_docno = {d["docno"]: d["toks"] for d in docs}
    for _, row in out.iterrows():
        q = qs.set_index("qid").loc[row.qid, "query_toks"]
        assert row.score == pytest.approx(sum(w * by_docno[row.docno].get(t, 0.0) for t, w in q.items()), rel=1e-6)
    assert (out.extra == "kept").all() and "query_toks" not in out.columns
    for _, run in out.groupby("qid"):
        assert run.sort_values("rank").score.is_monotonic_decreasing
    with pytest.raises(ValueError, match="not in .*'nope'"):
        index.scorer()(cands.head(2).assign(docno=["d1", "nope"]))


def test_absent_terms_and_queries_with_none_of_them(index, caplog):
    qs = pd.DataFrame([{"qid": "1", "query_toks": {"t0": 1.0, "unknown": 9.0}},
                       {"qid": "2", "query_toks": {"unknown": 1.0, "other": 2.0}},
                       {"qid": "3", "query_toks": {"t5": 1.0}}])
    with caplog.at_level("WARNING", logger="pyterrier_dense"):
        out = index.retriever(num_results=5)(qs)
    assert set(out.qid) == {"1", "3"} and len(out[out.qid == "1"]) == 5
    assert "1 of 3 queries have no term that" in caplog.text and "qid='2'" in caplog.text
    alone = index.retriever(num_results=5)(qs.iloc[[0]].assign(query_toks=[{"t0": 1.0}]))
    pd.testing.assert_frame_equal(out[out.qid == "1"].reset_index(drop=True), alone.reset_index(drop=True))


def test_append_equals_one_build_file_for_file(tmp_path, docs):
    one, two = ptd.SparseIndex(tmp_path / "one"), ptd.SparseIndex(tmp_path / "two")
    one.indexer().index(docs)
    two.indexer().index(docs[:150])
    two.indexer(mode="append").index(docs[150:])
    a, b = one.snapshot(), two.snapshot()
    assert a.manifest["count"] == b.manifest["count"] == len(docs)
    for name, info in a.manifest["files"].items():
        assert b.manifest["files"][name] == info, name
    qs = queries(8)
    pd.testing.assert_frame_equal(one.retriever(num_results=20)(qs), two.retriever(num_results=20)(qs))
    with pytest.raises(ValueError, match="duplicate docno 'd3'"):
        two.indexer(mode="append").index(docs[3:4])
    assert two.count == len(docs)


@pytest.mark.parametrize("toks,match", [
    ({}, "is empty"),
    ({"a": 0.0, "b": 0}, "only zero weights"),
    ({"a": -1.0}, "weight -1.0"),
    ({"a": float("nan")}, "weight nan"),
    ({"a": float("inf")}, "weight inf"),
    ({"a": "heavy"}, "not a number"),
    ({"": 1.0}, "term ''"),
    ({3: 1.0}, "term 3"),
    ({"a": 1e39}, "too large for float32"),
    ([("a", 1.0)], "not a {term: weight} dict"),
])
def test_bad_documents_are_named(tmp_path, toks, match):
    docs = corpus(10)
    docs[4]["toks"] = toks
    index = ptd.SparseIndex(tmp_path / "bad")
    with pytest.raises(ValueError, match="document 'd4'.*" + match.replace("{", r"\{").replace("}", r"\}")
                       .replace("(", r"\(").replace(")", r"\)")):
        index.indexer().index(docs)
    assert not index.exists()


def test_zero_weights_are_dropped_and_missing_column_named(tmp_path):
    index = ptd.SparseIndex(tmp_path / "z")
    index.indexer().index([{"docno": "a", "toks": {"x": 1.0, "y": 0.0}}, {"docno": "b", "toks": {"y": 2}}])
    assert index.snapshot().postings == 2
    with pytest.raises(ValueError, match="'docno' and 'toks'.*splade.doc_encoder"):
        ptd.SparseIndex(tmp_path / "m").indexer().index([{"docno": "a", "text": "no weights"}])


def test_bad_queries_are_named(index):
    qs = queries(3)
    qs.at[1, "query_toks"] = {}
    with pytest.raises(ValueError, match="qid='q1'.*is empty"):
        index.retriever()(qs)
    qs.at[1, "query_toks"] = {"t1": -2.0}
    with pytest.raises(ValueError, match="qid='q1'.*weight -2.0"):
        index.scorer()(qs.assign(docno="d1"))
    with pytest.raises(ValueError, match="query_toks.*splade.query_encoder"):
        index.retriever()(qs.drop(columns="query_toks"))
    twice = pd.concat([queries(2), queries(2).assign(query_toks=[{"t1": 1.0}, {"t2": 1.0}])])
    with pytest.raises(ValueError, match="qid 'q0' appears in several rows"):
        index.retriever()(twice)


def test_encoder_settings_are_checked_where_index_and_queries_meet(tmp_path):
    frame = pd.DataFrame(corpus(12))
    settings = {"model": "m", "fingerprint": "abc", "head": "splade", "doc_length": 256, "query_length": 64,
                "doc_top_k": None, "query_top_k": None, "min_weight": 0.0, "scale": None}
    frame.attrs["pyterrier_dense.encoder"] = settings
    index = ptd.SparseIndex(tmp_path / "enc")
    index.indexer().index(frame)
    qs = pd.DataFrame({"qid": ["a", "b"], "query_toks": [{f"t{i}": 1.0 for i in range(4)}] * 2})
    qs.attrs["pyterrier_dense.encoder"] = {**settings, "model": "another/path", "query_top_k": 10, "doc_length": 512}
    assert len(index.retriever(num_results=3)(qs)) == 6   # query-side and document-side shaping do not matter
    qs.attrs["pyterrier_dense.encoder"] = {**settings, "fingerprint": "zzz"}
    with pytest.raises(ValueError, match="fingerprint: index 'abc', encoder 'zzz'"):
        index.retriever()(qs)
    assert len(index.retriever(num_results=3, check_encoder=False)(qs)) == 6
    other = pd.DataFrame(corpus(2, prefix="n"))
    other.attrs["pyterrier_dense.encoder"] = {**settings, "doc_length": 512}
    with pytest.raises(ValueError, match="doc_length: index 256, encoder 512"):
        index.indexer(mode="append").index(other)
    other.attrs["pyterrier_dense.encoder"] = {**settings, "query_top_k": 5}
    index.indexer(mode="append").index(other)
    assert index.count == 14


def test_manifest_artifact_load_verify_and_corruption(tmp_path, docs):
    index = ptd.SparseIndex(tmp_path / "v.splade")
    index.indexer().index(docs[:50])
    loaded = pt.Artifact.load(str(index.path))
    assert isinstance(loaded, ptd.SparseIndex) and loaded.count == 50
    assert json.loads((index.path / "pt_meta.json").read_text())["type"] == "sparse_index"
    index.verify()
    snap = index.snapshot()
    target = snap.reader.file("inv.weights.f4")
    del snap
    gc.collect()
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        ptd.SparseIndex(index.path).verify()


def test_inverted_lists_mirror_the_forward_postings(index, docs):
    snap = index.snapshot()
    inv_off, inv_docs, inv_w, max_w = snap.inverted
    terms = snap.terms
    for t in range(snap.nterms):
        listed = inv_docs[inv_off[t]:inv_off[t + 1]]
        holders = [j for j, d in enumerate(docs) if terms[t] in d["toks"]]
        assert listed.tolist() == holders
        expect = np.array([docs[j]["toks"][terms[t]] for j in holders], np.float32)
        assert np.array_equal(inv_w[inv_off[t]:inv_off[t + 1]], expect) and max_w[t] == expect.max()


CHILD = textwrap.dedent("""
    import sys, pyterrier_dense as ptd
    sys.path.insert(0, sys.argv[2])
    from test_sparse_index import corpus
    ptd.SparseIndex(sys.argv[1]).indexer(mode="overwrite").index(corpus(30, seed=5, prefix="new"))
    print("finished", flush=True)
""")


@pytest.mark.parametrize("phase", ["before_manifest", "after_manifest", "after_rename"])
def test_a_kill_during_a_sparse_build_leaves_the_old_index(tmp_path, phase):
    path = tmp_path / "k.splade"
    old = corpus(10)
    ptd.SparseIndex(path).indexer().index(old)
    env = {**os.environ, "PYTERRIER_DENSE_FAULT": phase}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), os.path.dirname(__file__)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 99 and "finished" not in proc.stdout, proc.stderr
    index = ptd.SparseIndex(path)
    index.verify()
    assert index.count == 10 and list(index.docnos[np.arange(10)]) == [d["docno"] for d in old]
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert index.count == 30 and not [p for p in os.listdir(path) if p.startswith("build-")]


def test_empty_frames_empty_index_and_sizes(tmp_path, index):
    empty = queries(1).iloc[:0]
    assert list(index.retriever()(empty).columns) == ["qid", "query", "docno", "docid", "score", "rank"]
    assert len(index.scorer()(empty.assign(docno=[]))) == 0
    size = index.size()
    assert size["documents"] == 400 and size["postings_per_doc"] == pytest.approx(
        np.mean([len(d["toks"]) for d in corpus(400)]))
    nothing = ptd.SparseIndex(tmp_path / "empty")
    nothing.indexer().index([])
    assert nothing.count == 0 and len(nothing.retriever()(queries(2))) == 0
    with SparseIndexWriter(tmp_path / "w") as w:
        w.add(["a"], [{"x": 1.0}])
    assert ptd.SparseIndex(tmp_path / "w").terms == 1
