"""What a late-interaction checkpoint says about how to encode with it, for the three layouts ColBERTModel reads.

- ``"colbert"``: a Stanford ColBERT checkpoint (``colbert-ir/colbertv2.0``): ``config.json`` names ``HF_ColBERT``;
  the weights file holds the encoder under its base-model prefix (``bert.*``) plus ``linear.weight`` (dim x hidden,
  no bias); an optional ``artifact.metadata`` (a ColBERTConfig) fixes lengths, markers and punctuation masking.
- ``"pylate"``: a PyLate / sentence-transformers ColBERT: ``modules.json`` lists a Transformer and one or more Dense
  modules (and no Pooling); ``config_sentence_transformers.json`` fixes prefixes, lengths, query expansion and the
  skiplist.
- ``"zero_shot"``: any other encoder (a sentence-transformers or plain Hugging Face directory or name): token
  states as they are, no projection, markers or expansion.

Example::

    ckpt = read_colbert_checkpoint("colbert-ir/colbertv2.0")
    ckpt.layout, ckpt.query_marker, ckpt.query_length    # ('colbert', '[unused0]', 32)
    projection = load_projection("colbert-ir/colbertv2.0", ckpt)   # a torch module: hidden -> 128
"""
from __future__ import annotations

import os
import string
from dataclasses import dataclass

import torch

from .checkpoint_config import _read_json, read_checkpoint_config

__all__ = ["ColBERTCheckpoint", "DenseLayer", "read_colbert_checkpoint", "load_projection"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_COLBERT_DEFAULTS = {"query_maxlen": 32, "doc_maxlen": 220, "mask_punctuation": True, "attend_to_mask_tokens": False,
                     "query_token_id": "[unused0]", "doc_token_id": "[unused1]"}  # ColBERTConfig's own defaults


@dataclass(frozen=True)
class DenseLayer:
    """One projection layer: where its weights are (``folder`` of the checkpoint, keys under ``linear.``) and its
    config; ``in_features``/``out_features`` of None are read from the weight's shape."""
    folder: str = ""
    in_features: int | None = None
    out_features: int | None = None
    bias: bool = False
    activation: str = "torch.nn.modules.linear.Identity"
    residual: bool = False


@dataclass(frozen=True)
class ColBERTCheckpoint:
    """What a checkpoint fixes (None: it says nothing, and the model's defaults apply)."""
    layout: str
    transformer_path: str = ""          # sub-folder holding the transformer ('' = the root)
    query_marker: str | None = None     # token inserted after [CLS] of queries
    doc_marker: str | None = None
    query_length: int | None = None     # in tokens, markers included
    doc_length: int | None = None
    query_augmentation: bool = False    # pad queries to query_length with [MASK]
    attend_to_expansion: bool = False   # the [MASK] expansion is attended to
    skip_punctuation: bool = False      # ColBERT: drop the first token id of each punctuation character from documents
    skiplist_words: tuple[str, ...] = ()  # PyLate: drop these tokens (looked up as tokens) from documents
    strip_and_lowercase: tuple[bool, bool] = (False, False)  # sentence-transformers' text preprocessing
    dense: tuple[DenseLayer, ...] = ()  # the projection, in order


def _file(name_or_path: str, filename: str) -> str | None:
    """Local path of ``filename`` in a checkpoint directory or hub repository, or None when it has none."""
    if os.path.isdir(name_or_path):
        full = os.path.join(name_or_path, filename)
        return full if os.path.exists(full) else None
    try:
        from huggingface_hub import hf_hub_download
        return hf_hub_download(name_or_path, filename)
    except Exception:  # not on the hub, offline, or no such file
        return None


def _last(kind: str) -> str:
    return kind.rsplit(".", 1)[-1]


def read_colbert_checkpoint(name_or_path: str) -> ColBERTCheckpoint:
    """Detect the layout of a checkpoint and read what it says (see the module docstring)."""
    modules = _read_json(name_or_path, "modules.json") or []
    kinds = [_last(m.get("type", "")) for m in modules]
    if "Dense" in kinds and "Pooling" not in kinds:
        return _read_pylate(name_or_path, modules)
    config = _read_json(name_or_path, "config.json") or {}
    if "HF_ColBERT" in (config.get("architectures") or []) or _file(name_or_path, "artifact.metadata"):
        return _read_colbert(name_or_path)
    st = read_checkpoint_config(name_or_path)
    return ColBERTCheckpoint("zero_shot", transformer_path=st.transformer_path, doc_length=st.max_length)


def _read_colbert(name_or_path: str) -> ColBERTCheckpoint:
    meta = _read_json(name_or_path, "artifact.metadata") or {}
    meta = {**_COLBERT_DEFAULTS, **{k: v for k, v in meta.get("config", meta).items() if v is not None}}
    return ColBERTCheckpoint(
        "colbert", query_marker=meta["query_token_id"], doc_marker=meta["doc_token_id"],
        query_length=int(meta["query_maxlen"]), doc_length=int(meta["doc_maxlen"]), query_augmentation=True,
        attend_to_expansion=bool(meta["attend_to_mask_tokens"]), skip_punctuation=bool(meta["mask_punctuation"]),
        dense=(DenseLayer(),))


def _prefix(value: str | None, default: str) -> str | None:
    """PyLate's prefix: its default when unset, none at all when set to ''."""
    return default if value is None else value or None


def _read_pylate(name_or_path: str, modules: list) -> ColBERTCheckpoint:
    transformer_path, dense = "", []
    for module in modules:
        kind, folder = _last(module.get("type", "")), module.get("path", "")
        if kind == "Transformer":
            transformer_path = folder
        elif kind == "Dense":
            cfg = _read_json(name_or_path, f"{folder}/config.json")
            if cfg is None:
                raise ValueError(f"checkpoint {name_or_path!r}: its Dense module has no {folder}/config.json")
            activation = cfg.get("activation_function") or DenseLayer.activation
            dense.append(DenseLayer(folder, int(cfg["in_features"]), int(cfg["out_features"]),
                                    bool(cfg.get("bias", True)), activation, bool(cfg.get("use_residual"))))
        else:
            raise ValueError(f"checkpoint {name_or_path!r} has a {module.get('type')!r} module; a ColBERT checkpoint "
                             "is read with Transformer and Dense modules only")
    cfg = _read_json(name_or_path, "config_sentence_transformers.json") or {}
    sbert = _read_json(name_or_path, f"{transformer_path}/sentence_bert_config.json" if transformer_path
                       else "sentence_bert_config.json") or {}
    expansion = cfg.get("do_query_expansion", True) is not False
    return ColBERTCheckpoint(
        "pylate", transformer_path=transformer_path,
        query_marker=_prefix(cfg.get("query_prefix"), "[Q] "), doc_marker=_prefix(cfg.get("document_prefix"), "[D] "),
        query_length=int(cfg.get("query_length") or 32), doc_length=int(cfg.get("document_length") or 180),
        query_augmentation=expansion, attend_to_expansion=expansion and bool(cfg.get("attend_to_expansion_tokens")),
        skiplist_words=tuple(cfg.get("skiplist_words") if cfg.get("skiplist_words") is not None
                             else string.punctuation),
        strip_and_lowercase=(True, bool(sbert.get("do_lower_case"))), dense=tuple(dense))


# --- projection weights ----------------------------------------------------------------------------------------------

class _Dense(torch.nn.Module):
    """``activation(linear(x))`` (+ ``x`` or ``residual(x)`` when the layer has a residual connection)."""

    def __init__(self, linear: torch.nn.Linear, activation: torch.nn.Module, residual: torch.nn.Module | None):
        super().__init__()
        self.linear, self.activation, self.residual = linear, activation, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(self.linear(x))
        return y if self.residual is None else y + self.residual(x)


def _tensors(name_or_path: str, folder: str, keys: list[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors named ``keys`` (those present) from the weights file of ``folder``, and that file's name."""
    where = f"{folder}/" if folder else ""
    for filename in _WEIGHT_FILES:
        index = _read_json(name_or_path, f"{where}{filename}.index.json")  # sharded: find the shard holding linear.*
        if index is not None:
            filename = index.get("weight_map", {}).get(keys[0], filename)
        path = _file(name_or_path, where + filename)
        if path is None:
            continue
        if filename.endswith(".safetensors"):
            from safetensors import safe_open
            with safe_open(path, framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in keys if k in f.keys()}, where + filename
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: state[k] for k in keys if k in state}, where + filename
    raise FileNotFoundError(f"checkpoint {name_or_path!r} has no projection weights: neither {where}model.safetensors "
                            f"nor {where}pytorch_model.bin exists")


def _activation(name: str) -> torch.nn.Module:
    module, _, cls = name.rpartition(".")
    if module.startswith("torch.nn") and isinstance(getattr(torch.nn, cls, None), type):
        return getattr(torch.nn, cls)()
    raise ValueError(f"unsupported Dense activation_function {name!r}: expected a torch.nn module such as "
                     "'torch.nn.modules.linear.Identity'")


def _layer(name_or_path: str, spec: DenseLayer) -> _Dense:
    projected = spec.residual and spec.in_features != spec.out_features  # PyLate: only then is the residual a layer
    keys = ["linear.weight"] + (["linear.bias"] if spec.bias else []) + (["residual.weight"] if projected else [])
    found, filename = _tensors(name_or_path, spec.folder, keys)
    missing = [k for k in keys if k not in found]
    if missing:
        raise ValueError(f"{filename} of checkpoint {name_or_path!r} lacks {missing}: the projection cannot be loaded")
    weight = found["linear.weight"].float()
    out_features, in_features = weight.shape
    if (spec.out_features or out_features, spec.in_features or in_features) != (out_features, in_features):
        raise ValueError(f"{filename} of checkpoint {name_or_path!r}: linear.weight is {tuple(weight.shape)}, but its "
                         f"config says {spec.out_features} x {spec.in_features}")
    linear = torch.nn.Linear(in_features, out_features, bias=spec.bias)
    linear.load_state_dict({k.split(".", 1)[1]: v.float() for k, v in found.items() if k.startswith("linear.")})
    residual = torch.nn.Identity() if spec.residual else None
    if projected:
        residual = torch.nn.Linear(in_features, out_features, bias=False)
        residual.load_state_dict({"weight": found["residual.weight"].float()})
    return _Dense(linear, _activation(spec.activation), residual)


def load_projection(name_or_path: str, ckpt: ColBERTCheckpoint) -> torch.nn.Sequential | None:
    """The checkpoint's projection (its Dense layers in order, float32), or None when it has none (zero-shot)."""
    if not ckpt.dense:
        return None
    return torch.nn.Sequential(*(_layer(name_or_path, spec) for spec in ckpt.dense))
