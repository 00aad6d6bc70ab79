"""models/: batching helper, precision choice, BiEncoderModel pooling/normalisation/prefixes/truncation, weight
fingerprints, two-tower and DPR checkpoints, default-model resolution, input checks."""
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pyterrier_dense as ptd
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
    batch = pad_batch({"input_ids": [[1, 2], [3, 4, 5, 6], [7]]}, np.array([0, 2]), {"input_ids": 9})
    assert batch["input_ids"].tolist() == [[1, 2], [7, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_pad_batch_pads_aligned_columns_together():
    columns = {"input_ids": [[1, 2, 3], [4, 5]], "token_type_ids": [[0, 1, 1], [0, 1]]}
    batch = pad_batch(columns, np.array([1, 0]), {"input_ids": 9, "token_type_ids": 7})
    assert batch["input_ids"].tolist() == [[4, 5, 9], [1, 2, 3]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 7], [0, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="token_type_ids"):
        pad_batch({"input_ids": [[1, 2]], "token_type_ids": [[0]]}, np.array([0]))


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
    assert "1 of 2 documents were longer than max_length=8 tokens and were truncated; for long documents use " \
        "passaging (pt.text.sliding(...) >> enc, then pt.text.max_passage()) or raise max_length=" in caplog.text
    caplog.clear()
    model.chunk_size = 1  # three chunks, still one warning
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        model.encode(["the magnetic field of an electron in quantum theory of light"] * 3, role="query")
    assert [r.getMessage()[:55] for r in caplog.records] == ["3 of 3 queries were longer than max_length=8 tokens and"]


def test_chunk_size_is_the_sorting_window(tiny_st_model):
    assert BiEncoderModel(tiny_st_model, precision="fp32").chunk_size == 4096


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


def _edited_copy(src, dst, edit):
    """A copy of checkpoint ``src`` at ``dst`` with ``edit(model)`` applied to its weights."""
    from transformers import AutoModel
    shutil.copytree(src, dst)
    model = AutoModel.from_pretrained(src)
    with torch.no_grad():
        edit(model)
    model.save_pretrained(dst)
    return str(dst)


def test_fingerprint_covers_every_weight_and_ignores_precision(tiny_plain_model, tmp_path):
    # a fine-tune that froze the embeddings: only one encoder-layer weight differs
    changed = _edited_copy(tiny_plain_model, tmp_path / "changed",
                           lambda m: m.encoder.layer[1].output.dense.weight[0, 0].add_(0.5))
    a = BiEncoderModel(tiny_plain_model, precision="fp32").fingerprint
    assert BiEncoderModel(changed, precision="fp32").fingerprint != a
    assert BiEncoderModel(str(shutil.copytree(tiny_plain_model, tmp_path / "copy")), precision="fp32").fingerprint == a
    assert BiEncoderModel(tiny_plain_model, precision="bf16").fingerprint == a
    two_towers = BiEncoderModel(tiny_plain_model, query_model=tiny_plain_model, precision="fp32").fingerprint
    assert BiEncoderModel(tiny_plain_model, query_model=changed, precision="fp32").fingerprint != two_towers


def with_working_tokenizer(src, dst, reverse_words=False):
    """A copy of checkpoint ``src`` at ``dst`` whose tokenizer knows the whole vocab.txt (conftest's tokenizers are
    built with ``vocab_file=``, which transformers 5 ignores, so they know only the 5 special tokens).
    ``reverse_words`` reverses the word ids (special tokens kept): same weights, another tokenizer."""
    from transformers import BertTokenizerFast
    shutil.copytree(src, dst)
    vocab = (dst / "vocab.txt").read_text().split("\n")[:-1]
    (dst / "vocab.txt").write_text("\n".join(vocab[:5] + (vocab[5:][::-1] if reverse_words else vocab[5:])) + "\n")
    (dst / "tokenizer.json").unlink()
    BertTokenizerFast(vocab=str(dst / "vocab.txt"), do_lower_case=True).save_pretrained(dst)
    return str(dst)


def test_query_tower_uses_its_own_tokenizer(tiny_plain_model, tmp_path):
    doc_dir = with_working_tokenizer(tiny_plain_model, tmp_path / "doc_tower")
    query_dir = with_working_tokenizer(tiny_plain_model, tmp_path / "query_tower", reverse_words=True)
    model = BiEncoderModel(doc_dir, query_model=query_dir, precision="fp32", max_length=64)
    assert _reference(query_dir, TEXTS, "mean")[0].tolist() != _reference(doc_dir, TEXTS, "mean")[0].tolist()
    np.testing.assert_allclose(model.encode(TEXTS, role="query"), _reference(query_dir, TEXTS, "mean"), atol=2e-5)
    np.testing.assert_allclose(model.encode(TEXTS, role="doc"), _reference(doc_dir, TEXTS, "mean"), atol=2e-5)


def _tiny_dpr(root, cls_name, seed):
    """A tiny DPR checkpoint laid out as facebook/dpr-* repos are: config + weights + a BERT tokenizer beside them."""
    import transformers
    from conftest import _write_tiny_bert
    path = Path(with_working_tokenizer(_write_tiny_bert(root / "bert", seed=seed), root / cls_name))
    torch.manual_seed(seed)
    config = transformers.DPRConfig(vocab_size=transformers.BertConfig.from_pretrained(path).vocab_size,
                                    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    max_position_embeddings=128, projection_dim=16)
    (path / "model.safetensors").unlink()
    getattr(transformers, cls_name)(config).eval().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def dpr_towers(tmp_path_factory):
    return (_tiny_dpr(tmp_path_factory.mktemp("dpr_ctx"), "DPRContextEncoder", 3),
            _tiny_dpr(tmp_path_factory.mktemp("dpr_question"), "DPRQuestionEncoder", 4))


def test_dpr_checkpoints_load_as_what_they_are(dpr_towers):
    from transformers import AutoTokenizer, DPRContextEncoder, DPRQuestionEncoder
    ctx_dir, question_dir = dpr_towers
    model = BiEncoderModel(ctx_dir, query_model=question_dir, precision="fp32", batch_size=3)
    assert (model.settings()["pooling"], model.dim) == ("pooler", 16)
    for role, cls, path in (("doc", DPRContextEncoder, ctx_dir), ("query", DPRQuestionEncoder, question_dir)):
        tok, tower = AutoTokenizer.from_pretrained(path), cls.from_pretrained(path).eval()
        with torch.no_grad():
            want = np.stack([tower(**tok(t, return_tensors="pt")).pooler_output[0].numpy() for t in TEXTS])
        np.testing.assert_allclose(model.encode(TEXTS, role=role), want, atol=1e-5)


def test_dpr_reader_and_token_pooling_are_refused(dpr_towers, tmp_path):
    with pytest.raises(ValueError, match="DPRReader"):
        BiEncoderModel(_tiny_dpr(tmp_path / "reader", "DPRReader", 5))
    with pytest.raises(ValueError, match="pooling='pooler'"):
        BiEncoderModel(dpr_towers[0], pooling="mean")


@pytest.mark.slow
def test_default_model_name_resolves_like_the_cli(minilm, monkeypatch):
    import huggingface_hub.constants as hub_constants
    from pyterrier_dense.models import DEFAULT_MODEL
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # the local copy, not the hub
    model = BiEncoderModel(DEFAULT_MODEL, precision="fp32", verbose=False)
    assert model.settings()["model"] == DEFAULT_MODEL  # the portable name, not this machine's install path
    assert (model.pooling, model.normalize, model.max_length, model.dim) == ("mean", True, 256, 384)
    assert model.fingerprint == BiEncoderModel(minilm, precision="fp32", verbose=False).fingerprint
    assert BiEncoderModel(precision="fp32", verbose=False).model_id == DEFAULT_MODEL


@pytest.mark.parametrize("bad", [None, 1.5, "", "   "])
def test_bad_texts_raise_value_error_naming_position_and_value(tiny_plain_model, bad):
    model = BiEncoderModel(tiny_plain_model, precision="fp32", doc_prefix="passage: ")
    with pytest.raises(ValueError, match=f"position 1 is {re.escape(repr(bad))}"):
        model.encode(["gene", bad, "cell"])


def test_unloadable_model_names_it(tmp_path):
    with pytest.raises(OSError, match="could not load encoder"):
        BiEncoderModel(str(tmp_path))
    with pytest.raises(OSError, match="could not load encoder '.*nowhere/model': there is no such directory"):
        BiEncoderModel(str(tmp_path / "nowhere" / "model"))


def test_a_checkpoint_saved_by_sentence_transformers_6_loads_with_its_settings(tiny_st_model, tmp_path):
    """sentence-transformers 6 writes other module type names and ``pooling_mode``: the same vectors as ST gives."""
    st = pytest.importorskip("sentence_transformers", reason="the test extra installs sentence-transformers")
    model = st.SentenceTransformer(tiny_st_model, device="cpu")
    model.save(str(tmp_path / "st6"))
    modules = json.loads((tmp_path / "st6" / "modules.json").read_text())
    texts = ["the magnetic field of an electron", "gene cancer study results"]
    ours = ptd.BiEncoder(str(tmp_path / "st6"), precision="fp32", verbose=False).model
    assert ours.pooling == "mean" and ours.normalize, modules
    np.testing.assert_allclose(ours.encode(texts), model.encode(texts), atol=1e-6)
