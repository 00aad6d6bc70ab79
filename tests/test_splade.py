"""Learned sparse encoders (SpladeModel, ptd.Splade) on tiny random checkpoints: every head equals its formula
computed here from a direct transformers forward, pruning and quantisation are exact, batching and padding change
nothing, and the stage scores, de-duplicates and reports bad rows. Plus the real SPLADE-tiny when installed."""
from __future__ import annotations

import functools
import logging
import os
import shutil
import string

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import WORDS
from pyterrier_dense.models.splade_model import SpladeModel, TermWeights
from pyterrier_dense.stages.columns import ENCODER_ATTR, ENCODERS_ATTR
import pyterrier_dense as ptd
from pyterrier_dense.stages.splade import Splade

SPECIAL = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
TEXTS = ["the magnetic field of an electron", "protein expression in cancer cells", "quantum theory of light",
         "temperature and pressure of a gas", "gene study results", "energy of a wave , measured",
         "the electron [MASK] field ω", "patients in the study", "data model method", "cell protein gene"]


def _write_tokenizer(path) -> int:
    """The tiny vocabulary of conftest's ``_write_tiny_bert``: specials, characters, word pieces, punctuation,
    WORDS. Returns its size."""
    from transformers import BertTokenizerFast
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits) \
        + [f"##{c}" for c in string.ascii_lowercase + string.digits] + list(string.punctuation) + WORDS
    vocab = list(dict.fromkeys(vocab))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    return len(vocab)


def _config(vocab_size: int):
    from transformers import BertConfig
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory) -> str:
    """A tiny BertForMaskedLM (random, seeded) in Hugging Face layout."""
    from transformers import BertForMaskedLM
    path = tmp_path_factory.mktemp("tiny_mlm")
    n = _write_tokenizer(path)
    torch.manual_seed(3)
    BertForMaskedLM(_config(n)).eval().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """A tiny BertModel (no MLM head, no sparse_linear.pt)."""
    from transformers import BertModel
    path = tmp_path_factory.mktemp("tiny_enc")
    n = _write_tokenizer(path)
    torch.manual_seed(4)
    BertModel(_config(n)).eval().save_pretrained(path)
    return str(path)


def lexical_checkpoint(encoder: str, tmp_path, weight, bias: float) -> str:
    """A copy of ``encoder`` with BGE-M3's ``sparse_linear.pt`` holding ``weight`` (hidden,) and ``bias``."""
    path = tmp_path / f"lexical_{len(os.listdir(tmp_path))}"
    shutil.copytree(encoder, path)
    torch.save({"weight": torch.tensor(np.asarray(weight), dtype=torch.float32)[None, :],
                "bias": torch.tensor([bias], dtype=torch.float32)}, path / "sparse_linear.pt")
    return str(path)


@pytest.fixture(scope="module")
def splade(tiny_mlm) -> Splade:
    return Splade(tiny_mlm, precision="fp32", verbose=False, batch_size=4)


# --- the formulas, from a direct transformers forward (one text at a time: no padding at all) ---------------------

@functools.lru_cache(maxsize=None)
def _direct(path: str, mlm: bool):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer
    model = (AutoModelForMaskedLM if mlm else AutoModel).from_pretrained(path, dtype=torch.float32).eval()
    return AutoTokenizer.from_pretrained(path), model


def _run(path: str, text: str, length: int, mlm: bool):
    tok, model = _direct(path, mlm)
    enc = tok(text, truncation=True, max_length=length, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    return tok, enc["input_ids"][0].tolist(), (out.logits[0] if mlm else out.last_hidden_state[0])


def hand_splade(path: str, text: str, length: int = 256) -> dict:
    tok, _, logits = _run(path, text, length, True)
    w = torch.log1p(torch.relu(logits)).max(dim=0).values
    special = set(tok.all_special_ids)
    return {tok.convert_ids_to_tokens(t): float(w[t]) for t in range(len(w)) if w[t] > 0 and t not in special}


def hand_terms(path: str, text: str, length: int = 256) -> dict:
    tok, ids, logits = _run(path, text, length, True)
    out = {}
    for p, t in enumerate(ids):
        w = float(torch.log1p(torch.relu(logits[p, t])))
        if t not in tok.all_special_ids and w > 0:
            term = tok.convert_ids_to_tokens(t)
            out[term] = max(out.get(term, 0.0), w)
    return out


def hand_lexical(path: str, text: str, weight, bias: float, length: int = 256) -> dict:
    tok, ids, states = _run(path, text, length, False)
    out = {}
    for p, t in enumerate(ids):
        w = max(0.0, float(states[p] @ torch.tensor(np.asarray(weight), dtype=torch.float32)) + bias)
        if t not in tok.all_special_ids and w > 0:
            term = tok.convert_ids_to_tokens(t)
            out[term] = max(out.get(term, 0.0), w)
    return out


def assert_same(got: dict, want: dict, tol: float = 1e-5):
    assert sorted(got) == sorted(want)
    for t, w in want.items():
        assert got[t] == pytest.approx(w, abs=tol), t
    assert all(type(w) is float and w > 0 for w in got.values())


# --- heads -----------------------------------------------------------------------------------------------------------

def test_splade_head_equals_the_formula_and_expands(tiny_mlm):
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False, batch_size=4)
    assert model.head == "splade"   # the default for a *ForMaskedLM checkpoint
    got = model.encode(TEXTS)
    for text, toks in zip(TEXTS, got):
        assert_same(toks, hand_splade(tiny_mlm, text))
    text_terms = set(model.tokenizer.tokenize(TEXTS[0]))
    assert set(got[0]) - text_terms   # expansion: terms the text does not hold
    assert list(got[0].values()) == sorted(got[0].values(), reverse=True)   # heaviest first


def test_terms_head_weights_only_the_texts_tokens(tiny_mlm):
    model = SpladeModel(tiny_mlm, head="terms", precision="fp32", verbose=False, batch_size=3)
    got = model.encode(TEXTS)
    for text, toks in zip(TEXTS, got):
        assert_same(toks, hand_terms(tiny_mlm, text))
        assert set(toks) <= set(model.tokenizer.tokenize(text)) - SPECIAL


def test_lexical_head_with_a_hand_set_linear_layer(tiny_encoder, tmp_path):
    weight = np.zeros(32, np.float32)
    weight[0], weight[5] = 2.0, -1.0
    path = lexical_checkpoint(tiny_encoder, tmp_path, weight, 0.25)
    model = SpladeModel(path, precision="fp32", verbose=False, batch_size=4)
    assert model.head == "lexical"   # the default for a checkpoint without an MLM head
    assert isinstance(model.lexical_head, torch.nn.Module)
    assert model.lexical_head.weight.detach().numpy()[0].tolist() == weight.tolist()
    got = model.encode(TEXTS)
    for text, toks in zip(TEXTS, got):
        assert_same(toks, hand_lexical(path, text, weight, 0.25))
        assert set(toks) <= set(model.tokenizer.tokenize(text)) - SPECIAL
    assert any(len(t) < len(set(model.tokenizer.tokenize(x)) - SPECIAL) for t, x in zip(got, TEXTS))   # ReLU zeros


def test_lexical_head_constant_weights_and_ties_broken_by_token_id(tiny_encoder, tmp_path):
    path = lexical_checkpoint(tiny_encoder, tmp_path, np.zeros(32), 0.5)
    text = "the electron field gene , the gene"
    full = SpladeModel(path, precision="fp32", verbose=False).encode([text])[0]
    tokens = set(SpladeModel(path, precision="fp32", verbose=False).tokenizer.tokenize(text))
    assert full == {t: 0.5 for t in tokens}
    model = SpladeModel(path, precision="fp32", verbose=False, doc_top_k=3)
    ids = sorted(model.tokenizer.convert_tokens_to_ids(sorted(tokens)))[:3]
    assert model.encode([text])[0] == {t: 0.5 for t in model.tokenizer.convert_ids_to_tokens(ids)}
    assert model.encode([text] * 3) == [model.encode([text])[0]] * 3   # deterministic


def test_lexical_head_without_sparse_linear_is_untrained_seeded_and_says_so(tiny_encoder, caplog):
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        a = SpladeModel(tiny_encoder, precision="fp32", verbose=False)
    assert "sparse_linear.pt" in caplog.text and "untrained" in caplog.text
    b = SpladeModel(tiny_encoder, precision="fp32", verbose=False)
    assert a.fingerprint == b.fingerprint and a.encode(TEXTS[:3]) == b.encode(TEXTS[:3])
    with torch.no_grad():   # trained in place: the fingerprint follows once refreshed
        a.lexical_head.bias.fill_(5.0)
    assert a.refresh_fingerprint() != b.fingerprint
    # the head is trainable: dense_weights is differentiable through it
    batch = {k: torch.tensor(v) for k, v in a.tokenizer([TEXTS[0]], return_token_type_ids=False).items()}
    a.dense_weights(batch).sum().backward()
    assert a.lexical_head.weight.grad is not None and a.lexical_head.weight.grad.abs().sum() > 0


def test_mlm_heads_need_an_mlm_checkpoint(tiny_encoder):
    with pytest.raises(OSError, match="head='lexical'"):
        SpladeModel(tiny_encoder, head="splade", verbose=False)
    with pytest.raises(ValueError, match="head must be one of"):
        SpladeModel(tiny_encoder, head="dense", verbose=False)


@pytest.mark.parametrize("head", ["splade", "terms", "lexical"])
def test_special_tokens_never_get_a_weight(head, tiny_mlm, tiny_encoder, tmp_path):
    path = tiny_mlm if head != "lexical" else lexical_checkpoint(tiny_encoder, tmp_path, np.zeros(32), 1.0)
    model = SpladeModel(path, head=head, precision="fp32", verbose=False)
    text = "[MASK] electron ω field [UNK] [SEP]"
    ids = model.tokenizer(text)["input_ids"]
    assert {model.tokenizer.mask_token_id, model.tokenizer.unk_token_id} <= set(ids)   # the test means something
    for toks in model.encode([text, "ω ω", TEXTS[0]]):
        assert not set(toks) & SPECIAL
    if head == "lexical":   # every non-special token weighs 1.0 here, so only the specials are missing
        assert model.encode([text])[0] == {"electron": 1.0, "field": 1.0}


# --- padding, batching, lengths ----------------------------------------------------------------------------------

def test_padding_does_not_change_weights(tiny_mlm):
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False, batch_size=64)
    long = " ".join(WORDS[i % len(WORDS)] for i in range(90))
    alone = model.encode(["gene study"])[0]
    batched = model.encode(["gene study", long])[0]
    assert_same(batched, alone, tol=1e-5)


def test_batching_invariance_and_order(tiny_mlm):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(n))) for n in rng.integers(1, 40, size=20)]
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False)
    want = [hand_splade(tiny_mlm, t) for t in texts]
    for batch_size in (1, 7, 64):
        model.batch_size = batch_size
        got = model.encode(texts)
        for g, w in zip(got, want):
            assert_same(g, w)
        arrays = model.encode_arrays(texts)
        assert all(isinstance(a, TermWeights) and a.ids.dtype == np.int32 and (np.diff(a.ids) > 0).all()
                   for a in arrays)
        assert [model.to_dict(a) for a in arrays] == got


def test_lengths_default_cap_and_truncation(tiny_mlm, caplog):
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False)
    assert (model.query_length, model.doc_length) == (64, 128)   # 256 capped at the 128 positions
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        assert SpladeModel(tiny_mlm, doc_length=500, verbose=False).doc_length == 128
        short = SpladeModel(tiny_mlm, precision="fp32", verbose=False, query_length=5, doc_length=8)
        long = "the magnetic field of an electron in a quantum theory of light"
        doc = short.encode([long, "gene"], role="doc")
        query = short.encode([long], role="query")
    assert "doc_length=500" in caplog.text
    assert "1 of 2 documents were longer than doc_length=8" in caplog.text
    assert "1 of 1 queries were longer than query_length=5" in caplog.text
    assert_same(doc[0], hand_splade(tiny_mlm, long, 8))
    assert_same(query[0], hand_splade(tiny_mlm, long, 5))
    with pytest.raises(ValueError, match="query_length must be an int >= 3"):
        SpladeModel(tiny_mlm, query_length=2, verbose=False)


@pytest.mark.parametrize("head", ["splade", "terms"])
def test_mlm_head_in_row_chunks_equals_the_whole_forward(head, tiny_mlm, monkeypatch):
    """The MLM head scores a few rows at a time (bounded logits); the model's own full forward gives the same."""
    import pyterrier_dense.models.splade_model as sm
    model = SpladeModel(tiny_mlm, head=head, precision="fp32", verbose=False, batch_size=8)
    assert model._mlm_head is not None
    hand = hand_splade if head == "splade" else hand_terms
    monkeypatch.setattr(sm, "HEAD_POSITIONS", 10)   # about one row per head call
    chunked = model.encode(TEXTS)
    model._mlm_head = None                          # architectures without a single head module
    whole = model.encode(TEXTS)
    for text, a, b in zip(TEXTS, chunked, whole):
        assert_same(a, hand(tiny_mlm, text))
        assert_same(b, a)


# --- pruning and quantisation ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full(tiny_mlm):
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False)
    return {role: model.encode(TEXTS, role=role) for role in ("query", "doc")}


def _top(toks: dict, k: int) -> dict:
    return dict(sorted(toks.items(), key=lambda kv: -kv[1])[:k])


def test_top_k_per_role(tiny_mlm, full):
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False, query_top_k=3, doc_top_k=7)
    assert model.encode(TEXTS, role="query") == [_top(t, 3) for t in full["query"]]
    assert model.encode(TEXTS, role="doc") == [_top(t, 7) for t in full["doc"]]
    assert all(len(t) == 7 for t in model.encode(TEXTS, role="doc"))


def test_min_weight_drops_below(tiny_mlm, full):
    m = sorted(w for t in full["doc"] for w in t.values())[200]   # a weight itself: kept, as "below" is strict
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False, min_weight=m)
    want = [{t: w for t, w in toks.items() if w >= m} for toks in full["doc"]]
    assert model.encode(TEXTS) == want
    assert sum(map(len, want)) < sum(map(len, full["doc"]))


def test_scale_quantises_to_ints_and_drops_zeros(tiny_mlm, full):
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False, scale=10)
    want = [{t: round(w * 10) for t, w in toks.items() if round(w * 10) > 0} for toks in full["doc"]]
    got = model.encode(TEXTS)
    assert got == want
    assert all(type(w) is int and w >= 1 for t in got for w in t.values())
    assert sum(map(len, want)) < sum(map(len, full["doc"]))   # some rounded to 0 and were dropped
    arrays = model.encode_arrays(TEXTS)
    assert arrays[0].weights.dtype == np.int32


def test_top_k_then_scale(tiny_mlm, full):
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False, doc_top_k=5, scale=100)
    want = [{t: round(w * 100) for t, w in _top(toks, 5).items() if round(w * 100) > 0} for toks in full["doc"]]
    assert model.encode(TEXTS) == want


def test_bad_options(tiny_mlm):
    for kwargs in ({"doc_top_k": 0}, {"query_top_k": 2.5}, {"scale": True}, {"scale": 0}, {"min_weight": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            SpladeModel(tiny_mlm, verbose=False, **kwargs)


def test_settings_and_repr(tiny_mlm):
    model = SpladeModel(tiny_mlm, precision="fp32", verbose=False, doc_top_k=9, scale=100, min_weight=0.1)
    s = model.settings()
    assert {"model", "fingerprint", "head", "query_length", "doc_length", "query_top_k", "doc_top_k", "min_weight",
            "scale"} <= set(s)
    assert (s["model"], s["head"], s["doc_top_k"], s["query_top_k"], s["scale"], s["min_weight"]) == \
        (tiny_mlm, "splade", 9, None, 100, 0.1)
    assert s["fingerprint"] == SpladeModel(tiny_mlm, head="terms", verbose=False).fingerprint
    assert repr(model) == f"SpladeModel({tiny_mlm!r}, head='splade', precision='fp32')"


# --- the stage -------------------------------------------------------------------------------------------------------

def test_roles_and_stamped_settings(splade):
    queries = pd.DataFrame({"qid": ["q1", "q2"], "query": ["electron field", "cancer gene"]})
    docs = pd.DataFrame({"docno": ["d0", "d1"], "text": TEXTS[:2]})
    q = splade(queries)                      # auto role: query column only
    assert list(q.columns) == ["qid", "query", "query_toks"]
    assert q.query_toks.tolist() == splade.model.encode(queries["query"].tolist(), role="query")
    assert q.attrs[ENCODER_ATTR] == splade.model.settings()
    d = splade(docs)
    assert list(d.columns) == ["docno", "text", "toks"] and d.toks.tolist() == splade.model.encode(TEXTS[:2])
    assert d.attrs[ENCODER_ATTR] == splade.model.settings()
    both = queries.merge(docs, how="cross")
    assert "toks" in splade.doc_encoder()(both) and "query_toks" in splade.query_encoder()(both)
    assert repr(splade.query_encoder()).endswith(".query_encoder()") and "head='splade'" in repr(splade)
    records = splade.doc_encoder().transform_iter([{"docno": "d0", "text": TEXTS[0], "extra": 1}])
    alone = records[0]["toks"]               # a batch of one has no padding: weights agree to float32 rounding
    assert alone.keys() == d.toks[0].keys() and records[0]["extra"] == 1
    assert alone == pytest.approx(d.toks[0], rel=1e-5, abs=1e-7)
    assert records[0][ENCODER_ATTR] == splade.model.settings()


def test_scorer_is_the_dot_product_of_the_dicts(splade):
    queries = pd.DataFrame({"qid": ["q1", "q2"], "query": ["electron field", "cancer protein gene"]})
    docs = pd.DataFrame({"docno": [f"d{i}" for i in range(6)], "text": TEXTS[:6]})
    cands = queries.merge(docs, how="cross").assign(extra=lambda f: f.docno + "!")
    out = splade.scorer()(cands)
    qt = dict(zip(queries.qid, splade.query_encoder()(queries).query_toks))
    dt = dict(zip(docs.docno, splade.doc_encoder()(docs).toks))
    for row in out.itertuples():
        want = sum(w * dt[row.docno].get(t, 0.0) for t, w in qt[row.qid].items())
        assert row.score == pytest.approx(want, rel=1e-6, abs=1e-9)
        assert row.extra == row.docno + "!"
    assert out.qid.tolist() == ["q1"] * 6 + ["q2"] * 6
    for qid, group in out.groupby("qid"):
        assert group["rank"].tolist() == list(range(6)) and (np.diff(group["score"]) <= 0).all()
    assert out.score.nunique() > 2
    assert splade(cands).equals(out)   # auto role with query + text: scores


def test_queries_are_deduplicated_and_order_kept(splade, monkeypatch):
    seen = []
    encode = splade.model.encode_arrays
    def spy(texts, role="doc", **kw):
        seen.append(list(texts))
        return encode(texts, role, **kw)
    monkeypatch.setattr(splade.model, "encode_arrays", spy)
    queries = pd.DataFrame({"qid": ["q3", "q1", "q2", "q4"], "query": ["light wave", "gene", "light wave", "gene"]})
    out = splade.query_encoder()(queries)
    assert seen == [["light wave", "gene"]]
    assert out.qid.tolist() == ["q3", "q1", "q2", "q4"]
    assert out.query_toks[0] == out.query_toks[2] and out.query_toks[1] == out.query_toks[3]
    assert out.query_toks[0] != out.query_toks[1]


def test_errors_name_the_row(splade, tiny_mlm):
    with pytest.raises(ValueError, match="docno='d7'.*empty"):
        splade.doc_encoder()(pd.DataFrame({"docno": ["d6", "d7"], "text": ["gene", "  "]}))
    with pytest.raises(ValueError, match="docno='d8'.*not a string"):
        splade.doc_encoder().transform_iter([{"docno": "d8", "text": None}])
    with pytest.raises(ValueError, match="qid='q2'.*empty"):
        splade.query_encoder()(pd.DataFrame({"qid": ["q1", "q2"], "query": ["gene", ""]}))
    terms = Splade(tiny_mlm, head="terms", verbose=False)   # (SPLADE expands even [MASK] into terms)
    with pytest.raises(ValueError, match=r"qid='q9'.*no term with a weight"):
        terms.query_encoder()(pd.DataFrame({"qid": ["q1", "q9"], "query": [TEXTS[1], "[MASK] [SEP]"]}))
    assert terms.model.encode([TEXTS[1]], role="query")[0]   # so q1 was fine
    pruned = Splade(tiny_mlm, verbose=False, min_weight=100.0)
    with pytest.raises(ValueError, match=r"qid='q1'.*min_weight=100.0"):
        pruned.scorer()(pd.DataFrame({"qid": ["q1"], "query": ["gene"], "docno": ["d0"], "text": ["gene"]}))
    with pytest.raises(ValueError, match=r"\['text'\]"):
        splade.doc_encoder()(pd.DataFrame({"docno": ["d0"]}))
    with pytest.raises(ValueError, match="text_loader"):
        splade.scorer()(pd.DataFrame({"qid": ["q1"], "query": ["gene"], "docno": ["d0"]}))
    with pytest.raises(ValueError, match="needs a 'query' column"):
        splade(pd.DataFrame({"docno": ["d0"]}))
    with pytest.raises(TypeError, match="SpladeModel"):
        Splade(3)


def test_empty_frames_get_the_right_columns(splade):
    q = splade.query_encoder()(pd.DataFrame({"qid": [], "query": []}))
    assert list(q.columns) == ["qid", "query", "query_toks"] and len(q) == 0
    d = splade.doc_encoder()(pd.DataFrame({"docno": [], "text": []}))
    assert list(d.columns) == ["docno", "text", "toks"] and len(d) == 0
    s = splade.scorer()(pd.DataFrame({"qid": [], "query": [], "docno": [], "text": []}))
    assert list(s.columns) == ["qid", "query", "docno", "text", "score", "rank"] and len(s) == 0
    assert splade.doc_encoder().transform_iter([]) == []


# --- the real SPLADE-tiny ----------------------------------------------------------------------------------------

def test_real_splade_tiny_equals_the_formula(real_splade):
    model = SpladeModel(real_splade, precision="fp32", verbose=False)
    abstract = ("Alterations of the architecture of cerebral white matter in the developing human brain can affect "
                "cortical development and result in functional disabilities. A line scan diffusion-weighted "
                "magnetic resonance imaging sequence with diffusion tensor analysis was applied to measure the "
                "apparent diffusion coefficient in preterm and full-term infants.")
    texts = ["the gene expression in cancer cells", abstract]
    got = model.encode(texts)
    for text, toks in zip(texts, got):
        assert_same(toks, hand_splade(real_splade, text))
        assert set(toks) - set(model.tokenizer.tokenize(text))   # expansion
    assert "tumor" in got[0] or "genetic" in got[0]   # a trained model expands with related terms
    assert 100 <= len(got[1]) <= 1000
    terms = SpladeModel(real_splade, head="terms", precision="fp32", verbose=False).encode(texts)
    for text, toks in zip(texts, terms):
        assert_same(toks, hand_terms(real_splade, text))


def test_dense_and_sparse_columns_in_one_frame_each_keep_their_encoder(splade, tiny_st_model, tmp_path):
    """A hybrid pipeline carries two encoders' columns: each index checks the encoder of the column it reads."""
    enc = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    docs = pd.DataFrame({"docno": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS})
    dense = ptd.DenseIndex(tmp_path / "x.dense")
    (enc >> dense.indexer()).index(docs.to_dict(orient="records"))
    sparse = ptd.SparseIndex(tmp_path / "x.sparse")
    (splade.doc_encoder() >> sparse.indexer()).index(docs.to_dict(orient="records"))
    queries = pd.DataFrame({"qid": ["q1"], "query": ["electron field"]})
    both = (enc.query_encoder() >> splade.query_encoder())(queries)
    assert both.attrs[ENCODERS_ATTR] == {"query_vec": enc.model.settings(),
                                         "query_toks": splade.model.settings()}
    assert len(dense.retriever(num_results=3)(both)) == 3 and len(sparse.retriever(num_results=3)(both)) > 0
    qdrant = pytest.importorskip("qdrant_client") and ptd.QdrantIndex(tmp_path / "q", "hybrid")
    (enc >> splade.doc_encoder() >> qdrant.indexer(representation=("doc_vec", "toks"))).index(
        docs.to_dict(orient="records"))
    assert qdrant.representations == {"doc_vec": enc.model.settings(), "toks": splade.model.settings()}
    fused = qdrant.retriever(num_results=5)(both)
    assert len(fused) == 5 and fused.score.is_monotonic_decreasing
