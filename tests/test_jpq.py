"""JPQ: query encoder + PQ centroids trained over a PQ index's fixed codes (tiny BERT, a small synthetic corpus)."""
import os

import numpy as np
import pandas as pd
import pytest
import torch

import pyterrier_dense as ptd
from conftest import WORDS
from pyterrier_dense.indexes import DenseIndexWriter
from pyterrier_dense.training.jpq import TrainablePQ, jpq_loss, train_jpq

N_DOCS, N_QUERIES = 400, 48
TRAIN = dict(epochs=3, batch_size=8, lr=1e-3, centroid_lr=1e-2, n_negatives=4, temperature=0.05, seed=0)


@pytest.fixture(scope="module")
def corpus(tiny_encoder, tmp_path_factory):
    """400 random-word documents encoded by the tiny encoder, their dense index, and 48 training queries (3-4
    words of one document each, that document judged relevant; every fourth query has a second positive)."""
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(6, 11))) for _ in range(N_DOCS)]
    docnos = [f"d{i}" for i in range(N_DOCS)]
    path = tmp_path_factory.mktemp("jpq") / "c.dense"
    with DenseIndexWriter(path, encoder=tiny_encoder.model.settings()) as w:
        w.add(docnos, tiny_encoder.model.encode(texts, role="doc"))
    topics = pd.DataFrame({"qid": [f"q{i}" for i in range(N_QUERIES)],
                           "query": [" ".join(texts[i].split()[:4]) for i in range(N_QUERIES)]})
    qrels = [(f"q{i}", f"d{i}", 1) for i in range(N_QUERIES)] + \
        [(f"q{i}", f"d{N_QUERIES + i}", 1) for i in range(0, N_QUERIES, 4)]
    qrels = pd.DataFrame(qrels, columns=["qid", "docno", "label"])
    return ptd.DenseIndex(path), topics, qrels


@pytest.fixture(scope="module")
def pq_indexes(corpus, tmp_path_factory):
    dense = corpus[0]
    root = tmp_path_factory.mktemp("jpq_pq")
    return {"pq": dense.compress(root / "pq", m=8, nbits=8),
            "opq": dense.compress(root / "opq", m=8, nbits=8, opq=True, opq_iterations=5),
            "ivfpq": dense.compress(root / "ivfpq", m=8, nbits=8, nlist=4, nprobe=4)}


@pytest.fixture(scope="module")
def trained(tiny_encoder, corpus, pq_indexes, tmp_path_factory):
    root = tmp_path_factory.mktemp("jpq_out")
    enc, index = train_jpq(tiny_encoder, pq_indexes["pq"], corpus[1], corpus[2], out_index=root / "new.pq",
                           out_model=root / "model", verbose=False, **TRAIN)
    return enc, index, root


def structure_of(index):
    return index.snapshot().structure()[0]


def query_frame(topics):
    return topics[["qid", "query"]]


def check_equals_brute_force(enc, index, topics, k=20):
    """``enc >> index.retriever()`` returns, for each query, the k best documents by TrainablePQ's scoring of the
    index's current centroids, with those scores."""
    res = (enc >> index.retriever(num_results=k))(query_frame(topics))
    vecs = enc.model.encode(topics["query"].tolist(), role="query")
    brute = TrainablePQ.from_faiss(structure_of(index)).score_all(torch.from_numpy(vecs)).numpy()
    row_of = {q: i for i, q in enumerate(topics["qid"])}
    rows = res["qid"].map(row_of).to_numpy()
    np.testing.assert_allclose(res["score"].to_numpy(), brute[rows, res["docid"].to_numpy()], rtol=1e-4, atol=1e-4)
    best = -np.sort(-brute, axis=1)[:, :k]
    np.testing.assert_allclose(res["score"].to_numpy(), best[rows, res["rank"].to_numpy()], rtol=1e-4, atol=1e-4)
    return res


@pytest.mark.parametrize("kind", ["pq", "opq", "ivfpq"])
def test_adc_scores_equal_faiss_search_scores(pq_indexes, corpus, tiny_encoder, kind):
    structure = structure_of(pq_indexes[kind])
    queries = tiny_encoder.model.encode(corpus[1]["query"].tolist()[:10], role="query")
    pq = TrainablePQ.from_faiss(structure)
    params = pq_indexes[kind].spec.search_params(N_DOCS)   # IVF: every list probed
    faiss_scores, rows = structure.search(queries, N_DOCS, params=params)
    ours = pq.score_all(torch.from_numpy(queries)).numpy()
    np.testing.assert_allclose(np.take_along_axis(ours, rows, 1), faiss_scores, rtol=1e-5, atol=1e-5)
    chosen = torch.from_numpy(rows[:, :5])   # the differentiable per-row scores agree too
    np.testing.assert_allclose(pq.score(torch.from_numpy(queries), chosen).detach().numpy(), faiss_scores[:, :5],
                               rtol=1e-5, atol=1e-5)


def test_training_lowers_the_loss_of_a_fixed_batch(tiny_encoder, pq_indexes, corpus, trained):
    enc, index, _ = trained
    topics = corpus[1]
    queries, positives = topics["query"].tolist()[:8], [np.array([i]) for i in range(8)]

    def loss(model, pq_index):
        pq = TrainablePQ.from_faiss(structure_of(pq_index))
        with torch.no_grad():
            return jpq_loss(model, pq, queries, positives, list(range(8)), n_negatives=4, temperature=0.05).item()

    before, after = loss(tiny_encoder.model, pq_indexes["pq"]), loss(enc.model, index)
    assert after < 0.9 * before, (before, after)
    history = index.manifest["report"]["jpq"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[-1]["train_loss"] < history[0]["train_loss"]


def test_codes_are_kept_and_centroids_change(pq_indexes, trained):
    old, new = TrainablePQ.from_faiss(structure_of(pq_indexes["pq"])), TrainablePQ.from_faiss(structure_of(trained[1]))
    assert torch.equal(old.codes, new.codes)
    assert not torch.allclose(old.centroids, new.centroids)
    assert list(trained[1].docnos[np.arange(N_DOCS)]) == list(pq_indexes["pq"].docnos[np.arange(N_DOCS)])
    assert trained[1].spec == pq_indexes["pq"].spec


def test_trained_pipeline_equals_brute_force_with_the_new_centroids(trained, corpus):
    enc, index, _ = trained
    res = check_equals_brute_force(enc, index, corpus[1])
    assert set(res.columns) >= {"qid", "docno", "score", "rank"}


def test_original_encoder_and_index_are_untouched_and_refuse_their_counterparts(tiny_encoder, pq_indexes, corpus,
                                                                                trained):
    enc, index, _ = trained
    model = tiny_encoder.model
    assert model.query_model is model.doc_model            # the original still shares one tower
    assert enc.model.query_model is not enc.model.doc_model and enc.model.doc_model is model.doc_model
    assert pq_indexes["pq"].encoder_settings["fingerprint"] == model.fingerprint != enc.model.fingerprint
    queries = query_frame(corpus[1])[:3]
    with pytest.raises(ValueError, match="another encoder configuration"):
        (tiny_encoder >> index.retriever())(queries)
    with pytest.raises(ValueError, match="another encoder configuration"):
        (enc >> pq_indexes["pq"].retriever())(queries)
    assert len((tiny_encoder >> pq_indexes["pq"].retriever(num_results=5))(queries)) == 15


def test_saved_model_loads_back_as_the_trained_query_encoder(trained, corpus):
    enc, index, root = trained
    loaded = ptd.BiEncoder(str(root / "model"), precision="fp32", verbose=False)   # query_model/ found beside
    assert loaded.model.query_model_id == os.path.join(str(root / "model"), "query_model")
    assert loaded.model.fingerprint == enc.model.fingerprint
    queries = corpus[1]["query"].tolist()[:5]
    np.testing.assert_allclose(loaded.model.encode(queries, role="query"), enc.model.encode(queries, role="query"),
                               atol=1e-5)
    assert len((loaded >> index.retriever(num_results=5))(query_frame(corpus[1])[:2])) == 10


@pytest.mark.parametrize("kind", ["opq", "ivfpq"])
def test_opq_and_ivf_pq_are_trained(tiny_encoder, pq_indexes, corpus, tmp_path, capsys, kind):
    verbose = kind == "opq"
    enc, index = train_jpq(tiny_encoder, pq_indexes[kind], corpus[1], corpus[2], out_index=tmp_path / "new",
                           verbose=verbose, **{**TRAIN, "epochs": 1})
    err = capsys.readouterr().err
    assert ("JPQ" in err and "loss=" in err) if verbose else "JPQ" not in err
    old, new = TrainablePQ.from_faiss(structure_of(pq_indexes[kind])), TrainablePQ.from_faiss(structure_of(index))
    assert torch.equal(old.codes, new.codes) and not torch.allclose(old.centroids, new.centroids)
    if kind == "opq":
        assert torch.equal(old.rotation, new.rotation)
    check_equals_brute_force(enc, index, corpus[1])   # the IVF index probes all 4 lists (nprobe=4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(m=8, nbits=4), "4-bit fast-scan PQ"),
    (dict(m=4, nbits=8, quantizer="rq"), "residual quantiser"),
])
def test_unsupported_structures_are_refused_by_name(tiny_encoder, corpus, tmp_path, kwargs, message):
    index = corpus[0].compress(tmp_path / "x", **kwargs)
    with pytest.raises(ValueError, match=f"{message}.*supported: PQ or IVF-PQ with 8-bit codes"):
        train_jpq(tiny_encoder, index, corpus[1], corpus[2], out_index=tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


def test_clear_errors(tiny_encoder, other_tiny_model, pq_indexes, corpus, tmp_path):
    pq, (_, topics, qrels) = pq_indexes["pq"], corpus
    out = dict(out_index=tmp_path / "out", verbose=False)
    elsewhere = qrels.assign(docno="not-in-the-index")
    with pytest.raises(ValueError, match="none of the 48 training queries has a judged positive"):
        train_jpq(tiny_encoder, pq, topics, elsewhere, **out)
    other = ptd.BiEncoder(other_tiny_model, precision="fp32", verbose=False)
    with pytest.raises(ValueError, match="not the one .* were encoded with.*fingerprint"):
        train_jpq(other, pq, topics, qrels, **out)
    small = tmp_path / "small.dense"
    with DenseIndexWriter(small, dim=16) as w:
        w.add([f"d{i}" for i in range(300)], np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32))
    with pytest.raises(ValueError, match="32-dimensional vectors, but .* holds 16-dimensional"):
        train_jpq(tiny_encoder, ptd.DenseIndex(small).compress(tmp_path / "small.pq", m=4), topics, qrels, **out)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        train_jpq(tiny_encoder, pq, topics, qrels, epochs=0, **out)
    with pytest.raises(ValueError, match="need columns \\['label'\\]"):
        train_jpq(tiny_encoder, pq, topics, qrels.drop(columns="label"), **out)
    bf16 = ptd.BiEncoder(tiny_encoder.model.model_id, precision="bf16", verbose=False)
    with pytest.raises(ValueError, match="precision='fp32' to train it"):
        train_jpq(bf16, pq, topics, qrels, **out)
    assert not (tmp_path / "out").exists()


def test_partly_judged_topics_are_counted(tiny_encoder, pq_indexes, corpus, tmp_path, caplog):
    _, topics, qrels = corpus
    topics = pd.concat([topics, pd.DataFrame({"qid": ["unjudged"], "query": ["energy"]})])
    qrels = pd.concat([qrels, pd.DataFrame({"qid": ["q0"], "docno": ["missing"], "label": [1]})])
    with caplog.at_level("WARNING", logger="pyterrier_dense"):
        _, index = train_jpq(tiny_encoder, pq_indexes["pq"], topics, qrels, out_index=tmp_path / "o", verbose=False,
                             **{**TRAIN, "epochs": 1})
    report = index.manifest["report"]["jpq"]
    assert report["queries"] == N_QUERIES
    assert report["skipped"] == {"no judged positive": 1, "no judged positive in the index": 0,
                                 "judged positives not in the index": 1}
    assert "1 of 49 training queries have no judged positive" in caplog.text


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_weights_and_centroids_of_an_uninterrupted_one(tiny_encoder, pq_indexes, corpus,
                                                                                   tmp_path, monkeypatch):
    from pyterrier_dense.training.jpq import JPQObjective
    args = dict(verbose=False, checkpoint_every=1, **{**TRAIN, "epochs": 2})
    whole_enc, whole = train_jpq(tiny_encoder, pq_indexes["pq"], corpus[1], corpus[2], out_index=tmp_path / "whole",
                                 **args)
    real, calls = JPQObjective.backward, {"n": 0}

    def dies_at_eighth(self, batch, scale=1.0):
        calls["n"] += 1
        if calls["n"] == 8:   # in the second epoch (6 batches an epoch)
            raise Killed
        return real(self, batch, scale)
    monkeypatch.setattr(JPQObjective, "backward", dies_at_eighth)
    with pytest.raises(Killed):
        train_jpq(tiny_encoder, pq_indexes["pq"], corpus[1], corpus[2], out_index=tmp_path / "b", **args)
    assert (tmp_path / "b.training" / "trainer_state.pt").exists() and not (tmp_path / "b").exists()
    monkeypatch.setattr(JPQObjective, "backward", real)

    enc, index = train_jpq(tiny_encoder, pq_indexes["pq"], corpus[1], corpus[2], out_index=tmp_path / "b", **args)
    assert not (tmp_path / "b.training").exists()   # removed once training ended
    assert torch.equal(TrainablePQ.from_faiss(structure_of(index)).centroids,
                       TrainablePQ.from_faiss(structure_of(whole)).centroids)
    for a, b in zip(whole_enc.model.query_model.state_dict().values(), enc.model.query_model.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["epoch"] for h in index.manifest["report"]["jpq"]["history"]] == [1, 2]


def test_an_existing_output_index_is_refused_before_training(tiny_encoder, pq_indexes, corpus, trained, monkeypatch):
    from pyterrier_dense.training.jpq import JPQObjective
    monkeypatch.setattr(JPQObjective, "backward", lambda *a: pytest.fail("trained before refusing"))
    with pytest.raises(FileExistsError, match="new.pq already exists; pass mode='overwrite'"):
        train_jpq(tiny_encoder, pq_indexes["pq"], corpus[1], corpus[2], out_index=trained[2] / "new.pq",
                  verbose=False)
