"""Training a bi-encoder: examples from topics/qrels/mined negatives, batches, the loop, saving in the
sentence-transformers layout."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

import pyterrier_dense as ptd
from pyterrier_dense.training import ContrastiveTrainer, build_training_set
from pyterrier_dense.training.trainer import make_batches

TOPICS = ["magnetic field", "protein cancer", "quantum light", "gas pressure", "gene study", "wave energy",
          "electron measurement", "patients study", "data method", "cell gene"]


def toy_data():
    """Ten queries, each judged relevant to two of 30 documents; document texts share the query's words."""
    rng = np.random.default_rng(0)
    words = "the of and to in is for with by as at from".split()
    docs, qrels = {}, []
    for i, topic in enumerate(TOPICS):
        for j in range(3):
            docno = f"d{i}-{j}"
            docs[docno] = " ".join(list(rng.choice(words, 4)) + topic.split() + list(rng.choice(words, 3)))
            if j < 2:
                qrels.append({"qid": f"q{i}", "docno": docno, "label": 1 + (j == 0)})
    topics = pd.DataFrame({"qid": [f"q{i}" for i in range(len(TOPICS))], "query": TOPICS})
    return topics, pd.DataFrame(qrels), docs


class FirstDocs(pt.Transformer):
    """A fake first stage returning every document for every query, in a fixed order: the negatives it mines are
    known in advance."""

    def __init__(self, docnos):
        self.docnos = docnos

    def transform(self, topics):
        rows = [{"qid": q, "query": t, "docno": d, "rank": r, "score": -r} for q, t in zip(topics["qid"], topics["query"])
                for r, d in enumerate(self.docnos)]
        return pd.DataFrame(rows)


def test_training_set_removes_judged_positives_skips_top_and_reports(caplog):
    topics, qrels, docs = toy_data()
    topics = pd.concat([topics, pd.DataFrame({"qid": ["q-none"], "query": ["no judgements"]})], ignore_index=True)
    qrels = pd.concat([qrels, pd.DataFrame({"qid": ["q1"], "docno": ["missing-doc"], "label": [1]})])
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        data = build_training_set(topics, qrels, docs, negatives=FirstDocs(sorted(docs)), skip_top=2)
    assert len(data) == 10 and data.skipped["have no judged positive"] == 1
    assert data.skipped["judged positives without text"] == 1
    assert "1 of 11 training queries have no judged positive" in caplog.text
    for qid, positives, pool in zip(data.qids, data.positives, data.negatives):
        judged = set(qrels[(qrels.qid == qid) & (qrels.label > 0)].docno)
        assert not judged & set(pool) and set(positives) <= judged
        assert pool == [d for d in sorted(docs)[2:] if d not in judged]   # ranked order kept, first two skipped
    with pytest.raises(ValueError, match="no training query has a judged positive"):
        build_training_set(topics, qrels.assign(label=0), docs)


def test_batches_hold_each_document_once_and_mask_the_other_positives():
    topics, qrels, docs = toy_data()
    qrels = pd.concat([qrels, pd.DataFrame({"qid": ["q0"], "docno": ["d1-0"], "label": [1]})])   # shared positive
    data = build_training_set(topics, qrels, docs, negatives=FirstDocs(sorted(docs)))
    for batch in make_batches(data, 4, 5, np.random.default_rng(1)):
        assert len(batch.docnos) == len(set(batch.docnos))
        for r, q in enumerate(batch.queries):
            qid = data.qids[data.queries.index(q)]
            judged = set(qrels[(qrels.qid == qid)].docno)
            assert batch.docnos[batch.positives[r]] in judged and not batch.mask[r, batch.positives[r]]
            masked = {batch.docnos[c] for c in np.flatnonzero(batch.mask[r])}
            assert masked == {d for d in batch.docnos if d in judged} - {batch.docnos[batch.positives[r]]}


def test_fit_lowers_the_loss_saves_and_loads_in_sentence_transformers(tiny_st_model, tmp_path):
    topics, qrels, docs = toy_data()
    enc = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    before = enc.model.fingerprint
    data = build_training_set(topics, qrels, docs, negatives=FirstDocs(sorted(docs)))
    probe = ContrastiveTrainer(enc.model, batch_size=5, n_negatives=2, seed=3, verbose=False)
    start = probe.evaluate(data)
    enc.fit(topics, qrels, topics, qrels, texts=docs, negatives=FirstDocs(sorted(docs)), n_negatives=2,
            epochs=4, batch_size=5, lr=1e-3, out=tmp_path / "trained")
    assert probe.evaluate(data) < 0.8 * start
    report = enc.last_fit
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4] and all("valid_loss" in e for e in report["epochs"])
    assert enc.model.fingerprint != before and enc.model.settings()["fingerprint"] == enc.model.fingerprint
    st = pytest.importorskip("sentence_transformers")
    texts = list(docs.values())[:6]
    ours = enc.model.encode(texts)
    np.testing.assert_allclose(st.SentenceTransformer(str(tmp_path / "trained"), device="cpu").encode(texts), ours,
                               atol=1e-5)
    reloaded = ptd.BiEncoder(str(tmp_path / "trained"), precision="fp32", verbose=False).model
    np.testing.assert_allclose(reloaded.encode(texts), ours, atol=1e-6)
    assert reloaded.fingerprint == enc.model.fingerprint


def test_training_needs_full_precision_weights_and_sane_arguments(tiny_st_model):
    enc = ptd.BiEncoder(tiny_st_model, precision="bf16", verbose=False)
    with pytest.raises(ValueError, match="precision='fp32' to train"):
        ContrastiveTrainer(enc.model)
    fp32 = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        ContrastiveTrainer(fp32.model, batch_size=0)
    with pytest.raises(ValueError, match="valid_topics and valid_qrels"):
        fp32.fit(*toy_data()[:2], valid_topics=toy_data()[0], texts=toy_data()[2])
