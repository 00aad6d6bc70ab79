"""Learned sparse family: text to ``{term: weight}`` over the tokenizer's vocabulary, over the shared encode loop.

Three heads turn a batch into one weight per vocabulary entry (a ``(batch, vocab)`` tensor, :meth:`dense_weights`):

- ``"splade"`` (SPLADE, the default for a ``*ForMaskedLM`` checkpoint): ``w_t = max_p log(1 + ReLU(logit[p, t]))``
  over the non-padding positions ``p``, for every vocabulary entry ``t``: the text is expanded with related terms.
- ``"terms"`` (DeepCT / DeepImpact-style term weighting from the same MLM logits): only the tokens of the text get a
  weight, ``w_t = max over positions p holding t of log(1 + ReLU(logit[p, t]))``; no expansion.
- ``"lexical"`` (BGE-M3's sparse head, over any encoder): ``w_p = ReLU(W h_p + b)`` per token, ``W`` a
  ``Linear(hidden, 1)``; a term's weight is the largest over its occurrences. ``W`` is read from the
  ``sparse_linear.pt`` beside the checkpoint (as BGE-M3 ships it), else left untrained (a warning says so).

Special tokens never get a weight. Weights are then pruned per role (``query_top_k`` / ``doc_top_k``: the k largest,
ties to the lower token id; ``min_weight``) and optionally quantised to integer impacts (``scale``: ``round(w *
scale)``, zeros dropped), as impact indexes such as PISA want.
"""
from __future__ import annotations

import logging
import os
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .bi_encoder_model import _fingerprint, _load_error, _location, _store_linear_weights
from .default_model import resolve_model
from .encoder_base import _PASSAGING, EncoderModel, Tokenized, tokenize

__all__ = ["SpladeModel", "TermWeights", "HEADS"]

log = logging.getLogger("pyterrier_dense")

HEADS = ("splade", "terms", "lexical")
DEFAULT_QUERY_LENGTH, DEFAULT_DOC_LENGTH = 64, 256
LEXICAL_WEIGHTS = "sparse_linear.pt"   # BGE-M3's file: a state dict with weight (1, hidden) and bias (1,)
HEAD_POSITIONS = 2048   # token positions the MLM head scores at once: bounds the (positions, vocab) logits held
_MLM_HEADS = {"BertForMaskedLM": "cls", "RobertaForMaskedLM": "lm_head", "XLMRobertaForMaskedLM": "lm_head",
              "CamembertForMaskedLM": "lm_head"}   # the head module on top of ``base_model``, where it is one module


class TermWeights(NamedTuple):
    """The weights of one text: ``ids`` int32 token ids, ascending, and their ``weights`` (float32 > 0, or int32
    impacts >= 1 when the model quantises)."""
    ids: np.ndarray
    weights: np.ndarray


def _quiet_class(base, unexpected: list[str], missing: list[str]):
    """``base`` telling transformers which keys not to report (a class of its own, so ``base`` is unchanged)."""
    return type(base.__name__, (base,), {"_keys_to_ignore_on_load_unexpected": unexpected,
                                         "_keys_to_ignore_on_load_missing": missing})


def _load(name_or_path: str, mlm: bool):
    """Tokenizer and model (a masked LM, or the bare encoder) in float32; an error when a weight the head needs is
    missing from the checkpoint (it would be random)."""
    import transformers
    where, kwargs = _location(name_or_path, "")
    try:
        config = transformers.AutoConfig.from_pretrained(where, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **kwargs)
        mapping = transformers.MODEL_FOR_MASKED_LM_MAPPING if mlm else transformers.MODEL_MAPPING
        if type(config) not in mapping:
            what = "masked-language-model head" if mlm else "encoder"
            raise ValueError(f"transformers has no {what} for model type {config.model_type!r}")
        unexpected = [r"^pooler\.", r"^cls\.seq_relationship\."] + ([] if mlm else [r"^cls\.", r"^lm_head\."])
        base = _quiet_class(mapping[type(config)], unexpected, [r"^pooler\."])
        model, info = base.from_pretrained(where, config=config, dtype=torch.float32, output_loading_info=True,
                                           **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error(name_or_path, e) from e
    lacking = sorted(info["missing_keys"]) + sorted(k for k, *_ in info.get("mismatched_keys") or ())
    if lacking:
        hint = "; it has no trained masked-language-model head: use head='lexical'" if mlm else ""
        raise OSError(f"could not load encoder {name_or_path!r}: {len(lacking)} of its weights are missing or of "
                      f"another shape (e.g. {lacking[0]!r}); they would be randomly initialised{hint}")
    return tokenizer, model


def _lexical_head(name_or_path: str, hidden: int) -> torch.nn.Linear:
    """BGE-M3's ``sparse_linear`` from the checkpoint when it has one; otherwise a seeded, untrained layer."""
    head = torch.nn.Linear(hidden, 1)
    if os.path.isdir(name_or_path):
        found = os.path.join(name_or_path, LEXICAL_WEIGHTS)
        found = found if os.path.isfile(found) else None
    else:
        from transformers.utils import cached_file
        try:
            found = cached_file(name_or_path, LEXICAL_WEIGHTS, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except OSError:
            found = None
    if found is None:
        log.warning("checkpoint %r has no %s: the lexical head's weights are untrained (seeded at random); train "
                    "them before use", name_or_path, LEXICAL_WEIGHTS)
        g = torch.Generator().manual_seed(0)
        bound = hidden ** -0.5
        with torch.no_grad():
            head.weight.uniform_(-bound, bound, generator=g)
            head.bias.uniform_(-bound, bound, generator=g)
        return head
    state = torch.load(found, map_location="cpu", weights_only=True)
    try:
        head.load_state_dict({k: v.float() for k, v in state.items()})
    except (RuntimeError, AttributeError) as e:
        raise OSError(f"could not load the lexical head of {name_or_path!r} from {found}: expected a state dict with "
                      f"weight (1, {hidden}) and bias (1,); {str(e).strip().splitlines()[0]}") from e
    return head


def _option(name: str, value, least: int | float, kind=int):
    """None, or a number >= ``least`` of ``kind`` (never a bool)."""
    if value is None:
        return None
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok or value < least:
        raise ValueError(f"{name} must be None or {'a number' if kind is float else 'an int'} >= {least}, "
                         f"got {value!r}")
    return kind(value)


class SpladeModel(EncoderModel):
    """Encodes texts into sparse ``{term: weight}`` dicts over the tokenizer's vocabulary (see the module docstring
    for the heads and the pruning options).

    ``query_length`` / ``doc_length`` default to 64 / 256 tokens, capped at the model's maximum positions.
    ``settings()`` lists everything that changes the output, for index manifests; ``fingerprint`` digests every
    weight (the lexical head's too) as loaded: call :meth:`refresh_fingerprint` after training the model in place.

    Example::

        model = SpladeModel("naver/splade-cocondenser-ensembledistil")
        model.encode(["what is a gene?"], role="query")[0]      # {'gene': 2.1, 'genes': 1.3, 'what': 0.4, ...}
        impacts = SpladeModel("naver/splade-cocondenser-ensembledistil", scale=100, doc_top_k=256)
        lexical = SpladeModel("BAAI/bge-m3", head="lexical")   # reads sparse_linear.pt from the repository
    """

    def __init__(self, model: str, *, head: str | None = None, query_length: int | None = None,
                 doc_length: int | None = None, query_top_k: int | None = None, doc_top_k: int | None = None,
                 min_weight: float = 0.0, scale: int | None = None, batch_size: int | None = None,
                 device: str | torch.device | None = None, precision: str = "auto", verbose: bool = True):
        if head is not None and head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.query_top_k = _option("query_top_k", query_top_k, 1)
        self.doc_top_k = _option("doc_top_k", doc_top_k, 1)
        self.min_weight = _option("min_weight", min_weight, 0, float) or 0.0
        self.scale = _option("scale", scale, 1)
        super().__init__(batch_size=batch_size, device=device, precision=precision, verbose=verbose)
        self.model_id = str(model)
        path = resolve_model(self.model_id)
        self.head = head or self._default_head(path)
        self.tokenizer, self.encoder = _load(path, mlm=self.head != "lexical")
        hidden = int(self.encoder.config.hidden_size)
        self.lexical_head = _lexical_head(path, hidden) if self.head == "lexical" else None
        self._modules = [self.encoder] + ([self.lexical_head] if self.lexical_head is not None else [])
        self.fingerprint = _fingerprint(self._modules)   # before the precision cast below
        config_vocab = int(getattr(self.encoder.config, "vocab_size", 0) or 0)
        self.vocab_size = max(config_vocab, len(self.tokenizer)) if self.head == "lexical" else config_vocab
        self.terms = np.array(self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer)))), dtype=object)
        keep = torch.zeros(self.vocab_size, dtype=torch.bool)
        keep[:min(len(self.tokenizer), self.vocab_size)] = True
        keep[[i for i in self.tokenizer.all_special_ids if i is not None and i < self.vocab_size]] = False
        cap = self._max_positions()
        self.query_length = self._length("query_length", query_length, DEFAULT_QUERY_LENGTH, cap)
        self.doc_length = self._length("doc_length", doc_length, DEFAULT_DOC_LENGTH, cap)
        self.max_length = self.doc_length
        attr = _MLM_HEADS.get(type(self.encoder).__name__) if self.head != "lexical" else None
        self._mlm_head = getattr(self.encoder, attr, None) if attr else None
        for m in self._modules:
            m.eval().to(self.device)
        self._keep = keep.to(self.device)
        if self.precision != "fp32":   # the encoder's linear layers only: an MLM decoder shares the embeddings
            base = self.encoder.base_model if self.head != "lexical" else self.encoder
            _store_linear_weights(base, torch.bfloat16 if self.precision == "bf16" else torch.float16)

    # --- what the checkpoint fixes ---------------------------------------------------------------------------------

    def _default_head(self, path: str) -> str:
        from transformers import AutoConfig
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise _load_error(self.model_id, e) from e
        return "splade" if any(str(a).endswith("ForMaskedLM") for a in config.architectures or ()) else "lexical"

    def _max_positions(self) -> int:
        cap = getattr(self.tokenizer, "model_max_length", 512)
        cap = cap if isinstance(cap, int) and cap < 100_000 else 512
        positions = getattr(self.encoder.config, "max_position_embeddings", None)
        return min(cap, positions) if isinstance(positions, int) and positions > 0 else cap

    def _length(self, name: str, value, default: int, cap: int) -> int:
        least = self.tokenizer.num_special_tokens_to_add() + 1
        if value is None:
            return min(default, cap)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least} (special tokens and one token), got {value!r}")
        if value > cap:
            log.warning("%s=%d is more than %r takes (%d positions); using %d", name, value, self.model_id, cap, cap)
        return min(value, cap)

    def settings(self) -> dict:
        """Every setting that changes the output, as stored in an index manifest."""
        return {"model": self.model_id, "fingerprint": self.fingerprint, "head": self.head,
                "vocab_size": self.vocab_size, "query_length": self.query_length, "doc_length": self.doc_length,
                "query_top_k": self.query_top_k, "doc_top_k": self.doc_top_k, "min_weight": self.min_weight,
                "scale": self.scale}

    def refresh_fingerprint(self) -> str:
        """Re-digest the weights (after training the encoder or the lexical head in place), and return it."""
        self.fingerprint = _fingerprint(self._modules)
        return self.fingerprint

    # --- encoding --------------------------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], role: str = "doc", *, progress: bool | None = None,
               report_truncation: bool = True) -> list[dict[str, float]]:
        """Encode ``texts`` (``role`` ``"query"`` or ``"doc"``) into one ``{term: weight}`` dict each, in input
        order, heaviest term first (Python floats, or ints with ``scale``). A text that is not a string, or is
        blank, raises ValueError naming its position; texts longer than the role's length are truncated and
        counted in one warning per call (or, with ``report_truncation=False``, when :meth:`report_truncation` is
        called)."""
        return [self.to_dict(tw) for tw in self.encode_arrays(texts, role, progress=progress,
                                                               report_truncation=report_truncation)]

    def encode_arrays(self, texts: Sequence[str], role: str = "doc", *, progress: bool | None = None,
                      report_truncation: bool = True) -> list[TermWeights]:
        """As :meth:`encode`, as :class:`TermWeights` (token ids ascending and their weights): for sparse indexes."""
        return self._encode_all(texts, role, progress, report_truncation)

    def to_dict(self, tw: TermWeights) -> dict:
        """``{term: weight}`` of one text, heaviest first (ties by token id); terms are the tokenizer's pieces."""
        order = np.argsort(-tw.weights, kind="stable")
        return dict(zip(self.terms[tw.ids[order]].tolist(), tw.weights[order].tolist()))

    def report_truncation(self, role: str = "doc") -> None:
        """Log how many inputs of ``role`` were truncated since the last report (nothing if none were)."""
        truncated, total = self._unreported.pop(role, (0, 0))
        if truncated:
            name = "query_length" if role == "query" else "doc_length"
            advice = f"raise {name}=" if role == "query" else _PASSAGING.replace("max_length=", f"{name}=")
            log.warning("%d of %d %s were longer than %s=%d tokens and were truncated; %s", truncated, total,
                        self.role_names.get(role, role), name, getattr(self, name), advice)

    def _tokenize(self, chunk: list, role: str) -> Tokenized:
        return tokenize(self.tokenizer, chunk, self.query_length if role == "query" else self.doc_length)

    def dense_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The head's float32 ``(batch, vocab_size)`` weights of a padded batch (``input_ids``, ``attention_mask``),
        before special tokens are removed and before pruning. Differentiable when called with gradients on."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        zeros = torch.zeros(len(ids), self.vocab_size, dtype=torch.float32, device=ids.device)
        if self.head == "lexical":
            states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            per_token = torch.relu(self.lexical_head(states).squeeze(-1).float()) * mask
            return zeros.scatter_reduce(1, ids, per_token, reduce="amax", include_self=True)
        out = []
        for rows, logits in self._mlm_logits(ids, mask):
            m = mask[rows].bool()
            if self.head == "splade":   # max before log1p(relu(.)): the same, as both are non-decreasing
                masked = logits.masked_fill_(~m[..., None], 0) if not torch.is_grad_enabled() \
                    else logits.masked_fill(~m[..., None], 0)
                out.append(torch.log1p(torch.relu(masked.amax(dim=1).float())))
            else:
                own = logits.gather(2, ids[rows, :, None]).squeeze(-1).float()
                out.append(zeros[rows].scatter_reduce(1, ids[rows], torch.log1p(torch.relu(own)) * m, reduce="amax",
                                                      include_self=True))
        return torch.cat(out)

    def _mlm_logits(self, ids: torch.Tensor, mask: torch.Tensor):
        """``(rows, logits)`` over the batch, a few rows at a time when the MLM head is a module of its own, so the
        ``(rows, length, vocab)`` logits held stay near ``HEAD_POSITIONS`` positions."""
        if self._mlm_head is None:
            yield slice(None), self.encoder(input_ids=ids, attention_mask=mask).logits
            return
        states = self.encoder.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        step = max(1, HEAD_POSITIONS // ids.shape[1])
        for start in range(0, len(ids), step):
            yield slice(start, start + step), self._mlm_head(states[start:start + step])

    def _forward(self, batch: dict[str, torch.Tensor], role: str) -> list[TermWeights]:
        return self._sparsify(self.dense_weights(batch), role)

    def _sparsify(self, w: torch.Tensor, role: str) -> list[TermWeights]:
        """Special tokens out, then ``min_weight``, top-k (ties to the lower id) and ``scale``, on the device; only
        the kept (row, id, weight) triples travel to numpy."""
        w = w * self._keep
        if self.min_weight:
            w = w.masked_fill(w < self.min_weight, 0)
        k = self.query_top_k if role == "query" else self.doc_top_k
        if k is not None and k < w.shape[1]:
            threshold = w.topk(k, dim=1).values[:, -1:]
            above, tied = w > threshold, w == threshold
            room = k - above.sum(dim=1, keepdim=True)
            w = w * (above | (tied & (tied.cumsum(dim=1) <= room)))
        rows, ids = w.nonzero(as_tuple=True)
        values = w[rows, ids].cpu().numpy()
        rows, ids = rows.cpu().numpy(), ids.cpu().numpy().astype(np.int32)
        if self.scale is not None:
            values = np.rint(values.astype(np.float64) * self.scale).astype(np.int32)
            nonzero = values > 0
            rows, ids, values = rows[nonzero], ids[nonzero], values[nonzero]
        bounds = np.searchsorted(rows, np.arange(len(w) + 1))
        return [TermWeights(ids[a:b], values[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def __repr__(self) -> str:
        return f"SpladeModel({self.model_id!r}, head={self.head!r}, precision={self.precision!r})"
