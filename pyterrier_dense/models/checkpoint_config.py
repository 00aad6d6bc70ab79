"""What a checkpoint says about how to encode with it: sentence-transformers' module files, read without importing
sentence-transformers.

A sentence-transformers directory (``modules.json`` + ``1_Pooling/config.json`` + optional ``2_Normalize``,
``sentence_bert_config.json``, ``config_sentence_transformers.json``) fixes pooling, normalisation, maximum length and
query/document prompts. A plain Hugging Face directory fixes none of them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

__all__ = ["CheckpointConfig", "read_checkpoint_config", "write_sentence_transformers_files"]

# module classes by name: sentence-transformers < 6 writes ``sentence_transformers.models.Pooling``, 6.x writes
# ``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` (and ``...base.modules...`` for the others)
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class CheckpointConfig:
    transformer_path: str = ""      # sub-folder that holds the transformer weights ('' = the root)
    pooling: str | None = None
    normalize: bool | None = None
    max_length: int | None = None
    query_prefix: str | None = None
    doc_prefix: str | None = None


def _read_json(name_or_path: str, filename: str) -> dict | list | None:
    if os.path.isdir(name_or_path):
        full = os.path.join(name_or_path, filename)
        if not os.path.exists(full):
            return None
    else:
        try:
            from huggingface_hub import hf_hub_download
            full = hf_hub_download(name_or_path, filename)
        except Exception:  # not on the hub, offline, or the file does not exist: the checkpoint says nothing
            return None
    with open(full, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{filename} of checkpoint {name_or_path!r} is not valid JSON: {e}") from None


def _pooling_from(cfg: dict) -> str:
    if "pooling_mode" in cfg:   # sentence-transformers 6.x: one name (or a list of them)
        mode = cfg["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode or [])
        if len(modes) == 1 and modes[0] in ("cls", "mean", "max"):
            return modes[0]
        raise ValueError(f"the checkpoint's Pooling config has pooling_mode={mode!r}; exactly one of cls/mean/max "
                         "is supported")
    modes = [m for key, m in (("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
                              ("pooling_mode_max_tokens", "max")) if cfg.get(key)]
    if len(modes) != 1:
        raise ValueError(f"the checkpoint's Pooling config enables {modes or 'no mode'}; exactly one of cls/mean/max is supported")
    return modes[0]


def read_checkpoint_config(name_or_path: str) -> CheckpointConfig:
    """Read the encoding settings a checkpoint carries (all ``None`` for a plain Hugging Face checkpoint)."""
    modules = _read_json(name_or_path, "modules.json")
    if not modules:
        return CheckpointConfig()
    transformer_path, pooling, normalize = "", None, False
    for module in modules:
        kind = module.get("type", "")
        if not kind.startswith("sentence_transformers.") or kind.rsplit(".", 1)[-1] not in _SUPPORTED_MODULES:
            raise ValueError(f"checkpoint {name_or_path!r} has a {kind!r} module; supported modules are "
                             f"sentence-transformers' {', '.join(_SUPPORTED_MODULES)}")
        if kind.endswith(".Transformer"):
            transformer_path = module.get("path", "")
        elif kind.endswith(".Pooling"):
            pooling = _pooling_from(_read_json(name_or_path, f"{module['path']}/config.json") or {})
        elif kind.endswith(".Normalize"):
            normalize = True
    sbert = _read_json(name_or_path, "sentence_bert_config.json") or {}
    prompts = (_read_json(name_or_path, "config_sentence_transformers.json") or {}).get("prompts") or {}
    return CheckpointConfig(
        transformer_path=transformer_path,
        pooling=pooling,
        normalize=normalize,
        max_length=sbert.get("max_seq_length"),
        query_prefix=prompts.get("query") or None,
        doc_prefix=(prompts.get("document") or prompts.get("passage")) or None,
    )


def write_sentence_transformers_files(path: str, *, dim: int, pooling: str, normalize: bool, max_length: int,
                                      query_prefix: str | None, doc_prefix: str | None) -> None:
    """The module files of a sentence-transformers directory whose transformer is at ``path``'s root, in the
    classic layout that every sentence-transformers version reads (and :func:`read_checkpoint_config` too)."""
    if pooling not in ("cls", "mean", "max"):
        raise ValueError(f"sentence-transformers has no {pooling!r} pooling module; save with cls, mean or max")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        os.makedirs(os.path.join(path, "2_Normalize"), exist_ok=True)
    os.makedirs(os.path.join(path, "1_Pooling"), exist_ok=True)
    files = {
        "modules.json": modules,
        "1_Pooling/config.json": {"word_embedding_dimension": dim, "pooling_mode_cls_token": pooling == "cls",
                                  "pooling_mode_mean_tokens": pooling == "mean",
                                  "pooling_mode_max_tokens": pooling == "max"},
        "sentence_bert_config.json": {"max_seq_length": max_length, "do_lower_case": False},
        "config_sentence_transformers.json": {"prompts": {"query": query_prefix or "", "document": doc_prefix or ""},
                                              "default_prompt_name": None, "similarity_fn_name": "cosine"},
    }
    for name, content in files.items():
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
