"""stages/: BiEncoder modes and errors, indexer, retriever and scorer against brute force, passaging."""
import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

import pyterrier_dense as ptd


@pytest.fixture
def built(tiny_encoder, docs, tmp_path):
    index = ptd.DenseIndex(tmp_path / "tiny.dense")
    (tiny_encoder >> index.indexer()).index(docs)
    return index


def test_modes_follow_the_columns(tiny_encoder):
    q = tiny_encoder(pd.DataFrame({"qid": ["1"], "query": ["electron field"]}))
    assert q["query_vec"][0].shape == (32,)
    d = tiny_encoder(pd.DataFrame({"docno": ["a"], "text": ["electron field"]}))
    np.testing.assert_allclose(d["doc_vec"][0], q["query_vec"][0], atol=1e-6)  # no prefixes: same text, same vector
    pairs = pd.DataFrame({"qid": ["1", "1"], "query": ["gene"] * 2, "docno": ["a", "b"],
                          "text": ["quantum light", "gene study"]})
    scored = tiny_encoder(pairs)
    m = tiny_encoder.model
    expected = m.encode(["gene"], role="query") @ m.encode(["quantum light", "gene study"]).T
    np.testing.assert_allclose(scored.set_index("docno").loc[["a", "b"], "score"], expected[0], rtol=1e-5)
    assert scored["rank"].tolist() == [0, 1] and scored["score"].is_monotonic_decreasing


def test_role_stages_force_a_mode(tiny_encoder):
    frame = pd.DataFrame({"qid": ["1"], "query": ["gene"], "docno": ["a"], "text": ["light"]})
    assert "query_vec" in tiny_encoder.query_encoder()(frame).columns
    assert "doc_vec" in tiny_encoder.doc_encoder()(frame).columns
    assert repr(tiny_encoder.query_encoder()).endswith(".query_encoder()")


@pytest.mark.parametrize("frame,message", [
    (pd.DataFrame({"qid": ["1"]}), "needs a 'query' column"),
    (pd.DataFrame({"qid": ["7"], "query": ["  "]}), "'query' of qid='7' is empty"),
    (pd.DataFrame({"qid": ["7"], "query": [None]}), "'query' of qid='7' is a NoneType"),
    (pd.DataFrame({"docno": ["d9"], "text": [3.5]}), "'text' of docno='d9' is a float"),
])
def test_bad_input_names_the_row(tiny_encoder, frame, message):
    with pytest.raises(ValueError, match=message):
        tiny_encoder(frame)


def test_empty_frames_keep_their_columns(tiny_encoder):
    out = tiny_encoder(pd.DataFrame({"qid": pd.Series(dtype=str), "query": pd.Series(dtype=str)}))
    assert list(out.columns) == ["qid", "query", "query_vec"] and len(out) == 0


def test_indexing_a_document_without_text_names_it(tiny_encoder, tmp_path):
    index = ptd.DenseIndex(tmp_path / "x.dense")
    with pytest.raises(ValueError, match=r"docno='b' is empty \(leave documents with no text out of the corpus"):
        (tiny_encoder >> index.indexer()).index([{"docno": "a", "text": "gene"}, {"docno": "b", "text": ""}])
    assert not index.exists()


def test_manifest_records_the_encoder(built, tiny_encoder):
    settings = built.encoder_settings
    assert settings["fingerprint"] == tiny_encoder.model.fingerprint
    assert (settings["pooling"], settings["normalize"], settings["max_length"], settings["dim"]) == ("mean", True, 64, 32)


def test_retriever_matches_brute_force(built, tiny_encoder, docs):
    topics = pd.DataFrame({"qid": ["1", "2"], "query": ["electron field", "gene protein"]})
    res = (tiny_encoder >> built.retriever(num_results=5))(topics)
    assert res.groupby("qid").size().tolist() == [5, 5]
    dv = tiny_encoder.model.encode([d["text"] for d in docs])
    qv = tiny_encoder.model.encode(topics["query"].tolist(), role="query")
    for i, qid in enumerate(["1", "2"]):
        got = res[res.qid == qid]
        s = dv @ qv[i]
        expected = np.lexsort((np.arange(len(s)), -s))[:5]
        assert got["docno"].tolist() == [docs[j]["docno"] for j in expected]
        np.testing.assert_allclose(got["score"], s[expected], rtol=1e-5)
        assert got["rank"].tolist() == list(range(5)) and got["query"].iloc[0] == topics["query"][i]
    assert "query_vec" not in res.columns


def test_retriever_edge_cases(built, tiny_encoder):
    pipe = tiny_encoder >> built.retriever(num_results=100)
    assert len(pipe.search("gene")) == 12  # fewer documents than num_results
    empty = pipe(pd.DataFrame({"qid": pd.Series(dtype=str), "query": pd.Series(dtype=str)}))
    assert len(empty) == 0 and {"docno", "score", "rank"} <= set(empty.columns)
    cut = (pipe % 3).compile()
    assert len(cut.search("gene")) == 3 and "num_results=3" in repr(cut)


def test_retriever_rejects_bad_query_vectors(built):
    with pytest.raises(ValueError, match="qid='q1'.*expected a 32-dimensional"):
        built.retriever()(pd.DataFrame({"qid": ["q1"], "query_vec": [np.ones(5, np.float32)]}))
    with pytest.raises(ValueError, match="qid='q2'.*NaN"):
        built.retriever()(pd.DataFrame({"qid": ["q2"], "query_vec": [np.full(32, np.nan, np.float32)]}))
    with pytest.raises(ValueError, match="needs column"):
        built.retriever()(pd.DataFrame({"qid": ["q2"], "query": ["x"]}))


def test_pairing_with_another_encoder_is_refused(built, other_tiny_model):
    other = ptd.BiEncoder(other_tiny_model, precision="fp32", verbose=False)
    with pytest.raises(ValueError, match="fingerprint"):
        (other >> built.retriever()).search("gene")
    unchecked = other >> built.retriever(check_encoder=False)
    assert len(unchecked.search("gene")) == 12


def test_appending_documents_through_the_encoder(built, tiny_encoder, other_tiny_model, docs, tmp_path):
    whole = ptd.DenseIndex(tmp_path / "whole.dense")
    extra = [{"docno": "n1", "text": "magnetic gene energy"}, {"docno": "n2", "text": "protein light"}]
    (tiny_encoder >> whole.indexer()).index(docs + extra)
    grown = (tiny_encoder >> built.indexer(mode="append")).index(extra)   # only the new texts are encoded
    # batches pad to other lengths, which moves float32 sums in the last bit; nothing more
    np.testing.assert_allclose(grown.vectors, whole.vectors, atol=1e-6)
    assert grown.docnos[np.arange(14)].tolist() == whole.docnos[np.arange(14)].tolist()
    topics = pd.DataFrame({"qid": ["1", "2"], "query": ["gene energy", "light"]})
    a, b = (tiny_encoder >> grown.retriever())(topics), (tiny_encoder >> whole.retriever())(topics)
    both = a.merge(b, on=["qid", "docno"], suffixes=("_grown", "_whole"))   # ranks may swap near-ties
    assert len(a) == len(b) == len(both) == 28
    np.testing.assert_allclose(both["score_grown"], both["score_whole"], rtol=1e-5)
    other = ptd.BiEncoder(other_tiny_model, precision="fp32", verbose=False)
    with pytest.raises(ValueError, match="cannot append to .*another encoder configuration \\(fingerprint"):
        (other >> grown.indexer(mode="append")).index([{"docno": "n3", "text": "gene"}])
    assert ptd.DenseIndex(grown.path).count == 14


def test_scorer_rescores_from_stored_vectors(built, tiny_encoder):
    cands = pd.DataFrame({"qid": ["1"] * 3 + ["2"], "query": ["gene"] * 3 + ["light"],
                          "docno": ["d0", "d4", "d9", "d9"], "text": ["x"] * 4})
    out = (tiny_encoder.query_encoder() >> built.scorer())(cands)
    dv = np.asarray(built.vectors)
    qv = tiny_encoder.model.encode(["gene", "light"], role="query")
    got = out.set_index(["qid", "docno"])["score"]
    for (qid, docno), q in [(("1", "d0"), 0), (("1", "d4"), 0), (("1", "d9"), 0), (("2", "d9"), 1)]:
        assert got[(qid, docno)] == pytest.approx(float(dv[int(docno[1:])] @ qv[q]), rel=1e-5)
    assert "text" in out.columns and len(out) == 4
    assert out[out.qid == "1"]["score"].is_monotonic_decreasing and out[out.qid == "1"]["rank"].tolist() == [0, 1, 2]


def test_scorer_names_docnos_missing_from_the_index(built, tiny_encoder):
    cands = pd.DataFrame({"qid": ["1"], "query": ["gene"], "docno": ["nope"]})
    with pytest.raises(ValueError, match="not in .*'nope'"):
        (tiny_encoder.query_encoder() >> built.scorer())(cands)


def test_precomputed_vectors_are_indexed_as_given(tmp_path):
    vecs = np.eye(3, 4, dtype=np.float32)
    index = ptd.DenseIndex(tmp_path / "pre.dense")
    index.indexer().index([{"docno": f"p{i}", "doc_vec": v} for i, v in enumerate(vecs)])
    np.testing.assert_array_equal(index.vectors, vecs)
    res = index.retriever(num_results=2)(pd.DataFrame({"qid": ["1"], "query_vec": [np.array([0, 1, 0, 0], np.float32)]}))
    assert res["docno"].tolist() == ["p1", "p0"]
    with pytest.raises(ValueError, match="needs 'docno' and 'doc_vec'"):
        ptd.DenseIndex(tmp_path / "bad.dense").indexer().index([{"docno": "a", "text": "no vector"}])


def test_long_documents_with_passaging_and_maxp(tiny_encoder, tmp_path):
    long_docs = [{"docno": "long1", "text": " ".join(["gene protein cell"] * 40 + ["quantum light wave"] * 40)},
                 {"docno": "long2", "text": " ".join(["electron field"] * 60)}]
    index = ptd.DenseIndex(tmp_path / "passages.dense")
    passager = pt.text.sliding(text_attr="text", length=30, stride=15, prepend_attr=None)
    (passager >> tiny_encoder >> index.indexer()).index(long_docs)
    assert index.count > 4 and all("%p" in d for d in index.docnos[np.arange(index.count)])
    maxp = tiny_encoder >> index.retriever(num_results=100) >> pt.text.max_passage()
    res = maxp.search("quantum light")
    assert sorted(res["docno"]) == ["long1", "long2"]
    passages = (tiny_encoder >> index.retriever(num_results=100)).search("quantum light")
    passages["doc"] = passages["docno"].str.split("%p").str[0]
    best = passages.groupby("doc")["score"].max()
    np.testing.assert_allclose(res.set_index("docno")["score"][best.index], best, rtol=1e-6)


# ---- the encoder's settings travel with the data: checked in every pipeline shape ---------------------------
def first_stage(rows):
    """A stand-in for BM25: a fixed result frame for the topics it is given."""
    return pt.Transformer.from_df(pd.DataFrame(rows, columns=["qid", "query", "docno", "score"]), uniform=True)


def test_rerank_pipeline_checks_the_encoder(built, other_tiny_model, tiny_encoder):
    bm25 = first_stage([("1", "gene", "d0", 3.0), ("1", "gene", "d4", 2.0)])
    other = ptd.BiEncoder(other_tiny_model, precision="fp32", verbose=False)
    topics = pd.DataFrame({"qid": ["1"], "query": ["gene"]})
    with pytest.raises(ValueError, match="another encoder configuration \\(fingerprint"):
        (bm25 >> other >> built.scorer())(topics)
    assert len((bm25 >> tiny_encoder >> built.scorer())(topics)) == 2
    assert len((bm25 >> other >> built.scorer(check_encoder=False))(topics)) == 2


def test_passaging_pipeline_records_the_encoder_and_appends_through_it(tiny_encoder, other_tiny_model, tmp_path):
    """pt.text.sliding >> enc >> indexer once wrote encoder: null, and an append through the encoder then failed."""
    index = ptd.DenseIndex(tmp_path / "p.dense")
    passager = pt.text.sliding(text_attr="text", length=8, stride=4, prepend_attr=None)
    docs = [{"docno": "a", "text": "gene protein cell " * 6}, {"docno": "b", "text": "quantum light wave " * 6}]
    (passager >> tiny_encoder >> index.indexer()).index(docs)
    assert index.encoder_settings["fingerprint"] == tiny_encoder.model.fingerprint
    (passager >> tiny_encoder >> index.indexer(mode="append")).index([{"docno": "c", "text": "electron field " * 8}])
    assert any(d.startswith("c%p") for d in index.docnos[np.arange(index.count)])
    other = ptd.BiEncoder(other_tiny_model, precision="fp32", verbose=False)
    with pytest.raises(ValueError, match="another encoder configuration"):
        (passager >> other >> index.indexer(mode="append")).index([{"docno": "d", "text": "gene " * 10}])
    with pytest.raises(ValueError, match="another encoder configuration"):
        (pt.apply.generic(lambda df: df) >> other >> index.retriever()).search("gene")


def test_indexing_through_the_pipeline_sorts_over_large_windows(tiny_encoder, tmp_path):
    """PyTerrier's Compose.index hands the encoder batches of its largest stage batch_size (once 100 records)."""
    calls = []
    model = tiny_encoder.model
    original = model.encode
    def spy(texts, *a, **kw):
        calls.append(len(texts))
        return original(texts, *a, **kw)
    model.encode = spy
    try:
        docs = [{"docno": f"d{i}", "text": f"gene {i}"} for i in range(450)]
        (tiny_encoder >> ptd.DenseIndex(tmp_path / "w.dense").indexer()).index(docs)
    finally:
        del model.encode
    assert calls == [450] and tiny_encoder.batch_size == model.chunk_size == 4096


@pytest.mark.parametrize("value", [0, -1, 2.5, None, "5", True])
def test_num_results_is_checked_when_the_stage_is_made(built, value):
    with pytest.raises(ValueError, match="num_results must be an int >= 1"):
        built.retriever(num_results=value)
    with pytest.raises(ValueError, match="num_results must be an int >= 1"):
        built.hnsw_retriever(num_results=value)


def test_a_qid_with_two_query_vectors_is_an_error(built):
    v = np.ones(32, np.float32)
    frame = pd.DataFrame({"qid": ["q", "q"], "query_vec": [v, -v]})
    with pytest.raises(ValueError, match="qid 'q' appears in several rows with different query_vec"):
        built.retriever(num_results=3)(frame)
    same = built.retriever(num_results=3)(pd.DataFrame({"qid": ["q", "q"], "query_vec": [v, v.copy()]}))
    assert same["rank"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("bad,message", [
    (None, "doc_vec of document 'b' is None"),
    (np.array(["x", "y"], dtype=object), "doc_vec of document 'b' holds non-numeric"),
    (np.ones(3, np.float32), "doc_vec of document 'b' has 3 dimensions"),
    (np.ones((2, 2), np.float32), "doc_vec of document 'b' has shape \\(2, 2\\)"),
])
def test_bad_vectors_in_records_name_the_docno(tmp_path, bad, message):
    records = [{"docno": "a", "doc_vec": np.ones(2, np.float32)}, {"docno": "b", "doc_vec": bad}]
    with pytest.raises(ValueError, match=message):
        ptd.DenseIndex(tmp_path / "x.dense").indexer().index(records)
    assert not ptd.DenseIndex(tmp_path / "x.dense").exists()


def test_a_dataframe_is_indexed_like_records_and_an_empty_index_takes_dim(tmp_path, tiny_encoder):
    frame = tiny_encoder(pd.DataFrame({"docno": ["a", "b"], "text": ["gene", "light"]}))
    index = ptd.DenseIndex(tmp_path / "f.dense").indexer().index(frame)
    assert index.docnos[np.arange(2)].tolist() == ["a", "b"]
    assert index.encoder_settings["fingerprint"] == tiny_encoder.model.fingerprint   # from the frame's attrs
    empty = ptd.DenseIndex(tmp_path / "e.dense").indexer(dim=4).index([])
    assert (empty.count, empty.dim) == (0, 4)
    with pytest.raises(TypeError, match="takes an iterable of records"):
        ptd.DenseIndex(tmp_path / "s.dense").indexer().index("docs.jsonl")


def test_equal_stages_share_work_in_an_experiment(built, tiny_encoder):
    assert tiny_encoder >> built.retriever(num_results=5) == tiny_encoder >> built.retriever(num_results=5)
    assert built.retriever(num_results=5) != built.retriever(num_results=6)
    assert hash(built.scorer()) == hash(ptd.DenseIndex(built.path).scorer())
    calls = []
    original = tiny_encoder.model.encode
    def spy(texts, *a, **kw):
        calls.append(len(texts))
        return original(texts, *a, **kw)
    tiny_encoder.model.encode = spy
    try:
        topics = pd.DataFrame({"qid": ["1", "2"], "query": ["gene", "light"]})
        qrels = pd.DataFrame({"qid": ["1", "2"], "docno": ["d4", "d9"], "label": [1, 1]})
        pt.Experiment([tiny_encoder >> built.retriever(num_results=5), tiny_encoder >> built.retriever(num_results=10)],
                      topics, qrels, [pt.measures.nDCG @ 10], precompute_prefix=True)
    finally:
        del tiny_encoder.model.encode
    assert calls == [2]   # the shared prefix (the query encoder) ran once


def test_stages_describe_their_columns(built, tiny_encoder):
    assert pt.inspect.transformer_outputs(tiny_encoder >> built.retriever(), ["qid", "query"]) == \
        ["qid", "query", "docno", "docid", "score", "rank"]
    assert pt.inspect.transformer_outputs(built.scorer(), ["qid", "query", "docno", "query_vec", "score"]) == \
        ["qid", "query", "docno", "score", "rank"]


# ---- progress: the indexing bar knows the corpus size through the pipeline; bars and notices can be silenced ----
@pytest.fixture
def bars(monkeypatch):
    """Every progress bar drawn through pt.tqdm, kept for inspection."""
    from tqdm import tqdm
    made = []

    class Recording(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)
    monkeypatch.setattr(pt, "tqdm", Recording)
    return made


def test_indexing_bar_shows_the_corpus_size_through_the_pipeline(tiny_encoder, tmp_path, bars):
    from conftest import shared_collection
    collection = ptd.Collection(shared_collection("adi"))
    seen = []                                     # the bar's total when the first batch reaches the encoder
    peek = pt.apply.generic(lambda df: seen.append([b.total for b in bars if b.desc == "indexing"]) or df)
    (peek >> tiny_encoder >> ptd.DenseIndex(tmp_path / "a.dense").indexer()).index(collection.corpus_iter())
    (bar,) = [b for b in bars if b.desc == "indexing"]
    assert bar.total == bar.n == collection.num_docs() == 82 and seen[0] == [82]
    # passages outnumber the documents: the bar drops the total rather than run past 100%
    bars.clear()
    passages = pt.text.sliding(text_attr="text", length=4, stride=2, prepend_attr=None) >> tiny_encoder
    (passages >> ptd.DenseIndex(tmp_path / "p.dense").indexer()).index(collection.corpus_iter())
    (bar,) = [b for b in bars if b.desc == "indexing"]
    assert bar.n > 82 and bar.total is None


def test_an_unsized_source_gives_no_total_and_no_stale_one(tiny_encoder, tmp_path, bars, docs):
    from pyterrier_dense.stages.progress import announce_total
    announce_total(lambda: 999)                       # nobody is indexing: a no-op
    (tiny_encoder >> ptd.DenseIndex(tmp_path / "g.dense").indexer()).index(d for d in docs)
    (bar,) = [b for b in bars if b.desc == "indexing"]
    assert (bar.total, bar.n) == (None, len(docs))


def test_quiet_and_the_logger_silence_the_bars(tiny_st_model, tmp_path, bars, capsys):
    import logging
    from pyterrier_dense.stages.progress import quiet
    docs = [{"docno": f"d{i}", "text": "gene " * (i + 1)} for i in range(200)]
    loud = ptd.BiEncoder(tiny_st_model, precision="fp32")            # verbose: an encoding bar and an indexing bar
    (loud >> ptd.DenseIndex(tmp_path / "v.dense").indexer()).index(docs)
    err = capsys.readouterr().err
    assert "encoding documents" in err and "indexing: 200doc" in err
    with quiet():
        (loud >> ptd.DenseIndex(tmp_path / "q.dense").indexer()).index(docs)
    assert capsys.readouterr().err == "" and all(b.disable for b in bars[-1:])
    logger, level = logging.getLogger("pyterrier_dense"), logging.getLogger("pyterrier_dense").level
    logger.setLevel(logging.ERROR)
    try:
        (loud >> ptd.DenseIndex(tmp_path / "l.dense").indexer()).index(docs)
        loud(pd.DataFrame({"qid": [str(i) for i in range(200)], "query": [f"gene {i}" for i in range(200)]}))
    finally:
        logger.setLevel(level)
    assert capsys.readouterr().err == ""


# ---- the query cache: an experiment's systems share one encoding of each topic ------------------------------------
def spied_encoder(model_path, query_cache):
    """A fresh encoder and the (role, count) of every model.encode call it makes."""
    enc = ptd.BiEncoder(model_path, precision="fp32", verbose=False, query_cache=query_cache)
    calls = []
    original = enc.model.encode
    def spy(texts, role="doc", **kw):
        calls.append((role, len(texts)))
        return original(texts, role, **kw)
    enc.model.encode = spy
    return enc, calls


@pytest.fixture
def encode_calls(tiny_st_model):
    """An encoder caching 2 query vectors, and its model.encode calls."""
    return spied_encoder(tiny_st_model, query_cache=2)


def test_query_cache_encodes_each_query_once(encode_calls, tiny_encoder):
    from pyterrier_dense.stages.columns import ENCODER_ATTR
    enc, calls = encode_calls
    topics = pd.DataFrame({"qid": ["1", "2"], "query": ["gene", "light"]})
    first = enc(topics)
    second = enc.query_encoder()(topics)          # a role stage shares the cache
    assert calls == [("query", 2)]
    np.testing.assert_array_equal(np.stack(first["query_vec"]), np.stack(second["query_vec"]))
    np.testing.assert_allclose(np.stack(second["query_vec"]), tiny_encoder.model.encode(["gene", "light"], role="query"),
                               atol=1e-6)
    assert second.attrs[ENCODER_ATTR] == enc.model.settings()   # still checked by index stages downstream
    scored = enc.text_scorer()(pd.DataFrame({"qid": ["1"], "query": ["gene"], "docno": ["a"], "text": ["gene study"]}))
    assert calls == [("query", 2), ("doc", 1)] and len(scored) == 1


def test_query_cache_is_bounded_and_follows_the_settings(encode_calls):
    enc, calls = encode_calls
    ask = lambda *queries: enc(pd.DataFrame({"qid": [str(i) for i in range(len(queries))], "query": list(queries)}))
    ask("gene", "light")
    ask("cell")                                    # holds 2: "gene", the least recently used, goes
    ask("light", "cell")
    assert calls == [("query", 2), ("query", 1)] and len(enc._query_cache) == 2
    ask("gene")
    assert calls[-1] == ("query", 1)
    enc.model.max_length = 8                       # other settings, other vectors: the cache starts afresh
    ask("gene")
    assert calls[-1] == ("query", 1) and len(calls) == 4
    enc.clear_query_cache()
    ask("gene")
    assert len(calls) == 5


def test_without_a_query_cache_every_call_encodes(tiny_st_model, tiny_encoder):
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="query_cache must be an int >= 0"):
            ptd.BiEncoder(tiny_encoder.model, query_cache=bad)
    enc, calls = spied_encoder(tiny_st_model, query_cache=0)   # the default: timing a pipeline times the encoder
    topics = pd.DataFrame({"qid": ["1"], "query": ["gene"]})
    enc(topics)
    enc(topics)
    assert calls == [("query", 1), ("query", 1)]
