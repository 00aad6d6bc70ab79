"""Weight-space interpolation of a trained model with its start (WiSE-FT): the blend by hand, tied weights blended
once, a new head kept, ``fit(..., interpolate=)`` equal to fitting then interpolating, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pyterrier_dense as ptd
from pyterrier_dense.training import interpolate
from pyterrier_dense.training.interpolation import blend_into, snapshot

from test_training import FirstDocs, toy_data


def _weights(stage) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in stage.model.doc_model.state_dict().items()}


def test_each_weight_becomes_the_weighted_mean_of_trained_and_start(tiny_st_model, other_tiny_model):
    trained = ptd.BiEncoder(other_tiny_model, precision="fp32", verbose=False)
    start = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    a, b, before = _weights(trained), _weights(start), trained.model.fingerprint
    assert interpolate(trained, start, 0.25) is trained
    blended = _weights(trained)
    for name, value in blended.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.25 * a[name] + 0.75 * b[name], atol=1e-7, rtol=0)
        else:   # (integer buffers such as position ids are not weights)
            assert torch.equal(value, a[name])
    assert trained.model.fingerprint not in (before, start.model.fingerprint)
    texts = ["magnetic field study", "protein cancer cell"]
    assert interpolate(trained, start, 0.0).model.fingerprint == start.model.fingerprint
    np.testing.assert_allclose(trained.model.encode(texts), start.model.encode(texts), atol=1e-6)


def test_tied_weights_are_blended_once():
    class Tied(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.embed = torch.nn.Linear(2, 2, bias=False)
            self.decode = torch.nn.Linear(2, 2, bias=False)
            self.decode.weight = self.embed.weight   # one tensor, two names in the state dict
            torch.nn.init.constant_(self.embed.weight, value)

    class Model:
        def __init__(self, value):
            self.tower, self.refreshed = Tied(value), 0

        def towers(self):
            return [self.tower]

        def refresh_fingerprint(self):
            self.refreshed += 1

    trained, start = Model(4.0), Model(2.0)
    blend_into(trained, snapshot(start), 0.5)
    assert torch.equal(trained.tower.decode.weight, torch.full((2, 2), 3.0)) and trained.refreshed == 1


def test_fit_with_interpolate_equals_fit_then_interpolate_and_saves_the_blend(tiny_st_model, tmp_path):
    topics, qrels, docs = toy_data()
    args = dict(texts=docs, negatives=FirstDocs(sorted(docs)), n_negatives=2, epochs=2, batch_size=5, lr=1e-3)
    one = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    one.fit(topics, qrels, interpolate=0.6, out=tmp_path / "wise", **args)
    two = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False).fit(topics, qrels, **args)
    assert one.last_fit["interpolated"] == 0.6 and "interpolated" not in two.last_fit
    trained = _weights(two)
    interpolate(two, ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False), 0.6)
    untrained = ptd.BiEncoder(tiny_st_model, verbose=False).model.fingerprint
    assert one.last_fit["fingerprint"] == one.model.fingerprint == two.model.fingerprint != untrained
    assert any(not torch.equal(v, trained[k]) for k, v in _weights(two).items())   # the blend moved the weights
    texts = list(docs.values())[:5]
    saved = ptd.BiEncoder(str(tmp_path / "wise"), precision="fp32", verbose=False)
    np.testing.assert_allclose(saved.model.encode(texts), one.model.encode(texts), atol=1e-6)


def test_a_new_cross_encoder_head_keeps_its_trained_weights(tiny_st_model):
    topics, qrels, docs = toy_data()
    ce = ptd.CrossEncoder(tiny_st_model, new_head=True, precision="fp32", verbose=False)
    assert ce.model.new_parameters == {"classifier.weight", "classifier.bias"}
    start = {k: v.clone() for k, v in ce.model.model.state_dict().items()}
    ce.fit(topics, qrels, texts=docs, negatives=FirstDocs(sorted(docs)), n_negatives=3, epochs=1, batch_size=5,
           lr=1e-2, warmup=0.0, interpolate=0.0)
    after = ce.model.model.state_dict()
    assert not torch.equal(after["classifier.weight"], start["classifier.weight"])   # trained, then kept
    assert all(torch.equal(v, start[k]) for k, v in after.items() if not k.startswith("classifier"))   # all the start's


def test_bad_interpolation_arguments_are_clear_errors(tiny_st_model, other_tiny_model, tmp_path):
    enc = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    for bad in (1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="interpolation weight must be a number in"):
            interpolate(enc, enc, bad)
    topics, qrels, docs = toy_data()
    with pytest.raises(ValueError, match="interpolation weight"):   # before any training
        enc.fit(topics, qrels, texts=docs, interpolate=2)
    ce = ptd.CrossEncoder(other_tiny_model, new_head=True, precision="fp32", verbose=False)
    with pytest.raises(ValueError, match="cannot interpolate a BiEncoderModel with a CrossEncoderModel"):
        interpolate(enc, ce, 0.5)
    from conftest import _add_sentence_transformers_files, _write_tiny_bert
    wider = _add_sentence_transformers_files(_write_tiny_bert(tmp_path / "wider", hidden=48))
    with pytest.raises(ValueError, match=r"cannot interpolate: weight '.+' is \(\d+, 32\) in the trained model and "
                                         r"\(\d+, 48\) in the starting one"):
        interpolate(enc, ptd.BiEncoder(str(wider), precision="fp32", verbose=False), 0.5)
