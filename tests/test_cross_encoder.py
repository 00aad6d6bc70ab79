"""CrossEncoderModel and the CrossEncoder stage on tiny sequence-classification checkpoints: one-logit BERT (saved by
sentence-transformers' CrossEncoder, the ms-marco layout), two-class BERT and ELECTRA; scores against transformers
and sentence-transformers, activations, document-only truncation, batching, the stage's frames and errors."""
import logging
import string

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import WORDS
from pyterrier_dense.models.cross_encoder_model import CrossEncoderModel
from pyterrier_dense.stages.cross_encoder import CrossEncoder

ST_MAX_LENGTH = 48


def _vocab_file(path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits) \
        + [f"##{c}" for c in string.ascii_lowercase + string.digits] + list(string.punctuation) + WORDS
    vocab = list(dict.fromkeys(vocab))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return len(vocab)


def _bert(path, num_labels, seed):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    path.mkdir(parents=True)
    n = _vocab_file(path)
    BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
                        initializer_range=0.2)  # the default 0.02 gives nearly equal logits to every pair
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(path)
    return path


def _electra(path, seed):
    from transformers import ElectraConfig, ElectraForSequenceClassification, ElectraTokenizerFast
    path.mkdir(parents=True)
    n = _vocab_file(path)
    ElectraTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    torch.manual_seed(seed)
    config = ElectraConfig(vocab_size=n, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, num_labels=1,
                           initializer_range=0.2)
    model = ElectraForSequenceClassification(config).eval()
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Paths of the three checkpoints: "one" (saved through sentence-transformers with max_length 48), "two",
    "electra"."""
    from sentence_transformers import CrossEncoder as STCrossEncoder
    root = tmp_path_factory.mktemp("cross_encoders")
    plain_one = _bert(root / "plain_one", 1, seed=11)
    STCrossEncoder(str(plain_one), max_length=ST_MAX_LENGTH, device="cpu").save_pretrained(str(root / "one"))
    return {"one": str(root / "one"), "two": str(_bert(root / "two", 2, seed=12)),
            "electra": str(_electra(root / "electra", seed=13))}


def _sentence(rng, n):
    return " ".join(rng.choice(WORDS[20:], n))


@pytest.fixture(scope="module")
def pairs():
    """40 pairs of 8 queries, documents of 3 to 30 words, shuffled so queries interleave."""
    rng = np.random.default_rng(0)
    queries = [_sentence(rng, int(rng.integers(1, 6))) for _ in range(8)]
    out = [(q, _sentence(rng, int(rng.integers(3, 31)))) for q in queries for _ in range(5)]
    return [out[i] for i in rng.permutation(len(out))]


def _hf_logits(path, pairs, max_length=None):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    enc = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation="only_second",
              max_length=max_length or ST_MAX_LENGTH, return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).logits.numpy()


def _model(path, **kw):
    return CrossEncoderModel(path, precision="fp32", device="cpu", verbose=False, **kw)


# --- scores ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, column", [("one", 0), ("two", 1), ("electra", 0)])
def test_scores_equal_a_transformers_forward_pass(ckpts, pairs, name, column):
    expected = _hf_logits(ckpts[name], pairs)[:, column]
    assert expected.std() > 0.1  # the comparison below tells pairs apart
    scores = _model(ckpts[name]).score(pairs)
    assert scores.dtype == np.float32 and scores.shape == (len(pairs),)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)


def test_label_chooses_the_class_logit(ckpts, pairs):
    np.testing.assert_allclose(_model(ckpts["two"], label=0).score(pairs), _hf_logits(ckpts["two"], pairs)[:, 0],
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, column", [("one", 0), ("two", 1), ("electra", 0)])
def test_scores_equal_sentence_transformers_cross_encoder(ckpts, pairs, name, column):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    st = STCrossEncoder(ckpts[name], activation_fn=torch.nn.Identity(), max_length=ST_MAX_LENGTH, device="cpu")
    expected = np.asarray(st.predict(pairs, batch_size=16, show_progress_bar=False), dtype=np.float32)
    expected = expected if expected.ndim == 1 else expected[:, column]
    np.testing.assert_allclose(_model(ckpts[name]).score(pairs), expected, atol=1e-5, rtol=0)


def test_sigmoid_and_softmax_activations(ckpts, pairs):
    one = _hf_logits(ckpts["one"], pairs)[:, 0].astype(np.float64)
    np.testing.assert_allclose(_model(ckpts["one"], activation="sigmoid").score(pairs), 1 / (1 + np.exp(-one)),
                               atol=1e-6, rtol=0)
    two = _hf_logits(ckpts["two"], pairs).astype(np.float64)
    probs = np.exp(two) / np.exp(two).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_model(ckpts["two"], activation="softmax").score(pairs), probs[:, 1], atol=1e-6, rtol=0)
    np.testing.assert_allclose(_model(ckpts["two"], activation="softmax", label=0).score(pairs), probs[:, 0],
                               atol=1e-6, rtol=0)


def test_batching_keeps_scores_and_order(ckpts, pairs):
    model = _model(ckpts["one"])
    runs = []
    for batch_size in (1, 7, 64):
        model.batch_size = batch_size
        runs.append(model.score(pairs))
    model.batch_size = 32
    np.testing.assert_allclose(runs[1], runs[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(runs[2], runs[0], atol=1e-5, rtol=0)
    one_by_one = np.array([model.score([p])[0] for p in pairs[:10]])
    np.testing.assert_allclose(runs[2][:10], one_by_one, atol=1e-5, rtol=0)


def test_bf16_runs_close_to_fp32(ckpts, pairs):
    exact = _model(ckpts["one"]).score(pairs)
    bf16 = CrossEncoderModel(ckpts["one"], precision="bf16", device="cpu", verbose=False)
    assert bf16.precision == "bf16"
    scores = bf16.score(pairs)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, exact, atol=0.05, rtol=0.02)
    assert not np.array_equal(scores, exact)  # reduced precision did run
    assert bf16.fingerprint == _model(ckpts["one"]).fingerprint


# --- lengths and truncation -------------------------------------------------------------------------------------

def test_max_length_comes_from_the_checkpoint_capped_at_positions(ckpts, caplog):
    assert _model(ckpts["one"]).max_length == ST_MAX_LENGTH      # tokenizer_config, as CrossEncoder 6.x saves it
    assert _model(ckpts["two"]).max_length == 128                # no limit in the files: position embeddings
    assert _model(ckpts["one"], max_length=20).max_length == 20
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        assert _model(ckpts["two"], max_length=500).max_length == 128
    assert "max_length=500" in caplog.text


def test_documents_are_truncated_never_queries(ckpts, monkeypatch, caplog):
    model = _model(ckpts["one"])
    query = "quantum theory of magnetic field measurement in protein cell"
    long_doc = " ".join(WORDS[20:] * 5)
    fed = []
    forward = model._forward
    monkeypatch.setattr(model, "_forward", lambda batch, role: fed.append(batch["input_ids"].clone()) or
                        forward(batch, role))
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        scores = model.score([(query, long_doc), (query, "gene")])
    assert "1 of 2 (query, document) pairs were longer than max_length=48" in caplog.text
    assert len(fed) == 1 and fed[0].shape == (2, ST_MAX_LENGTH)  # one batch, longest pair first
    ids = fed[0][0].tolist()
    q_ids = model.tokenizer(query, add_special_tokens=False)["input_ids"]
    cls, sep = model.tokenizer.cls_token_id, model.tokenizer.sep_token_id
    assert len(ids) == ST_MAX_LENGTH and ids[0] == cls and ids[-1] == sep
    assert ids[1:1 + len(q_ids)] == q_ids and ids[1 + len(q_ids)] == sep  # the whole query, then the document
    d_ids = model.tokenizer(long_doc, add_special_tokens=False)["input_ids"]
    assert ids[2 + len(q_ids):-1] == d_ids[:ST_MAX_LENGTH - 3 - len(q_ids)]
    np.testing.assert_allclose(scores, _hf_logits(ckpts["one"], [(query, long_doc), (query, "gene")])[:, 0],
                               atol=1e-5, rtol=0)
    # a query longer than what is left for its document: truncating the longer side first would cut the query
    query = doc = " ".join((WORDS[20:] * 2)[:30])
    fed.clear()
    model.score([(query, doc)])
    q_ids = model.tokenizer(query, add_special_tokens=False)["input_ids"]
    assert len(q_ids) == 30 and fed[0][0, 1:31].tolist() == q_ids and fed[0].shape == (1, ST_MAX_LENGTH)


def test_a_query_leaving_no_room_for_the_document_is_an_error(ckpts):
    model = _model(ckpts["one"], max_length=20)
    long_query = " ".join(["electron"] * 17)       # 17 tokens + 3 special tokens = 20
    with pytest.raises(ValueError, match=r"the query 'electron electron.*\.\.\.' has 17 tokens.*max_length=20"):
        model.score([("gene", "cell"), (long_query, "cell")])
    assert model.score([(" ".join(["electron"] * 16), "cell study")]).shape == (1,)


# --- loading and arguments ----------------------------------------------------------------------------------------

def test_a_checkpoint_without_a_trained_head_is_an_error(tiny_plain_model, tmp_path):
    with pytest.raises(OSError, match=r"tiny_plain.*missing.*classifier"):
        _model(tiny_plain_model)
    with pytest.raises(OSError, match="nowhere"):
        _model(str(tmp_path / "nowhere"))


def test_argument_errors(ckpts):
    with pytest.raises(ValueError, match="activation"):
        _model(ckpts["one"], activation="tanh")
    with pytest.raises(ValueError, match="softmax is always 1"):
        _model(ckpts["one"], activation="softmax")
    with pytest.raises(ValueError, match=r"label must be a class index in \[0, 2\)"):
        _model(ckpts["two"], label=2)
    with pytest.raises(ValueError, match="position 1"):
        _model(ckpts["one"]).score([("gene", "cell"), ("gene", "")])


def test_settings_and_repr(ckpts):
    model = _model(ckpts["two"], activation="sigmoid")
    settings = model.settings()
    assert settings == {"model": ckpts["two"], "fingerprint": model.fingerprint, "max_length": 128,
                        "activation": "sigmoid", "label": 1}
    assert len(model.fingerprint) == 16 and model.fingerprint != _model(ckpts["one"]).fingerprint
    assert repr(model) == (f"CrossEncoderModel({ckpts['two']!r}, activation='sigmoid', label=1, max_length=128, "
                           "precision='fp32')")


# --- the stage ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stage(ckpts):
    return CrossEncoder(ckpts["one"], precision="fp32", device="cpu", verbose=False)


def _frame(pairs):
    qids = {q: f"q{i}" for i, q in enumerate(dict.fromkeys(p[0] for p in pairs))}
    return pd.DataFrame({"qid": [qids[q] for q, _ in pairs], "query": [q for q, _ in pairs],
                         "docno": [f"d{i}" for i in range(len(pairs))], "text": [t for _, t in pairs],
                         "extra": [i * 10 for i in range(len(pairs))], "score": 0.0, "rank": 0})


def test_stage_ranks_each_query_by_score_and_carries_columns(stage, pairs):
    inp = _frame(pairs)
    out = stage.transform(inp)
    assert list(out.columns) == ["qid", "query", "docno", "text", "extra", "score", "rank"]
    assert len(out) == len(inp) and set(out["docno"]) == set(inp["docno"])
    expected = dict(zip(inp["docno"], stage.model.score(pairs).astype(np.float64)))
    np.testing.assert_allclose(out["score"], [expected[d] for d in out["docno"]], atol=1e-6, rtol=0)
    assert (out["extra"] == out["docno"].str[1:].astype(int) * 10).all()
    assert list(pd.unique(out["qid"])) == list(pd.unique(inp["qid"]))
    for _, group in out.groupby("qid", sort=False):
        assert group["rank"].tolist() == list(range(len(group)))
        assert (np.diff(group["score"].to_numpy()) <= 0).all()
        assert group["score"].nunique() > 1


def test_stage_scores_all_queries_in_one_call(stage, pairs, monkeypatch):
    calls = []
    score = stage.model.score
    monkeypatch.setattr(stage.model, "score", lambda p, **kw: calls.append(len(p)) or score(p, **kw))
    stage.transform(_frame(pairs))
    assert calls == [len(pairs)]


def test_stage_empty_input_keeps_columns(stage):
    out = stage.transform(pd.DataFrame(columns=["qid", "query", "docno", "text", "extra"]))
    assert list(out.columns) == ["qid", "query", "docno", "text", "extra", "score", "rank"] and len(out) == 0


def test_stage_errors_name_the_fix_and_the_row(stage, pairs):
    inp = _frame(pairs[:4])
    with pytest.raises(ValueError, match=r"\['text'\].*collection\.text_loader\(\).*pt\.text\.get_text"):
        stage.transform(inp.drop(columns="text"))
    bad = inp.copy()
    bad.loc[2, "text"] = " "
    with pytest.raises(ValueError, match=rf"qid='{bad.qid[2]}', docno='d2' is empty"):
        stage.transform(bad)
    bad = inp.copy()
    bad.loc[1, "text"] = None
    with pytest.raises(ValueError, match=r"docno=.d1. is a float \(nan\), not a string"):
        stage.transform(bad)
    bad = inp.copy()
    bad.loc[3, "query"] = ""
    with pytest.raises(ValueError, match=rf"'query' of qid='{bad.qid[3]}' is empty"):
        stage.transform(bad)


def test_stage_takes_a_loaded_model_and_has_a_repr(ckpts, stage):
    same = CrossEncoder(stage.model)
    assert same.model is stage.model and same == stage
    assert repr(same) == f"CrossEncoder({ckpts['one']!r})"
    with pytest.raises(TypeError, match="already loaded"):
        CrossEncoder(stage.model, activation="sigmoid")
    with pytest.raises(TypeError, match="model must be"):
        CrossEncoder(42)
