"""Single-vector text encoder over any Hugging Face checkpoint (torch + transformers; no PyTerrier, no disk layouts)."""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import length_sorted_batches, pad_batch
from .checkpoint_config import read_checkpoint_config
from .pooling import POOLINGS, pool
from .precision import autocast, resolve_device, resolve_precision

__all__ = ["BiEncoderModel"]

log = logging.getLogger("pyterrier_dense")

CHUNK_TEXTS = 4096  # texts tokenised at once: bounds tokenizer memory, and is the window sorted by length


def _load(name_or_path: str, subfolder: str):
    from transformers import AutoModel, AutoTokenizer
    where = name_or_path
    kwargs = {}
    if subfolder:
        if os.path.isdir(name_or_path):
            where = os.path.join(name_or_path, subfolder)
        else:
            kwargs["subfolder"] = subfolder
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModel.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OSError(f"could not load encoder {name_or_path!r}: {first}") from e
    return tokenizer, model


def _store_linear_weights(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Keep the weights of linear layers in ``dtype`` so autocast does not re-cast them on every batch.

    Layer norms and embeddings stay float32 (autocast runs them in float32 too), which keeps reduced-precision
    vectors within ~3e-5 cosine of exact ones while saving the per-batch weight casts (~25% of bf16 time on CPU).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(dtype)


class BiEncoderModel:
    """Encodes texts into one vector each with a Hugging Face encoder.

    Pooling, normalisation, maximum length and prompts come from a sentence-transformers checkpoint's own files when
    present; arguments given here override them; a plain checkpoint defaults to mean pooling, no normalisation and
    the tokenizer's maximum length. ``query_model`` gives a separate query tower (DPR style).

    Example::

        model = BiEncoderModel("sentence-transformers/all-MiniLM-L6-v2")
        model.encode(["a query"], role="query").shape
    (1, 384)
    """

    def __init__(self, model: str, *, query_model: str | None = None, pooling: str | None = None,
                 normalize: bool | None = None, query_prefix: str | None = None, doc_prefix: str | None = None,
                 max_length: int | None = None, batch_size: int = 32, device: str | None = None,
                 precision: str = "auto", verbose: bool = True):
        ckpt = read_checkpoint_config(model)
        self.model_id = str(model)
        self.pooling = pooling or ckpt.pooling or "mean"
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        self.normalize = bool(ckpt.normalize if normalize is None else normalize)
        self.query_prefix = ckpt.query_prefix if query_prefix is None else query_prefix
        self.doc_prefix = ckpt.doc_prefix if doc_prefix is None else doc_prefix
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.verbose = verbose
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.tokenizer, self.doc_model = _load(self.model_id, ckpt.transformer_path)
        self.query_model = self.doc_model
        if query_model is not None:
            _, self.query_model = _load(str(query_model), read_checkpoint_config(query_model).transformer_path)
        for m in {id(self.doc_model): self.doc_model, id(self.query_model): self.query_model}.values():
            m.eval().to(self.device)
            if self.precision != "fp32":
                _store_linear_weights(m, torch.bfloat16 if self.precision == "bf16" else torch.float16)
        tok_max = getattr(self.tokenizer, "model_max_length", 512)
        tok_max = tok_max if isinstance(tok_max, int) and tok_max < 100_000 else 512
        self.max_length = int(max_length or ckpt.max_length or tok_max)
        self.dim = int(self.doc_model.config.hidden_size)
        self.query_model_id = None if query_model is None else str(query_model)
        self._unreported = {"query": [0, 0], "doc": [0, 0]}  # [truncated, encoded] since the last report

    @functools.cached_property
    def fingerprint(self) -> str:
        """A digest of the input embedding weights: the same model under another path or name has the same one."""
        h = hashlib.sha1()
        for m in (self.doc_model, self.query_model):
            h.update(m.get_input_embeddings().weight.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def settings(self) -> dict:
        """Every setting that changes the vectors, as stored in an index manifest."""
        return {"model": self.model_id, "query_model": self.query_model_id, "fingerprint": self.fingerprint,
                "dim": self.dim, "pooling": self.pooling, "normalize": self.normalize,
                "query_prefix": self.query_prefix, "doc_prefix": self.doc_prefix, "max_length": self.max_length}

    def encode(self, texts: Sequence[str], role: str = "doc", *, progress: bool | None = None,
               report_truncation: bool = True) -> np.ndarray:
        """Encode ``texts`` (``role`` ``"query"`` or ``"doc"``) into a float32 array of shape (len(texts), dim).

        Texts longer than ``max_length`` tokens are truncated and counted in one warning per call; a caller that
        encodes in many small calls (indexing) passes ``report_truncation=False`` and calls
        :meth:`report_truncation` once at the end.
        """
        if role not in ("query", "doc"):
            raise ValueError(f"role must be 'query' or 'doc', got {role!r}")
        prefix = self.query_prefix if role == "query" else self.doc_prefix
        model = self.query_model if role == "query" else self.doc_model
        texts = [prefix + t for t in texts] if prefix else list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        show = self.verbose and len(texts) > 4 * self.batch_size if progress is None else progress
        bar = tqdm(total=len(texts), desc="encoding queries" if role == "query" else "encoding documents", unit=role, disable=not show)
        truncated = 0
        pad_id = self.tokenizer.pad_token_id or 0
        with torch.inference_mode(), bar:
            for start in range(0, len(texts), CHUNK_TEXTS):
                chunk = texts[start:start + CHUNK_TEXTS]
                enc = self.tokenizer(chunk, truncation=True, max_length=self.max_length,
                                     return_attention_mask=False, return_token_type_ids=False)
                ids = enc["input_ids"]
                if enc.encodings is not None:
                    truncated += sum(1 for e in enc.encodings if e.overflowing)
                for pos in length_sorted_batches([len(x) for x in ids], self.batch_size):
                    input_ids, mask = pad_batch(ids, pos, pad_id)
                    out[start + pos] = self._forward(model, input_ids, mask)
                    bar.update(len(pos))
        self._unreported[role][0] += truncated
        self._unreported[role][1] += len(texts)
        if report_truncation:
            self.report_truncation(role)
        return out

    def report_truncation(self, role: str = "doc") -> None:
        """Log how many texts of ``role`` were truncated since the last report (nothing if none were)."""
        truncated, total = self._unreported[role]
        if truncated:
            log.warning("%d of %d %ss were longer than max_length=%d tokens and were truncated",
                        truncated, total, role, self.max_length)
        self._unreported[role] = [0, 0]

    def _forward(self, model, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        ids_t = torch.from_numpy(input_ids).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        with autocast(self.device, self.precision):
            output = model(input_ids=ids_t, attention_mask=mask_t)
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None:  # DPR-style towers expose only their pooled output
            vec = output.pooler_output.float()
        else:
            vec = pool(hidden, mask_t, self.pooling)
        if self.normalize:
            vec = torch.nn.functional.normalize(vec, dim=-1)
        return vec.cpu().numpy()

    def __repr__(self) -> str:
        return f"BiEncoderModel({self.model_id!r}, pooling={self.pooling!r}, normalize={self.normalize}, precision={self.precision!r})"
