"""models/encoder_base.py: one encode loop serves every family. Toy token-vector (ColBERT-like), sparse
(SPLADE-like) and pair (cross-encoder-like) models over the tiny BERT fixture are checked against a plain
transformers forward of one input at a time: order restored after length sorting, truncation counted, padding
(token_type_ids included) correct."""
import logging

import numpy as np
import pytest
import torch

from pyterrier_dense.models import BiEncoderModel, EncoderModel
from test_models import with_working_tokenizer

TEXTS = ["gene", "the magnetic field of an electron in quantum theory", "a cell", "protein expression in cancer",
         "light wave energy of the electron field"]  # not in length order
PAIRS = [("electron", "the magnetic field of an electron"), ("gene", "a cell"),
         ("protein cancer", "protein expression in cancer cells and patients"), ("light", "wave")]


@pytest.fixture(scope="module")
def tiny_bert(tiny_plain_model, tmp_path_factory):
    """The plain tiny BERT with a tokenizer that knows its whole vocabulary."""
    return with_working_tokenizer(tiny_plain_model, tmp_path_factory.mktemp("tiny_bert") / "model")


class _Toy(EncoderModel):
    """What every toy shares: a tiny BERT, batches of 2, chunks of 3 (so a call spans several chunks)."""
    chunk_size = 3

    def __init__(self, path, max_length=64):
        from transformers import AutoModel, AutoTokenizer
        super().__init__(batch_size=2, device="cpu", precision="fp32", verbose=False)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = max_length


class TokenVectors(_Toy):
    """ColBERT-like: one float32 matrix per text, one row per real token."""

    def _forward(self, batch, role):
        hidden = self.model(**batch).last_hidden_state.float()
        return [h[:n].numpy() for h, n in zip(hidden, batch["attention_mask"].sum(1).tolist())]


def _splade(model, hidden, mask):
    logits = hidden @ model.get_input_embeddings().weight.T  # token states scored against every vocabulary term
    return (torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1)).max(1).values


class SparseTerms(_Toy):
    """SPLADE-like: a {term: weight} dict per text."""

    def _forward(self, batch, role):
        weights = _splade(self.model, self.model(**batch).last_hidden_state.float(), batch["attention_mask"])
        terms = self.tokenizer.convert_ids_to_tokens(list(range(weights.shape[1])))
        return [{terms[i]: float(w[i]) for i in torch.nonzero(w).ravel().tolist()} for w in weights]


class PairScores(_Toy):
    """Cross-encoder-like: (query, text) pairs tokenised together, one float score per pair."""
    pairs = True
    role_names = {"pair": "query-document pairs"}

    def __init__(self, path, max_length=64):
        super().__init__(path, max_length)
        torch.manual_seed(0)
        self.head = torch.nn.Linear(self.model.config.hidden_size, 1)
        self.batches = []

    def _forward(self, batch, role):
        self.batches.append({k: v.clone() for k, v in batch.items()})
        return self.head(self.model(**batch).last_hidden_state[:, 0]).squeeze(-1).float().numpy()

    def _new_output(self, n, role):
        return np.empty(n, dtype=np.float32)

    def score(self, pairs):
        return self._encode_all(pairs, "pair", progress=False, report_truncation=True)


def _one_at_a_time(path, inputs, max_length=64):
    """Token states of each input from its own unpadded forward (pairs tokenised together, with token_type_ids)."""
    from transformers import AutoModel, AutoTokenizer
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        for x in inputs:
            enc = tok(*x, return_tensors="pt", truncation=True, max_length=max_length) if isinstance(x, tuple) else \
                tok(x, return_tensors="pt", truncation=True, max_length=max_length)
            yield model, enc, model(**enc).last_hidden_state


def test_token_vectors_restore_order_across_chunks_and_batches(tiny_bert):
    got = TokenVectors(tiny_bert)._encode_all(TEXTS, "doc", progress=False, report_truncation=True)
    assert isinstance(got, list) and len(got) == len(TEXTS)
    for g, (_, enc, hidden) in zip(got, _one_at_a_time(tiny_bert, TEXTS)):
        assert g.dtype == np.float32 and g.shape == (enc["input_ids"].shape[1], hidden.shape[-1])
        np.testing.assert_allclose(g, hidden[0].numpy(), atol=2e-5)


def test_sparse_terms_restore_order(tiny_bert):
    toy = SparseTerms(tiny_bert)
    got = toy._encode_all(TEXTS, "doc", progress=False, report_truncation=True)
    assert all(isinstance(d, dict) and d for d in got)
    for d, (model, enc, hidden) in zip(got, _one_at_a_time(tiny_bert, TEXTS)):
        want = _splade(model, hidden, enc["attention_mask"])[0].numpy()
        dense = np.zeros_like(want)
        dense[toy.tokenizer.convert_tokens_to_ids(list(d))] = list(d.values())
        np.testing.assert_allclose(dense, want, atol=2e-5)


def test_pair_scores_restore_order_and_pad_token_type_ids(tiny_bert):
    toy = PairScores(tiny_bert)
    got = toy.score(PAIRS)
    want = [toy.head(hidden[:, 0]).item() for _, _, hidden in _one_at_a_time(tiny_bert, PAIRS)]
    assert got.dtype == np.float32 and got.shape == (len(PAIRS),)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert sum(len(b["input_ids"]) for b in toy.batches) == len(PAIRS)
    for batch in toy.batches:
        types, mask = batch["token_type_ids"], batch["attention_mask"]
        assert types.shape == mask.shape == batch["input_ids"].shape
        assert (types[mask == 0] == 0).all() and (batch["input_ids"][mask == 0] == toy.tokenizer.pad_token_id).all()
        assert (types.max(1).values == 1).all()  # every pair's second segment is marked


def test_truncation_is_counted_in_one_warning_across_chunks(tiny_bert, caplog):
    toys = TokenVectors(tiny_bert, max_length=6)
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        got = toys._encode_all(TEXTS, "doc", progress=False, report_truncation=True)
        PairScores(tiny_bert, max_length=8).score(PAIRS)
    assert [len(g) for g in got] == [3, 6, 4, 6, 6]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith("3 of 5 documents were longer than max_length=6 tokens and were truncated; "
                                  "for long documents use passaging")
    assert warnings[1].startswith("2 of 4 query-document pairs were longer than max_length=8")


def test_deferred_truncation_report_sums_calls(tiny_bert, caplog):
    toy = TokenVectors(tiny_bert, max_length=6)
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        for text in TEXTS:
            toy._encode_all([text], "doc", progress=False, report_truncation=False)
        assert not caplog.records
        toy.report_truncation("doc")
        toy.report_truncation("doc")  # nothing left to report
    assert [r.getMessage()[:24] for r in caplog.records] == ["3 of 5 documents were lo"]


@pytest.mark.parametrize("bad", [("q", None), ("q", ""), "just a text", ("q",)])
def test_pair_inputs_are_checked(tiny_bert, bad):
    with pytest.raises(ValueError, match="position 1"):
        PairScores(tiny_bert).score([PAIRS[0], bad])


def test_unknown_role_and_empty_input(tiny_bert):
    toy = TokenVectors(tiny_bert)
    with pytest.raises(ValueError, match="role must be one of"):
        toy._encode_all(TEXTS, "passage", progress=False, report_truncation=True)
    assert toy._encode_all([], "doc", progress=False, report_truncation=True) == []


def test_bi_encoder_is_the_single_vector_family(tiny_bert):
    model = BiEncoderModel(tiny_bert, pooling="cls", precision="fp32", batch_size=2)
    model.chunk_size = 3
    assert isinstance(model, EncoderModel)
    got = model.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), model.dim)
    np.testing.assert_allclose(got, [h[0, 0].numpy() for _, _, h in _one_at_a_time(tiny_bert, TEXTS)], atol=2e-5)
