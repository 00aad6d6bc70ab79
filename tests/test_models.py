"""models/: batching helper, precision choice, BiEncoderModel pooling/normalisation/prefixes/truncation."""
import logging

import numpy as np
import pytest
import torch

from pyterrier_dense.models import BiEncoderModel, length_sorted_batches, pad_batch
from pyterrier_dense.models import precision as precision_mod


def test_length_sorted_batches_cover_every_position_once_longest_first():
    lengths = [5, 1, 9, 3, 9, 2, 7]
    batches = list(length_sorted_batches(lengths, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert flat[:2].tolist() == [2, 4]  # equal lengths keep input order (stable)


def test_pad_batch_pads_to_longest_in_batch():
    ids, mask = pad_batch([[1, 2], [3, 4, 5, 6], [7]], np.array([0, 2]), pad_id=9)
    assert ids.tolist() == [[1, 2], [7, 9]]
    assert mask.tolist() == [[1, 1], [1, 0]]


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        list(length_sorted_batches([1], 0))


def test_native_bf16_detection_matches_cpu_flags():
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this platform to compare with")
    expected = "avx512_bf16" in flags or "amx_bf16" in flags
    assert precision_mod.cpu_has_native_bf16() == expected


def test_auto_precision_falls_back_to_fp32_without_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: False)
    assert precision_mod.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: True)
    assert precision_mod.resolve_precision("auto", cpu) == "bf16"
    assert precision_mod.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        precision_mod.resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        precision_mod.resolve_precision("int8", cpu)


def _reference(model_dir, texts, pooling, max_length=64):
    """Hand pooling over a plain transformers forward pass, one text at a time (no padding at all)."""
    from transformers import AutoModel, AutoTokenizer
    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, return_tensors="pt", truncation=True, max_length=max_length)
            h = model(**enc).last_hidden_state[0]
            out.append({"cls": h[0], "mean": h.mean(0), "max": h.max(0).values}[pooling].numpy())
    return np.stack(out)


TEXTS = ["the electron", "a much longer text about the magnetic field of an electron in quantum theory",
         "gene", "protein expression in cancer cells and patients"]


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_pooling_matches_hand_computation_and_restores_order(tiny_plain_model, pooling):
    model = BiEncoderModel(tiny_plain_model, pooling=pooling, precision="fp32", batch_size=3, max_length=64)
    got = model.encode(TEXTS)
    np.testing.assert_allclose(got, _reference(tiny_plain_model, TEXTS, pooling), atol=2e-5)


def test_sentence_transformers_config_is_read(tiny_st_model):
    model = BiEncoderModel(tiny_st_model, precision="fp32")
    assert (model.pooling, model.normalize, model.max_length) == ("mean", True, 64)
    np.testing.assert_allclose(np.linalg.norm(model.encode(TEXTS), axis=1), 1.0, atol=1e-6)
    ref = _reference(tiny_st_model, TEXTS, "mean")
    np.testing.assert_allclose(model.encode(TEXTS), ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=2e-5)


def test_plain_checkpoint_defaults_and_argument_overrides(tiny_plain_model, tiny_st_model):
    plain = BiEncoderModel(tiny_plain_model, precision="fp32")
    assert (plain.pooling, plain.normalize) == ("mean", False)
    overridden = BiEncoderModel(tiny_st_model, pooling="cls", normalize=False, precision="fp32")
    assert (overridden.pooling, overridden.normalize) == ("cls", False)


def test_prefixes_are_prepended_per_role(tiny_st_model):
    model = BiEncoderModel(tiny_st_model, query_prefix="query: ", doc_prefix="passage: ", precision="fp32")
    bare = BiEncoderModel(tiny_st_model, precision="fp32")
    np.testing.assert_allclose(model.encode(["gene"], role="query"), bare.encode(["query: gene"]), atol=1e-6)
    np.testing.assert_allclose(model.encode(["gene"], role="doc"), bare.encode(["passage: gene"]), atol=1e-6)
    assert model.settings()["query_prefix"] == "query: "


def test_truncation_is_counted_in_a_log_line(tiny_st_model, caplog):
    model = BiEncoderModel(tiny_st_model, max_length=8, precision="fp32")
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        model.encode(["gene", "the magnetic field of an electron in quantum theory of light"])
    assert "1 of 2 docs were longer than max_length=8" in caplog.text


def test_bf16_is_close_to_fp32(tiny_st_model):
    exact = BiEncoderModel(tiny_st_model, precision="fp32").encode(TEXTS)
    fast = BiEncoderModel(tiny_st_model, precision="bf16").encode(TEXTS)
    assert (fast * exact).sum(1).min() > 0.99


def test_fingerprint_identifies_weights_not_paths(tiny_st_model, other_tiny_model, tmp_path):
    import shutil
    copy = shutil.copytree(tiny_st_model, tmp_path / "copy")
    a = BiEncoderModel(tiny_st_model, precision="fp32").fingerprint
    assert BiEncoderModel(str(copy), precision="fp32").fingerprint == a
    assert BiEncoderModel(other_tiny_model, precision="fp32").fingerprint != a


def test_unloadable_model_names_it(tmp_path):
    with pytest.raises(OSError, match="could not load encoder"):
        BiEncoderModel(str(tmp_path))
