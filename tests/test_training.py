"""Training: examples from topics/qrels/mined negatives/triples/teachers, batches, the shared loop (validation,
early stopping, checkpoints and resume), GradCache, the bi-encoder and cross-encoder objectives, saving in layouts
sentence-transformers loads."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
import torch

import pyterrier_dense as ptd
from pyterrier_dense.training import (BiEncoderObjective, Trainer, build_training_set, make_batches, read_triples,
                                      teacher_scores)

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


class ScoreByOverlap(pt.Transformer):
    """A fake teacher: every document scored, for every query, by the number of the query's words it holds (plus a
    small docno-dependent tie-break); counts its calls."""

    def __init__(self, docs, skip=()):
        self.docs, self.skip, self.calls = docs, set(skip), 0

    def transform(self, topics):
        self.calls += 1
        rows = []
        for qid, query in zip(topics["qid"], topics["query"]):
            words = set(query.split())
            for i, (docno, text) in enumerate(sorted(self.docs.items())):
                if docno not in self.skip:
                    rows.append({"qid": qid, "docno": docno, "score": len(words & set(text.split())) + i / 1000})
        return pd.DataFrame(rows)

    def __repr__(self):
        return f"ScoreByOverlap(skip={sorted(self.skip)})"


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
    with pytest.raises(ValueError, match="fit: the training topics are empty"):
        build_training_set(topics.iloc[:0], qrels, docs)
    with pytest.raises(ValueError, match="fit: the training qrels are empty"):
        build_training_set(topics, qrels.iloc[:0], docs)


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
    probe = Trainer(enc.model, BiEncoderObjective(enc.model, texts=data.texts), batch_size=5, n_negatives=2, seed=3,
                    verbose=False)
    start = probe.evaluate(data)
    enc.fit(topics, qrels, topics, qrels, texts=docs, negatives=FirstDocs(sorted(docs)), n_negatives=2,
            epochs=4, batch_size=5, lr=1e-3, out=tmp_path / "trained")
    assert probe.evaluate(data) < 0.8 * start
    report = enc.last_fit
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4] and all(0 <= e["valid"] <= 1 for e in report["epochs"])
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
        Trainer(enc.model, None)
    fp32 = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        Trainer(fp32.model, None, batch_size=0)
    with pytest.raises(ValueError, match="distill must be one of"):
        BiEncoderObjective(fp32.model, texts={}, distill="mse")
    with pytest.raises(ValueError, match="needs a teacher"):
        fp32.fit(*toy_data()[:2], texts=toy_data()[2], distill="kl")
    with pytest.raises(ValueError, match="valid_topics and valid_qrels"):
        fp32.fit(*toy_data()[:2], valid_topics=toy_data()[0], texts=toy_data()[2])


def test_teacher_scores_are_cached_by_repr_and_topics(tmp_path):
    topics, qrels, docs = toy_data()
    teacher = ScoreByOverlap(docs)
    first = teacher_scores(teacher, topics, cache_dir=tmp_path)
    again = teacher_scores(teacher, topics, cache_dir=tmp_path)
    assert teacher.calls == 1 and first.equals(again) and len(list(tmp_path.iterdir())) == 1
    teacher_scores(teacher, topics.iloc[:3], cache_dir=tmp_path)       # other topics: another entry
    teacher_scores(ScoreByOverlap(docs, skip=["d0-0"]), topics, cache_dir=tmp_path)   # another teacher
    assert teacher.calls == 2 and len(list(tmp_path.iterdir())) == 3


def test_teacher_without_scores_for_some_pairs_is_reported(caplog):
    topics, qrels, docs = toy_data()
    teacher = ScoreByOverlap(docs, skip=["d0-0", "d0-1", "d1-0", "d2-2"])   # both positives of q0, one of q1
    scores = teacher_scores(teacher, topics, cache_dir=False)
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        data = build_training_set(topics, qrels, docs, negatives=FirstDocs(sorted(docs)), teacher=scores)
    assert "q0" not in data.qids and data.skipped["have no judged positive the teacher scored"] == 1
    assert data.skipped["judged positives without teacher score"] == 3                 # q0's two, q1's d1-0
    # the unscored documents in the nine pools: three in q1's (its own positive d1-0 is no negative), four elsewhere
    assert data.skipped["negatives without teacher score"] == 3 + 8 * 4
    assert "3 judged positives have no teacher score" in caplog.text
    for i, qid in enumerate(data.qids):
        assert set(data.teacher[i]) == set(data.positives[i]) | set(data.negatives[i])
        words = set(data.queries[i].split())
        d = data.negatives[i][0]
        assert data.teacher[i][d] == pytest.approx(len(words & set(docs[d].split())) + sorted(docs).index(d) / 1000)
    pool_only = build_training_set(topics, qrels, docs, teacher=scores)   # no negatives: the teacher's ranking
    i = pool_only.qids.index("q3")
    ranked = sorted(pool_only.negatives[i], key=lambda d: -pool_only.teacher[i][d])
    assert pool_only.negatives[i] == ranked


@pytest.mark.parametrize("bad, match", [(lambda r: r.drop(columns="score"), "must give qid, docno and score"),
                                        (lambda r: r.assign(score=np.where(r.index == 3, np.nan, r.score)),
                                         "1 non-finite scores"),
                                        (lambda r: pd.concat([r, r.iloc[:1]]), "more than once")])
def test_a_teacher_returning_bad_scores_is_an_error(bad, match):
    topics, qrels, docs = toy_data()
    teacher = pt.apply.generic(lambda t: bad(ScoreByOverlap(docs).transform(t)))
    with pytest.raises(ValueError, match=match):
        teacher_scores(teacher, topics, cache_dir=False)


def test_a_run_dataframe_is_a_teacher_its_rows_for_the_topics_kept(tmp_path):
    topics, qrels, docs = toy_data()
    run = ScoreByOverlap(docs).transform(topics)
    other = run.assign(qid="elsewhere")   # another topic's rows are not this training's
    scores = teacher_scores(pd.concat([run, other]), topics, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(scores, teacher_scores(ScoreByOverlap(docs), topics, cache_dir=False))
    assert not list(tmp_path.iterdir())   # nothing to cache: the run is the scores
    with pytest.raises(ValueError, match="the teacher run must give qid, docno and score columns"):
        teacher_scores(run.drop(columns="score"), topics)


def test_distilled_batches_carry_the_teacher_scores_of_their_groups():
    topics, qrels, docs = toy_data()
    data = build_training_set(topics, qrels, docs, teacher=teacher_scores(ScoreByOverlap(docs), topics, cache_dir=False))
    for batch in make_batches(data, 4, 3, np.random.default_rng(2)):
        for r, q in enumerate(batch.queries):
            i = data.queries.index(q)
            for g in range(batch.groups.shape[1]):
                assert batch.teacher[r, g] == data.teacher[i][batch.docnos[batch.groups[r, g]]]


def test_the_distillation_loss_is_kl_plus_in_batch_infonce(tiny_st_model):
    from pyterrier_dense.training import BiEncoderObjective
    topics, qrels, docs = toy_data()
    enc = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    data = build_training_set(topics, qrels, docs, teacher=teacher_scores(ScoreByOverlap(docs), topics, cache_dir=False))
    batch = make_batches(data, 3, 2, np.random.default_rng(0))[0]
    q, d = torch.randn(3, 8), torch.randn(len(batch.docnos), 8)
    objective = BiEncoderObjective(enc.model, texts=data.texts, distill="kl", teacher_temperature=0.5,
                                   temperature=0.1, in_batch_weight=0.3)
    s = (q @ d.T).numpy() / 0.1
    expected = 0.0
    for r in range(3):
        row = s[r] - s[r].max()
        keep = ~batch.mask[r]
        expected += 0.3 * -(row[batch.groups[r, 0]] - np.log(np.exp(row[keep]).sum())) / 3
        st, tt = s[r, batch.groups[r]], batch.teacher[r] / 0.5
        p = np.exp(tt - tt.max()) / np.exp(tt - tt.max()).sum()
        log_q = st - st.max() - np.log(np.exp(st - st.max()).sum())
        expected += (p * (np.log(p) - log_q)).sum() / 3
    assert objective.loss_from(q, d, batch).item() == pytest.approx(expected, rel=1e-4)


def test_read_triples_gives_topics_qrels_and_a_negatives_run(tmp_path):
    path = tmp_path / "triples.jsonl"
    path.write_text('{"qid": 1, "query": "a b", "pos": ["d1"], "neg": ["d2", "d3"]}\n\n'
                    '{"qid": "2", "query": "c", "pos": ["d4", "d5"], "neg": []}\n')
    topics, qrels, negatives = read_triples(path)
    assert topics.values.tolist() == [["1", "a b"], ["2", "c"]]
    assert qrels.values.tolist() == [["1", "d1", 1], ["2", "d4", 1], ["2", "d5", 1]]
    assert negatives.values.tolist() == [["1", "d2", 0], ["1", "d3", 1]]
    path.write_text('{"qid": 1, "query": "a b", "pos": ["d1"]}\n{"qid": 2, "pos": ["d1"]}\n')
    with pytest.raises(ValueError, match="line 2: not a triples record"):
        read_triples(path)
    # one line per (query, positive, negative), as MS MARCO's triples: merged by qid, each document once
    path.write_text('{"qid": 1, "query": "a b", "pos": ["d1"], "neg": ["d2"]}\n'
                    '{"qid": 1, "query": "a b", "pos": ["d1"], "neg": ["d3"]}\n'
                    '{"qid": 2, "query": "c", "pos": ["d4"], "neg": ["d2"]}\n'
                    '{"qid": 1, "query": "a b", "pos": ["d5"], "neg": ["d2"]}\n')
    topics, qrels, negatives = read_triples(path)
    assert topics.values.tolist() == [["1", "a b"], ["2", "c"]]
    assert qrels.values.tolist() == [["1", "d1", 1], ["1", "d5", 1], ["2", "d4", 1]]
    assert negatives.values.tolist() == [["1", "d2", 0], ["1", "d3", 1], ["2", "d2", 0]]
    path.write_text('{"qid": 1, "query": "a b", "pos": ["d1"]}\n{"qid": 1, "query": "other", "pos": ["d1"]}\n')
    with pytest.raises(ValueError, match="line 2: qid '1' has the query 'other' here and 'a b' on an earlier line"):
        read_triples(path)


def test_the_scifact_triples_file_reads_as_training_data():
    from conftest import shared_collection
    path = shared_collection("scifact") / "train_triples.train.bm25negs.jsonl"
    topics, qrels, negatives = read_triples(path)
    assert len(topics) == 809 and topics.qid.is_unique and len(negatives) >= 809 * 20
    assert not set(zip(qrels.qid, qrels.docno)) & set(zip(negatives.qid, negatives.docno))


def test_cross_encoder_fit_from_a_plain_encoder_learns_saves_and_loads_in_sentence_transformers(tiny_st_model,
                                                                                                tmp_path):
    from pyterrier_dense.training import CrossEncoderObjective
    topics, qrels, docs = toy_data()
    topics, qrels = topics.iloc[:4], qrels[qrels.qid.isin(["q0", "q1", "q2", "q3"]) & (qrels.label == 2)]
    negatives = FirstDocs(sorted(docs)[:8])   # a pool no larger than n_negatives: the same groups every epoch
    torch.manual_seed(0)
    ce = ptd.CrossEncoder(tiny_st_model, new_head=True, precision="fp32", verbose=False)
    data = build_training_set(topics, qrels, docs, negatives=negatives)
    probe = Trainer(ce.model, CrossEncoderObjective(ce.model, texts=data.texts), batch_size=4, n_negatives=8,
                    verbose=False)
    start = probe.evaluate(data)
    assert start == pytest.approx(np.log(8), abs=0.05)   # a fresh head: nearly equal logits over eight candidates
    ce.fit(topics, qrels, texts=docs, negatives=negatives, n_negatives=8, epochs=40, batch_size=4, lr=5e-3,
           warmup=0.0, out=tmp_path / "ce")
    assert probe.evaluate(data) < 0.8 * start
    assert len(ce.last_fit["epochs"]) == 40
    rows = list(zip(topics["query"], [docs[d] for d in sorted(docs)[:10]]))
    ours = ce.model.score(rows)
    reloaded = ptd.CrossEncoder(str(tmp_path / "ce"), precision="fp32", verbose=False)
    np.testing.assert_allclose(reloaded.model.score(rows), ours, atol=1e-5)
    assert reloaded.model.max_length == ce.model.max_length
    st = pytest.importorskip("sentence_transformers")
    st_scores = st.CrossEncoder(str(tmp_path / "ce"), device="cpu").predict(rows)   # through its default sigmoid
    np.testing.assert_allclose(st_scores, 1 / (1 + np.exp(-ours)), atol=1e-5)


def test_a_plain_encoder_needs_new_head_to_become_a_cross_encoder(tiny_st_model):
    with pytest.raises(OSError, match="new_head=True"):
        ptd.CrossEncoder(tiny_st_model, verbose=False)
    ce = ptd.CrossEncoder(tiny_st_model, new_head=True, precision="fp32", verbose=False)
    topics, qrels, docs = toy_data()
    with pytest.raises(ValueError, match="no training query has one"):
        ce.fit(topics, qrels, texts=docs)   # no negatives: nothing to learn from


def test_fit_with_a_teacher_distils_from_its_cached_scores(tiny_st_model, tmp_path):
    from pyterrier_dense.training import BiEncoderObjective
    topics, qrels, docs = toy_data()
    teacher = ScoreByOverlap(docs)
    enc = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    data = build_training_set(topics, qrels, docs, teacher=teacher_scores(teacher, topics, cache_dir=False))
    probe = Trainer(enc.model, BiEncoderObjective(enc.model, texts=data.texts, distill="kl", in_batch_weight=0.0),
                    batch_size=5, n_negatives=4, verbose=False)
    start = probe.evaluate(data)
    for _ in range(2):   # the second fit reads the teacher's scores from the cache
        enc.fit(topics, qrels, texts=docs, teacher=teacher, teacher_cache=tmp_path, n_negatives=4, epochs=3,
                batch_size=5, lr=1e-3, in_batch_weight=0.0)
    assert teacher.calls == 2 and len(list(tmp_path.glob("scores-*.parquet"))) == 1   # our call above + one fit
    assert probe.evaluate(data) < 0.8 * start   # the KL to the teacher's distribution fell


def test_the_training_layer_is_an_attribute_of_the_package(tmp_path):
    """``ptd.training.read_triples`` (as the README writes it) right after ``import pyterrier_dense``, in a fresh
    process where nothing has imported the subpackage yet."""
    import subprocess
    import sys
    path = tmp_path / "triples.jsonl"
    path.write_text('{"qid": "q1", "query": "gene", "pos": ["d1"], "neg": ["d2"]}\n')
    code = ("import sys, pyterrier_dense as ptd\n"
            "assert 'pyterrier_dense.training' not in sys.modules\n"
            "topics, qrels, negatives = ptd.training.read_triples(sys.argv[1])\n"
            "print(list(topics.qid), list(negatives.docno), ptd.training.interpolate.__name__)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['q1']", "['d2']", "interpolate"]
