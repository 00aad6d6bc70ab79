"""ColBERT as PyTerrier stages over the tiny checkpoints: text re-ranking equals re-ranking from the index, encoder
settings travel into the manifest and are checked, query pruning by ICF, bad input named."""
import logging

import numpy as np
import pandas as pd
import pytest

import pyterrier_dense as ptd
from pyterrier_dense.indexes.maxsim import maxsim
from pyterrier_dense.stages.query_pruning import coverage_choice, stand_in_weights

TEXTS = ["the magnetic field of an electron", "protein expression in cancer cells", "quantum theory of light",
         "temperature and pressure of a gas", "gene study results", "energy of a wave , measured",
         "measurement of the electron field", "patients in the study", "data model method", "light wave energy",
         "cell protein gene", "system theory"]
QUERIES = pd.DataFrame({"qid": ["q1", "q2", "q3"], "query": ["electron field", "cancer protein gene", "light wave"]})


@pytest.fixture(scope="module", params=["colbert_ir", "pylate"])
def colbert(request):
    path = request.getfixturevalue(f"tiny_{request.param}_model")
    return ptd.ColBERT(path, precision="fp32", verbose=False, batch_size=4)


@pytest.fixture(scope="module")
def docs():
    return [{"docno": f"d{i}", "text": t} for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def index(colbert, docs, tmp_path_factory):
    index = ptd.ColBERTIndex(tmp_path_factory.mktemp("cb") / "tiny.colbert")
    (colbert >> index.indexer(ncentroids=8)).index(docs)
    return index


def candidates(docs):
    return QUERIES.merge(pd.DataFrame(docs), how="cross").assign(score=0.0)


def test_text_reranking_equals_reranking_from_the_index(colbert, index, docs):
    cands = candidates(docs)
    by_text = colbert(cands)
    by_index = (colbert.query_encoder() >> index.scorer())(cands)
    for qid in QUERIES.qid:
        a = by_text[by_text.qid == qid]
        b = by_index[by_index.qid == qid]
        assert a.docno.tolist() == b.docno.tolist()
        assert np.allclose(a.score, b.score, atol=2e-2)   # the index stores float16
    # and the score is MaxSim of the encoder's own vectors
    q = colbert.model.encode(["electron field"], role="query")[0].embs
    d = colbert.model.encode([TEXTS[0]], role="doc")[0].embs
    row = by_text[(by_text.qid == "q1") & (by_text.docno == "d0")]
    assert row.score.item() == pytest.approx(maxsim(q, d, np.array([0, len(d)]))[0], abs=1e-5)


def test_end_to_end_retrieval_and_the_manifest(colbert, index):
    settings = index.encoder_settings
    assert settings == colbert.model.settings() and settings["dim"] == 16
    e2e = (colbert.query_encoder() >> index.retriever(num_results=5, cells=8, candidates=100))(QUERIES)
    exact = (colbert.query_encoder() >> index.exhaustive_retriever(num_results=5))(QUERIES)
    pd.testing.assert_frame_equal(e2e, exact)
    assert e2e.groupby("qid").size().tolist() == [5, 5, 5] and "query_toks" in e2e.columns


def test_an_encoder_with_other_query_settings_is_refused(colbert, index):
    other = ptd.ColBERT(colbert.model.model_id, query_length=8, precision="fp32", verbose=False)
    with pytest.raises(ValueError, match="query_length"):
        (other.query_encoder() >> index.retriever())(QUERIES)
    # document-side options matter when documents meet the index
    wholeword = ptd.ColBERT(colbert.model.model_id, whole_word=True, precision="fp32", verbose=False)
    assert len((wholeword.query_encoder() >> index.retriever(num_results=2))(QUERIES)) == 6
    with pytest.raises(ValueError, match="whole_word"):
        (wholeword >> index.indexer(mode="append")).index([{"docno": "new", "text": "a new gene"}])


def test_query_columns(colbert):
    out = colbert.query_encoder()(QUERIES)
    for embs, toks in zip(out.query_embs, out.query_toks):
        assert embs.shape == (len(toks), 16) and np.allclose(np.linalg.norm(embs, axis=1), 1, atol=1e-5)
    assert list(out.columns) == ["qid", "query", "query_embs", "query_toks"]
    if colbert.model.layout == "colbert":   # query augmentation: padded to query_length with [MASK]
        assert all(len(t) == colbert.model.query_length for t in out.query_toks)
        assert out.query_toks[0][:2] == ["[CLS]", "[unused0]"] and out.query_toks[0][-1] == "[MASK]"


def test_pruning_keeps_the_tokens_of_highest_icf(colbert, index):
    counts = np.zeros(colbert.model.vocab_size, np.int64)
    tok = colbert.model.tokenizer
    for word, n in {"electron": 1000, "field": 3, "cancer": 500, "protein": 2, "gene": 50}.items():
        counts[tok.convert_tokens_to_ids(word)] = n
    pruned = colbert.query_encoder(prune_to=1, frequencies=(counts, 10_000), prune_by="icf")(QUERIES)
    marker = colbert.model.token_strings([colbert.model.tokenizer.convert_tokens_to_ids(colbert.model.query_marker)]) \
        if colbert.model.query_marker else []
    assert [t for t in pruned.query_toks[:2]] == [["[CLS]", *marker, "field", "[SEP]"],
                                                  ["[CLS]", *marker, "protein", "[SEP]"]]
    full = colbert.query_encoder()(QUERIES)
    row = full.query_toks[0].index("field")
    assert np.array_equal(pruned.query_embs[0][pruned.query_toks[0].index("field")], full.query_embs[0][row])
    # from the index's own counts, pruned queries retrieve
    two = (colbert.query_encoder(prune_to=2, frequencies=index) >> index.retriever(num_results=3))(QUERIES)
    assert len(two) == 9
    with pytest.raises(ValueError, match="qid='q9'.*no token left"):
        colbert.query_encoder(prune_to=2, frequencies=index)(pd.DataFrame({"qid": ["q9"], "query": ["!!"]}))
    with pytest.raises(ValueError, match="frequencies"):
        colbert.query_encoder(prune_to=2)
    with pytest.raises(ValueError, match="prune_by must be one of"):
        colbert.query_encoder(prune_to=2, frequencies=index, prune_by="idf")


def test_coverage_pruning_keeps_stand_ins_scaled_by_what_they_stand_for(colbert):
    """The default keeps the tokens chosen by query_pruning.coverage_choice, each scaled by 1 + the dropped tokens
    whose nearest kept vector it is; with room for every token, nothing changes."""
    query = pd.DataFrame({"qid": ["q1"], "query": ["quantum field theory of the electron gene"]})
    counts = np.zeros(colbert.model.vocab_size, np.int64)
    full = colbert.query_encoder()(query)
    toks, embs = full.query_toks[0], full.query_embs[0]
    masks = [i for i, t in enumerate(toks) if t == "[MASK]"]     # query augmentation: neither kept nor stood in for
    structural = [i for i, t in enumerate(toks) if t.startswith("[") and i not in masks]
    content = [i for i in range(len(toks)) if i not in structural + masks]
    ids = colbert.model.tokenizer.convert_tokens_to_ids([toks[i] for i in content])
    chosen = sorted(np.array(content)[coverage_choice(embs[content], np.array(ids), counts, 10_000, 2)])
    pruned = colbert.query_encoder(prune_to=2, frequencies=(counts, 10_000))(query)
    assert pruned.query_toks[0] == [toks[i] for i in sorted(structural + chosen)]
    kept = embs[sorted(structural + chosen)]
    dropped = embs[[i for i in content if i not in chosen]]
    nearest = np.argmax(dropped @ kept.T, axis=1)
    weights = 1 + np.bincount(nearest, minlength=len(kept))
    np.testing.assert_allclose(pruned.query_embs[0], kept * weights[:, None], rtol=1e-6)
    assert weights.sum() == len(toks) - len(masks)      # every other token is kept or stood in for once
    everything = colbert.query_encoder(prune_to=len(content), frequencies=(counts, 10_000))(query)
    unmasked = [i for i in range(len(toks)) if i not in masks]
    assert everything.query_toks[0] == [toks[i] for i in unmasked]
    assert np.array_equal(everything.query_embs[0], embs[unmasked])


def test_pruning_takes_one_piece_of_each_word_first(colbert):
    """'xqz' is three pieces (x ##q ##z), each rarer than any whole word: plain ICF would spend two slots on it."""
    tok = colbert.model.tokenizer
    counts = np.zeros(colbert.model.vocab_size, np.int64)
    for piece, n in {"x": 2, "##q": 1, "##z": 1, "field": 3, "gene": 50}.items():
        counts[tok.convert_tokens_to_ids(piece)] = n
    query = pd.DataFrame({"qid": ["q1"], "query": ["xqz field gene"]})
    full = colbert.query_encoder()(query).query_toks[0]
    assert [t for t in full if t in ("x", "##q", "##z")] == ["x", "##q", "##z"]

    def kept(k):
        toks = colbert.query_encoder(prune_to=k, frequencies=(counts, 10_000), prune_by="icf")(query).query_toks[0]
        return [t for t in toks if t in ("x", "##q", "##z", "field", "gene")]
    assert kept(2) == ["##q", "field"]            # the word's rarest piece (##q before ##z: first of equals)
    assert kept(3) == ["##q", "field", "gene"]
    assert kept(4) == ["##q", "##z", "field", "gene"]
    assert kept(5) == ["x", "##q", "##z", "field", "gene"]


def test_bad_input_is_named(colbert, index, docs):
    with pytest.raises(ValueError, match="docno='d1'"):
        colbert.doc_encoder()(pd.DataFrame({"docno": ["d0", "d1"], "text": ["fine", "   "]}))
    with pytest.raises(ValueError, match="needs column"):
        colbert.scorer()(QUERIES.assign(docno="d0"))
    with pytest.raises(ValueError, match="query_embs"):
        index.scorer()(QUERIES.assign(docno="d0"))
    cands = candidates(docs)
    out = colbert.scorer()(cands.iloc[:0])
    assert list(out.columns)[-2:] == ["score", "rank"] and len(out) == 0


def test_long_documents_truncation_is_reported_once_at_the_end_of_indexing(colbert, tmp_path, caplog):
    long = " ".join(["protein gene cell"] * 40)
    docs = [{"docno": f"l{i}", "text": long if i % 2 else "short text"} for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        (colbert >> ptd.ColBERTIndex(tmp_path / "t.colbert").indexer(ncentroids=2)).index(docs)
    notes = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("3 of 6 documents")


def test_coverage_choice_and_stand_in_weights_by_hand():
    """Unit vectors at 0, 10, 20 and 85 degrees. Gains of a first pick, sum over t of cos(t, j) + 1 (nothing
    covered counts -1): 7.012, 7.229, 7.348, 5.769, so 20 degrees; then 85 degrees adds 1 - cos 65 = 0.577 where
    0 or 10 degrees add 0.06. Weighted by ICF, a rare token at 0 degrees pulls the first pick to 10 degrees."""
    angles = np.radians([0, 10, 20, 85])
    embs = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    ids = np.array([1, 2, 3, 4])
    common = np.full(5, 10)                                     # every token as common: plain coverage
    assert coverage_choice(embs, ids, common, 1000, 2).tolist() == [2, 3]
    assert coverage_choice(embs, ids, common, 1000, 4).tolist() == [0, 1, 2, 3]
    counts = np.full(5, 10**6)                                  # icf log(10): 2.30 each ...
    assert coverage_choice(embs, ids, counts, 10**7, 1).tolist() == [2]
    counts[1] = 0                                               # ... but 16.1 for token id 1 (at 0 degrees)
    assert coverage_choice(embs, ids, counts, 10**7, 1).tolist() == [1]
    # kept 20 and 85 degrees: 0 and 10 degrees are nearest to 20
    assert stand_in_weights(embs[[2, 3]], embs[[0, 1]]).tolist() == [3.0, 1.0]
    assert stand_in_weights(embs[[2, 3]], embs[:0]).tolist() == [1.0, 1.0]
