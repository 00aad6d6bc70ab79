"""The encode loop every model family shares: check inputs, tokenise a chunk, sort it by length, pad batches, run
them under the chosen precision with a progress bar, count truncations, and write outputs back in input order.

A family subclasses :class:`EncoderModel` and supplies three things:

- ``_tokenize(chunk, role)``: token ids for a chunk of inputs. The default tokenises plain texts (or
  ``(query, text)`` pairs, with ``token_type_ids``, when the class sets ``pairs = True``) with ``self.tokenizer``.
- ``_forward(batch, role)``: the forward of one padded batch, returning one output per row.
- ``_new_output(n, role)`` (and, rarely, ``_collect``): the container outputs are written into. The default is a
  list; a numpy array works as well.
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import length_sorted_batches, pad_batch
from .precision import autocast, resolve_device, resolve_precision

__all__ = ["EncoderModel", "Tokenized", "tokenize", "CHUNK_TEXTS", "report_pending_truncation"]

log = logging.getLogger("pyterrier_dense")

CHUNK_TEXTS = 4096  # inputs tokenised at once: bounds tokenizer memory, and is the window sorted by length
CPU_BATCH, GPU_BATCH = 32, 128   # default batch sizes (``batch_size=None``)

_PASSAGING = ("for long documents use passaging (pt.text.sliding(...) >> enc, then pt.text.max_passage()) "
              "or raise max_length=")


_PENDING: "weakref.WeakSet[EncoderModel]" = weakref.WeakSet()   # models holding deferred truncation counts


def report_pending_truncation() -> None:
    """Report the truncations that encoders deferred (``report_truncation=False``, as on the indexing path, where
    the encoder does not know when the stream ends): the indexer calls this once, at the end."""
    for model in list(_PENDING):
        for role in list(model._unreported):
            model.report_truncation(role)
    _PENDING.clear()


@dataclass
class Tokenized:
    """Token ids of a chunk: aligned id lists by model input name, the value each pads with, and how many inputs
    were truncated."""
    ids: dict[str, list[list[int]]]
    pad_ids: dict[str, int]
    truncated: int


def tokenize(tokenizer, inputs: Sequence, max_length: int, *, pairs: bool = False) -> Tokenized:
    """Tokenise texts (or ``(first, second)`` pairs, with ``token_type_ids``) truncated to ``max_length`` tokens.

    Truncations are counted from a fast tokenizer's encodings; a slow tokenizer reports none.
    """
    if pairs:
        enc = tokenizer([p[0] for p in inputs], [p[1] for p in inputs], truncation=True, max_length=max_length,
                        return_attention_mask=False, return_token_type_ids=True)
    else:
        enc = tokenizer(list(inputs), truncation=True, max_length=max_length,
                        return_attention_mask=False, return_token_type_ids=False)
    names = ("input_ids", "token_type_ids") if pairs else ("input_ids",)
    truncated = sum(1 for e in enc.encodings if e.overflowing) if enc.encodings is not None else 0
    return Tokenized({name: enc[name] for name in names},
                     {"input_ids": tokenizer.pad_token_id or 0,
                      "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0) or 0}, truncated)


def _check_inputs(inputs: Sequence, pairs: bool) -> None:
    for i, item in enumerate(inputs):
        if pairs and not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"input at position {i} is {item!r}; expected a (query, text) pair of strings")
        for value in (item if pairs else (item,)):
            if not isinstance(value, str):
                raise ValueError(f"input at position {i} is {item!r}: a {type(value).__name__}, not a string")
            if not value.strip():
                raise ValueError(f"input at position {i} is {item!r}: an empty or blank text cannot be encoded")


class EncoderModel:
    """Base class of every model family: one encode loop, three hooks (see the module docstring).

    ``batch_size=None`` is 32 texts on a CPU and 128 on a GPU (on an H200, 128 encodes 1.5-2.7x more documents a
    second than 32 for every family, bf16). A subclass calls ``super().__init__(...)``, then sets ``max_length`` (and ``tokenizer`` when it uses the default
    ``_tokenize``). ``chunk_size`` inputs are tokenised and length-sorted together; a PyTerrier stage can pass it
    as its pipeline batch size so that indexing sorts over windows of that many texts.
    """

    chunk_size: int = CHUNK_TEXTS
    pairs: bool = False  # inputs are (query, text) pairs rather than texts
    role_names: dict[str, str] = {"query": "queries", "doc": "documents"}  # roles ``encode`` accepts

    def __init__(self, *, batch_size: int | None = None, device: str | torch.device | None = None, precision: str = "auto",
                 verbose: bool = True):
        self.verbose = verbose
        self.device = resolve_device(device)
        if batch_size is None:   # a GPU is held back by tokenising and launching at 32 (measured: see README)
            batch_size = GPU_BATCH if self.device.type == "cuda" else CPU_BATCH
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, self.device)
        self._unreported: dict[str, list[int]] = {}  # role -> [truncated, encoded] since the last report

    # --- hooks a family overrides --------------------------------------------------------------------------------

    def _tokenize(self, chunk: list, role: str) -> Tokenized:
        """Token ids of ``chunk`` (already checked: non-empty strings, or pairs of them when ``pairs``)."""
        return tokenize(self.tokenizer, chunk, self.max_length, pairs=self.pairs)

    def _forward(self, batch: dict[str, torch.Tensor], role: str) -> Sequence:
        """Outputs of one padded batch (``input_ids``, ``attention_mask``, ...), one per row, in row order.

        Runs under ``torch.inference_mode()`` and the model's precision, with the tensors already on ``device``."""
        raise NotImplementedError

    def _new_output(self, n: int, role: str) -> Any:
        """The container that ``n`` outputs are written into (by default a list)."""
        return [None] * n

    def _collect(self, out: Any, positions: np.ndarray, outputs: Sequence) -> None:
        """Write ``outputs`` at ``positions`` of ``out``."""
        if isinstance(out, np.ndarray):
            out[positions] = outputs
        else:
            for p, o in zip(positions.tolist(), outputs):
                out[p] = o

    def _device_batch(self, tok: Tokenized, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows ``positions`` of a tokenised chunk, padded to the longest, as tensors on the model's device."""
        return {k: torch.from_numpy(v).to(self.device) for k, v in pad_batch(tok.ids, positions, tok.pad_ids).items()}

    def _training_batch(self, inputs: Sequence, role: str) -> dict[str, torch.Tensor]:
        """All of ``inputs`` tokenised and padded as one batch, for a forward pass that keeps its graph (training)."""
        inputs = list(inputs)
        return self._device_batch(self._tokenize(inputs, role), np.arange(len(inputs)))

    # --- the shared loop -----------------------------------------------------------------------------------------

    def _encode_all(self, inputs: Sequence, role: str, progress: bool | None, report_truncation: bool) -> Any:
        if role not in self.role_names:
            raise ValueError(f"role must be one of {sorted(self.role_names)}, got {role!r}")
        inputs = list(inputs)
        _check_inputs(inputs, self.pairs)
        out = self._new_output(len(inputs), role)
        show = self.verbose and len(inputs) > 4 * self.batch_size if progress is None else progress
        bar = tqdm(total=len(inputs), desc=f"encoding {self.role_names[role]}", unit=role, disable=not show)
        truncated = 0
        with torch.inference_mode(), bar:
            for start in range(0, len(inputs), self.chunk_size):
                tok = self._tokenize(inputs[start:start + self.chunk_size], role)
                truncated += tok.truncated
                for pos in length_sorted_batches([len(x) for x in tok.ids["input_ids"]], self.batch_size):
                    batch = self._device_batch(tok, pos)
                    with autocast(self.device, self.precision):
                        outputs = self._forward(batch, role)
                    self._collect(out, start + pos, outputs)
                    bar.update(len(pos))
        counts = self._unreported.setdefault(role, [0, 0])
        counts[0] += truncated
        counts[1] += len(inputs)
        if report_truncation:
            self.report_truncation(role)
        else:
            _PENDING.add(self)
        return out

    def report_truncation(self, role: str = "doc") -> None:
        """Log how many inputs of ``role`` were truncated since the last report (nothing if none were)."""
        truncated, total = self._unreported.pop(role, (0, 0))
        if truncated:
            advice = "raise max_length=" if role == "query" else _PASSAGING
            log.warning("%d of %d %s were longer than max_length=%d tokens and were truncated; %s",
                        truncated, total, self.role_names.get(role, role), self.max_length, advice)
