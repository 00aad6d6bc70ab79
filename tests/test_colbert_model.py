"""models/colbert_model.py: token vectors of the Stanford ColBERT and PyLate layouts checked against a plain
transformers BertModel + projection run one text at a time under the layout rules written out here; zero-shot
vectors, query augmentation, punctuation skiplists, whole-word and stopword pruning, settings, truncation counts and
loading errors."""
import json
import logging
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
import torch

from pyterrier_dense.models import ColBERTModel, TokenVectors

QUERIES = ["gene", "the magnetic field of an electron, in quantum theory!", "protein cells?", "light wave energy"]
DOCS = ["a cell.", "the magnetic field of electrons: measurement results, study data and energy of the wave",
        "protein expression in cancer cells", "quantum theory of light (waves)", "gene"]  # not in length order


def _model(path, **kwargs):
    model = ColBERTModel(path, batch_size=2, precision="fp32", verbose=False, **kwargs)
    model.chunk_size = 3  # several chunks and several batches per call
    return model


@pytest.fixture(scope="module")
def layouts(tiny_colbert_ir_model, tiny_pylate_model):
    return {"colbert": tiny_colbert_ir_model, "pylate": tiny_pylate_model}


# --- the reference: one text at a time, every rule spelled out ---------------------------------------------------

class Reference:
    """A plain BertModel and projection read straight from the checkpoint's files, with the layout's marker."""

    def __init__(self, path, layout, attend_to_expansion=False):
        from safetensors.torch import load_file
        from transformers import BertConfig, BertModel, BertTokenizerFast
        path = Path(path)
        self.tok = BertTokenizerFast.from_pretrained(path)
        state = load_file(path / "model.safetensors")
        if layout == "colbert":  # bert.* + linear.weight in one file, no bias; markers [unused0]/[unused1]
            self.weight, self.bias = state.pop("linear.weight"), None
            state = {k[len("bert."):]: v for k, v in state.items()}
            markers = ("[unused0]", "[unused1]")
        else:  # transformer at the root, projection in 1_Dense with a bias; markers are the added prefix tokens
            dense = load_file(path / "1_Dense" / "model.safetensors")
            self.weight, self.bias = dense["linear.weight"], dense["linear.bias"]
            markers = ("[Q] ", "[D] ")
        self.bert = BertModel(BertConfig.from_pretrained(path)).eval()
        self.bert.load_state_dict(state, strict=True)
        self.marker = dict(zip(("query", "doc"), self.tok.convert_tokens_to_ids(list(markers))))
        self.punctuation = set(self.tok.convert_tokens_to_ids(list(string.punctuation)))
        self.attend_to_expansion = attend_to_expansion

    def ids_and_mask(self, text, role, length, augment=True):
        """[CLS] marker pieces [SEP], pieces cut so that the whole is at most ``length``; queries then padded to
        ``length`` with [MASK], not attended to."""
        t = self.tok
        pieces = t(text, add_special_tokens=False)["input_ids"][:length - 3]
        ids = [t.cls_token_id, self.marker[role]] + pieces + [t.sep_token_id]
        mask = [1] * len(ids)
        if role == "query" and augment:
            pad = length - len(ids)
            ids, mask = ids + [t.mask_token_id] * pad, mask + [int(self.attend_to_expansion)] * pad
        return ids, mask

    def encode(self, text, role, length, augment=True):
        ids, mask = self.ids_and_mask(text, role, length, augment)
        with torch.no_grad():
            hidden = self.bert(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask])).last_hidden_state[0]
            vecs = hidden @ self.weight.T + (0 if self.bias is None else self.bias)
            vecs = vecs / vecs.norm(dim=-1, keepdim=True)
        keep = [True] * len(ids) if role == "query" else [i not in self.punctuation for i in ids]  # docs: no punctuation
        return vecs[keep].numpy(), np.array(ids)[keep]


def _assert_same(got, want):
    assert isinstance(got, TokenVectors) and got.embs.dtype == np.float32 and got.ids.dtype == np.int32
    assert got.ids.tolist() == want[1].tolist()
    assert np.abs(got.embs - want[0]).max() < 1e-5


@pytest.mark.parametrize("layout", ["colbert", "pylate"])
def test_layout_matches_reference_one_text_at_a_time(layouts, layout):
    model = _model(layouts[layout])
    ref = Reference(layouts[layout], layout)
    assert (model.layout, model.dim, model.query_length, model.doc_length) == (layout, 16, 12, 24)
    for role, texts, length in (("query", QUERIES, 12), ("doc", DOCS, 24)):
        got = model.encode(texts, role=role)
        assert len(got) == len(texts)
        for g, text in zip(got, texts):
            _assert_same(g, ref.encode(text, role, length))


@pytest.mark.parametrize("layout", ["colbert", "pylate"])
def test_query_augmentation(layouts, layout):
    model, ref = _model(layouts[layout]), Reference(layouts[layout], layout)
    got = model.encode(QUERIES, role="query")
    assert [len(g.ids) for g in got] == [12] * len(QUERIES)
    assert model.token_strings(got[0].ids)[-1] == "[MASK]"
    plain = _model(layouts[layout], query_augmentation=False)
    assert plain.settings()["query_augmentation"] is False
    for g, text in zip(plain.encode(QUERIES, role="query"), QUERIES):
        want = ref.encode(text, "query", 12, augment=False)
        assert "[MASK]" not in plain.token_strings(g.ids)
        _assert_same(g, want)


def test_expansion_attended_when_the_checkpoint_says_so(tiny_colbert_ir_model, tmp_path):
    path = shutil.copytree(tiny_colbert_ir_model, tmp_path / "attending")
    meta = json.loads((path / "artifact.metadata").read_text())
    (path / "artifact.metadata").write_text(json.dumps({**meta, "attend_to_mask_tokens": True}))
    model, ref = _model(str(path)), Reference(path, "colbert", attend_to_expansion=True)
    assert model.settings()["attend_to_expansion"] is True
    for g, text in zip(model.encode(QUERIES, role="query"), QUERIES):
        _assert_same(g, ref.encode(text, "query", 12))


@pytest.mark.parametrize("layout", ["colbert", "pylate"])
def test_punctuation_vectors_are_dropped_from_documents_only(layouts, layout):
    model = _model(layouts[layout])
    punctuation = set(model.tokenizer.convert_tokens_to_ids(list(string.punctuation)))
    assert set(model.settings()["skiplist"]) == punctuation
    for d in model.encode(DOCS):
        assert not set(d.ids.tolist()) & punctuation
    assert set(model.encode(QUERIES[1:2], role="query")[0].ids.tolist()) & punctuation  # queries keep theirs


def test_zero_shot_vectors_are_normalised_last_hidden_states(tiny_st_model):
    from transformers import AutoModel, AutoTokenizer
    model = _model(tiny_st_model)
    s = model.settings()
    assert (model.layout, model.dim, model.query_length, model.doc_length) == ("zero_shot", 32, 64, 64)
    assert (s["query_marker"], s["doc_marker"], s["query_augmentation"], s["skiplist"]) == (None, None, False, [])
    tok, bert = AutoTokenizer.from_pretrained(tiny_st_model), AutoModel.from_pretrained(tiny_st_model).eval()
    for role, texts in (("query", QUERIES), ("doc", DOCS)):
        for g, text in zip(model.encode(texts, role=role), texts):
            enc = tok(text, return_tensors="pt")
            assert tok.unk_token_id not in enc["input_ids"][0].tolist()  # the tokenizer knows its words
            with torch.no_grad():
                h = bert(**enc).last_hidden_state[0]
            assert g.ids.tolist() == enc["input_ids"][0].tolist()  # [CLS], [SEP] and punctuation kept
            assert np.abs(g.embs - torch.nn.functional.normalize(h, dim=-1).numpy()).max() < 1e-5


def test_whole_word_averages_sub_words_into_one_vector_per_word(tiny_colbert_ir_model):
    text = "the electrons, fields xyz gene"  # electron ##s | field ##s | x ##y ##z; the comma is punctuation
    full = _model(tiny_colbert_ir_model).encode([text])[0]
    model = _model(tiny_colbert_ir_model, whole_word=True)
    words = model.encode([text, DOCS[1]])[0]
    tokens = model.token_strings(full.ids)
    assert tokens == ["[CLS]", "[unused1]", "the", "electron", "##s", "field", "##s", "x", "##y", "##z", "gene", "[SEP]"]
    groups = [[0], [1], [2], [3, 4], [5, 6], [7, 8, 9], [10], [11]]
    assert len(words.ids) == len(groups) == 3 + 5
    assert words.ids.tolist() == [full.ids[g[0]] for g in groups]
    for row, g in zip(words.embs, groups):
        mean = full.embs[g].mean(0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-6)
    assert model.encode(QUERIES, role="query")[1].ids.tolist() == \
        _model(tiny_colbert_ir_model).encode(QUERIES, role="query")[1].ids.tolist()  # queries are never pruned


def test_drop_stopwords_drops_exactly_stopwords_and_punctuation(tiny_st_model):
    text = "the electron of a field, in quantum theory"
    full = _model(tiny_st_model).encode([text])[0]
    model = _model(tiny_st_model, drop_stopwords=True)
    pruned, all_stop = model.encode([text, "The of and, to!"])
    tokens = model.token_strings(full.ids)
    keep = [t not in {"the", "of", "a", ",", "in"} for t in tokens]
    assert model.token_strings(pruned.ids) == ["[CLS]", "electron", "field", "quantum", "theory", "[SEP]"]
    np.testing.assert_allclose(pruned.embs, full.embs[keep], atol=1e-6)  # batched with another text: ~1e-8 apart
    assert model.token_strings(all_stop.ids) == ["[CLS]", "[SEP]"]  # never empty: the special tokens stay
    query = model.encode([text], role="query")[0]
    assert query.ids.tolist() == _model(tiny_st_model).encode([text], role="query")[0].ids.tolist()


def test_drop_stopwords_and_whole_word_together(tiny_colbert_ir_model):
    model = _model(tiny_colbert_ir_model, whole_word=True, drop_stopwords=True)
    got = model.encode(["the electrons of a field"])[0]
    assert model.token_strings(got.ids) == ["[CLS]", "[unused1]", "electron", "field", "[SEP]"]
    assert np.allclose(np.linalg.norm(got.embs, axis=1), 1, atol=1e-6)


def test_settings_name_every_option_and_fingerprint_follows_weights(tiny_colbert_ir_model, tmp_path):
    base = _model(tiny_colbert_ir_model).settings()
    assert set(base) == {"model", "fingerprint", "dim", "layout", "query_length", "doc_length", "query_marker",
                         "doc_marker", "query_augmentation", "attend_to_expansion", "skiplist", "normalize",
                         "whole_word", "drop_stopwords"}
    assert json.loads(json.dumps(base)) == base
    variants = [dict(whole_word=True), dict(drop_stopwords=True), dict(query_length=16), dict(doc_length=20),
                dict(query_augmentation=False)]
    others = [_model(tiny_colbert_ir_model, **v).settings() for v in variants]
    for v, s in zip(variants, others):
        assert s != base and s["fingerprint"] == base["fingerprint"], v
    copy = shutil.copytree(tiny_colbert_ir_model, tmp_path / "elsewhere")
    moved = _model(str(copy)).settings()
    assert moved["fingerprint"] == base["fingerprint"] and moved["model"] != base["model"]


def test_truncation_counted_once_per_call_with_the_right_limits(tiny_colbert_ir_model, caplog):
    model = _model(tiny_colbert_ir_model)
    exact = " ".join(["gene"] * 21)   # [CLS] [unused1] + 21 + [SEP] = 24 = doc_length: not truncated
    over = " ".join(["gene"] * 22)
    docs = [over, "a cell", exact, over + " cell", "light"]
    queries = ["gene", " ".join(["cell"] * 9), " ".join(["cell"] * 10)]   # 9 words fill query_length=12 exactly
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        got = model.encode(docs)
        q = model.encode(queries, role="query")
    assert [len(g.ids) for g in got] == [24, 5, 24, 24, 4] and [len(x.ids) for x in q] == [12, 12, 12]
    assert model.token_strings(q[2].ids)[-1] == "[SEP]"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("2 of 5 documents were longer than doc_length=24 tokens and were truncated")
    assert messages[1].startswith("1 of 3 queries were longer than query_length=12 tokens and were truncated; "
                                  "raise query_length=")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        for d in docs:
            model.encode([d], report_truncation=False)
        assert not caplog.records
        model.report_truncation("doc")
    assert [r.getMessage()[:44] for r in caplog.records] == ["2 of 5 documents were longer than doc_length"]


@pytest.mark.parametrize("bad", ["", "   \n", None])
def test_empty_text_raises_naming_its_position(tiny_pylate_model, bad):
    with pytest.raises(ValueError, match="position 2"):
        _model(tiny_pylate_model).encode(["gene", "cell", bad])


def test_missing_dense_weights_name_the_file(tiny_pylate_model, tmp_path):
    path = shutil.copytree(tiny_pylate_model, tmp_path / "no_dense")
    (path / "1_Dense" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="1_Dense/model.safetensors"):
        ColBERTModel(str(path))


def test_missing_encoder_or_projection_weights_of_a_colbert_checkpoint(tiny_colbert_ir_model, tmp_path):
    from safetensors.torch import load_file, save_file
    state = load_file(Path(tiny_colbert_ir_model) / "model.safetensors")
    no_encoder = shutil.copytree(tiny_colbert_ir_model, tmp_path / "no_encoder")
    save_file({k: v for k, v in state.items() if ".layer.1." not in k}, no_encoder / "model.safetensors")
    with pytest.raises(OSError, match="missing"):
        ColBERTModel(str(no_encoder))
    no_linear = shutil.copytree(tiny_colbert_ir_model, tmp_path / "no_linear")
    save_file({k: v for k, v in state.items() if k != "linear.weight"}, no_linear / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors .*lacks \['linear.weight'\]"):
        ColBERTModel(str(no_linear))


def test_lengths_are_checked(tiny_colbert_ir_model):
    with pytest.raises(ValueError, match="query_length must be an int >= 4"):
        ColBERTModel(tiny_colbert_ir_model, query_length=3)
