"""Cross-encoder family: a (query, document) pair to one relevance score, over the shared encode loop.

Any Hugging Face sequence-classification checkpoint loads (``cross-encoder/ms-marco-*`` with one logit, two-class
heads such as monoBERT, ELECTRA rerankers). Pairs are tokenised together with ``truncation="only_second"``, so the
document is cut to fit ``max_length`` and the query never is; the shared loop sorts the pairs of a call by length,
so the pairs of many queries share batches.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import torch

from .bi_encoder_model import _fingerprint, _load_error, _store_linear_weights
from .checkpoint_config import _read_json
from .default_model import resolve_model
from .encoder_base import _PASSAGING, EncoderModel, Tokenized

__all__ = ["CrossEncoderModel", "ACTIVATIONS"]

log = logging.getLogger("pyterrier_dense")

ACTIVATIONS = (None, "sigmoid", "softmax")
# model types whose position ids start after the padding index, so max_position_embeddings overstates the room
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer", "bart")


def _load(name_or_path: str, new_head: bool = False):
    """Tokenizer, sequence-classification model in float32 and the names of its newly initialised weights; an error
    when any weight is missing from the checkpoint (a plain encoder has no trained head, which would be randomly
    initialised) unless ``new_head`` asks for a fresh one-logit head to train."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    try:
        config = AutoConfig.from_pretrained(name_or_path, **({"num_labels": 1} if new_head else {}))
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        from transformers.utils import logging as hf_logging
        verbosity = hf_logging.get_verbosity()
        if new_head:   # the missing head is what was asked for: transformers' report of it is noise
            hf_logging.set_verbosity_error()
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, config=config, dtype=torch.float32, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
    except (OSError, ValueError) as e:
        raise _load_error(name_or_path, e) from e
    lacking = sorted(info["missing_keys"]) + sorted(k for k, *_ in info.get("mismatched_keys") or ())
    if new_head:
        body = [k for k in lacking if not k.startswith(("classifier", "score", "pre_classifier"))]
        if body:
            raise OSError(f"could not load {name_or_path!r} as the body of a new cross-encoder: {len(body)} of its "
                          f"encoder weights are missing (e.g. {body[0]!r})")
        if not lacking:
            log.warning("%r already has a classification head; new_head=True keeps it", name_or_path)
    elif lacking:
        raise OSError(f"could not load cross-encoder {name_or_path!r}: {len(lacking)} of its weights are missing or "
                      f"of another shape (e.g. {lacking[0]!r}); they would be randomly initialised. Is it a "
                      "sequence-classification (re-ranker) checkpoint? To train a new re-ranker from a plain "
                      "encoder, pass new_head=True")
    return tokenizer, model, frozenset(lacking)


def _checkpoint_max_length(path: str, tokenizer, config) -> int | None:
    """What the checkpoint says: sentence-transformers' ``max_seq_length`` or ``sentence_transformers.max_length``
    in config.json (older CrossEncoder saves), else the tokenizer's ``model_max_length`` (what CrossEncoder 6.x
    saves) when it is a real limit."""
    st = getattr(config, "sentence_transformers", None)
    for value in ((_read_json(path, "sentence_bert_config.json") or {}).get("max_seq_length"),
                  st.get("max_length") if isinstance(st, dict) else None,
                  getattr(tokenizer, "model_max_length", None)):
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000:
            return value
    return None


def _position_limit(config) -> int | None:
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if config.model_type in _OFFSET_POSITIONS:
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    return positions


class CrossEncoderModel(EncoderModel):
    """Scores (query, document) pairs with a sequence-classification checkpoint.

    The score of a pair is the logit of class ``label`` (by default the only logit of a one-logit head, else index 1,
    the positive class of a two-class head), passed through ``activation``: ``None`` (the raw logit, the default),
    ``"sigmoid"``, or ``"softmax"`` (the probability of ``label`` over all classes). The activation is never guessed
    from the checkpoint. ``max_length`` defaults to the checkpoint's own (see :func:`_checkpoint_max_length`),
    capped at its position embeddings. ``precision``, ``batch_size``, ``device`` and ``verbose`` are as for
    :class:`~pyterrier_dense.models.BiEncoderModel`; ``precision="fp32"`` gives the logits of a plain transformers
    forward pass.

    Example::

        model = CrossEncoderModel("cross-encoder/ms-marco-MiniLM-L-6-v2")
        scores = model.score([("what is a gene?", "A gene is a unit of heredity."), ("what is a gene?", "Paris")])
        # float32 array of 2 raw logits, the first far higher
    """

    pairs = True
    role_names = {"pair": "pairs"}

    def __init__(self, model: str, *, activation: str | None = None, label: int | None = None,
                 max_length: int | None = None, new_head: bool = False, batch_size: int | None = None,
                 device: str | torch.device | None = None, precision: str = "auto", verbose: bool = True):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)):
            raise ValueError(f"max_length must be an int, got {max_length!r}")
        super().__init__(batch_size=batch_size, device=device, precision=precision, verbose=verbose)
        self.model_id = str(model)
        path = resolve_model(self.model_id)
        self.tokenizer, self.model, self.new_parameters = _load(path, new_head)   # (new: the untrained head's)
        self.fingerprint = _fingerprint([self.model])  # before the precision cast below
        self.num_labels = int(self.model.config.num_labels)
        self.label = self._check_label(label)
        if activation == "softmax" and self.num_labels == 1:
            raise ValueError(f"{self.model_id!r} has a one-logit head, whose softmax is always 1; use "
                             "activation='sigmoid' or None")
        self.activation = activation
        self._with_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        self.max_length = self._check_max_length(max_length, _checkpoint_max_length(path, self.tokenizer,
                                                                                      self.model.config))
        self.model.eval().to(self.device)
        if self.precision != "fp32":
            _store_linear_weights(self.model, torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def _check_label(self, label) -> int:
        if label is None:
            if self.num_labels > 2:
                raise ValueError(f"{self.model_id!r} has {self.num_labels} classes "
                                 f"({self.model.config.id2label}); pass label= the index of the relevant one")
            return 0 if self.num_labels == 1 else 1
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < self.num_labels:
            raise ValueError(f"label must be a class index in [0, {self.num_labels}) for {self.model_id!r}, "
                             f"got {label!r}")
        return label

    def _check_max_length(self, given: int | None, from_checkpoint: int | None) -> int:
        limit = _position_limit(self.model.config)
        value = given or from_checkpoint or limit or 512
        if limit is not None and value > limit:
            if given:
                log.warning("max_length=%d is more than %r has positions for; using %d", given, self.model_id, limit)
            value = limit
        if value < self._specials + 2:
            raise ValueError(f"max_length must leave room for the special tokens, one query and one document token "
                             f"(>= {self._specials + 2}), got {value}")
        return value

    def settings(self) -> dict:
        """Every setting that changes the scores."""
        return {"model": self.model_id, "fingerprint": self.fingerprint, "max_length": self.max_length,
                "activation": self.activation, "label": self.label}

    def score(self, pairs: Sequence[tuple[str, str]], *, progress: bool | None = None,
              report_truncation: bool = True) -> np.ndarray:
        """Scores of ``(query, document)`` pairs as a float32 array, in input order.

        A pair that is not two non-empty strings raises ValueError naming its position, and so does a query too long
        to leave room for any document token. Documents cut to fit ``max_length`` are counted in one warning per
        call (or, with ``report_truncation=False``, when :meth:`report_truncation` is called)."""
        return self._encode_all(pairs, "pair", progress, report_truncation)

    def report_truncation(self, role: str = "pair") -> None:
        """Log how many pairs had their document truncated since the last report (nothing if none had)."""
        truncated, total = self._unreported.pop(role, (0, 0))
        if truncated:
            log.warning("%d of %d (query, document) pairs were longer than max_length=%d tokens and their documents "
                        "were truncated; %s", truncated, total, self.max_length,
                        _PASSAGING.replace(">> enc", ">> cross_encoder"))

    def _check_query_lengths(self, queries: list[str]) -> None:
        unique = list(dict.fromkeys(queries))
        lengths = [len(ids) for ids in self.tokenizer(unique, add_special_tokens=False)["input_ids"]]
        for query, n in zip(unique, lengths):
            if n + self._specials >= self.max_length:
                shown = query if len(query) <= 80 else query[:77] + "..."
                raise ValueError(f"the query {shown!r} has {n} tokens, which with {self._specials} special tokens "
                                 f"leaves no room for a document within max_length={self.max_length}; shorten the "
                                 "query or raise max_length=")

    def _tokenize(self, chunk: list, role: str) -> Tokenized:
        queries = [p[0] for p in chunk]
        self._check_query_lengths(queries)
        enc = self.tokenizer(queries, [p[1] for p in chunk], truncation="only_second", max_length=self.max_length,
                             return_attention_mask=False, return_token_type_ids=self._with_token_types)
        names = ("input_ids", "token_type_ids") if self._with_token_types else ("input_ids",)
        truncated = sum(1 for e in enc.encodings if e.overflowing) if enc.encodings is not None else 0
        return Tokenized({name: enc[name] for name in names},
                         {"input_ids": self.tokenizer.pad_token_id or 0,
                          "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0) or 0}, truncated)

    def _forward(self, batch: dict[str, torch.Tensor], role: str) -> np.ndarray:
        logits = self.model(**batch).logits.float()
        if self.activation == "softmax":
            return torch.softmax(logits, dim=-1)[:, self.label].cpu().numpy()
        scores = logits[:, self.label]
        return (torch.sigmoid(scores) if self.activation == "sigmoid" else scores).cpu().numpy()

    def _new_output(self, n: int, role: str) -> np.ndarray:
        return np.empty(n, dtype=np.float32)

    # --- training ---------------------------------------------------------------------------------------------------

    def towers(self) -> list[torch.nn.Module]:
        """The transformer whose weights training updates."""
        return [self.model]

    def pair_logits(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Training scores of ``pairs`` as a float tensor that carries gradients: the logit of ``label`` for a
        one-logit head, its log-probability among the classes otherwise (both order pairs as :meth:`score` does)."""
        logits = self.model(**self._training_batch(pairs, "pair")).logits.float()
        return logits[:, 0] if self.num_labels == 1 else torch.log_softmax(logits, dim=-1)[:, self.label]

    def refresh_fingerprint(self) -> str:
        """Re-digest the weights after training them in place."""
        self.fingerprint = _fingerprint([self.model])
        return self.fingerprint

    def save(self, path: str | os.PathLike) -> str:
        """Write a Hugging Face sequence-classification directory (weights, tokenizer with ``model_max_length``) that
        this class and sentence-transformers' ``CrossEncoder`` load."""
        path = str(path)
        os.makedirs(path, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(path)
        return path

    def __repr__(self) -> str:
        return (f"CrossEncoderModel({self.model_id!r}, activation={self.activation!r}, label={self.label}, "
                f"max_length={self.max_length}, precision={self.precision!r})")
