"""ColBERT family: text to one L2-normalised vector per token (late interaction), over the shared encode loop.

Reads Stanford ColBERT checkpoints, PyLate / sentence-transformers ColBERT checkpoints and, zero-shot, any other
encoder (see :mod:`.colbert_checkpoint`). Queries get a marker after ``[CLS]`` and are padded to ``query_length``
with ``[MASK]`` (query augmentation: those positions are not attended to unless the checkpoint says so, but their
vectors are kept); documents get their marker and lose the vectors of the checkpoint's skiplist (punctuation) and of
padding. Documents can further be pruned: ``whole_word`` averages the sub-words of each word into one vector,
``drop_stopwords`` drops the vectors of stopwords and punctuation.
"""
from __future__ import annotations

import logging
import string
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .bi_encoder_model import _fingerprint, _load_error, _location, _model_class, _store_linear_weights
from .colbert_checkpoint import load_projection, read_colbert_checkpoint
from .default_model import resolve_model
from .encoder_base import _PASSAGING, EncoderModel, Tokenized, tokenize
from .stopwords import STOPWORDS

__all__ = ["ColBERTModel", "TokenVectors"]

log = logging.getLogger("pyterrier_dense")

_ZERO_SHOT_QUERY_LENGTH = 64


class TokenVectors(NamedTuple):
    """The vectors of one text: ``embs`` float32 (n_tokens, dim) with unit-norm rows (only the vectors that count,
    no padding), and ``ids`` int32 (n_tokens,), the token id of each row (a whole word's: its first sub-word's)."""
    embs: np.ndarray
    ids: np.ndarray


def _load_encoder(name_or_path: str, subfolder: str):
    """Tokenizer and transformer of a checkpoint, in float32; an error when any encoder weight is missing from it
    (it would be randomly initialised). A ColBERT projection stored beside the encoder is expected, not reported."""
    import transformers
    where, kwargs = _location(name_or_path, subfolder)
    try:
        config = transformers.AutoConfig.from_pretrained(where, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **kwargs)
        base = _model_class(name_or_path, config)
        if base is transformers.AutoModel:
            if type(config) not in transformers.MODEL_MAPPING:
                raise ValueError(f"transformers has no encoder for model type {config.model_type!r}")
            base = transformers.MODEL_MAPPING[type(config)]
        # the subclass only tells transformers what not to report: a ColBERT projection beside the encoder's weights
        # is expected, and the pooler is never used
        quiet = type(base.__name__, (base,), {"_keys_to_ignore_on_load_unexpected": [r"^linear\.", r"^residual\."],
                                              "_keys_to_ignore_on_load_missing": [r"^pooler\."]})
        model, info = quiet.from_pretrained(where, config=config, dtype=torch.float32, output_loading_info=True,
                                            **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error(name_or_path, e) from e
    lacking = sorted(info["missing_keys"]) + sorted(k for k, *_ in info.get("mismatched_keys") or ())
    if lacking:
        raise OSError(f"could not load encoder {name_or_path!r}: {len(lacking)} of its weights are missing or of "
                      f"another shape (e.g. {lacking[0]!r}); they would be randomly initialised")
    return tokenizer, model


def _is_stop(word: str) -> bool:
    word = word.strip().lower()
    return word in STOPWORDS or not any(c.isalnum() for c in word)


class ColBERTModel(EncoderModel):
    """Encodes texts into token vectors (one unit-norm vector per token) with a ColBERT-style checkpoint.

    ``layout`` is ``"colbert"`` (Stanford, e.g. ``colbert-ir/colbertv2.0``), ``"pylate"`` (PyLate /
    sentence-transformers ColBERT) or ``"zero_shot"`` (any other encoder: normalised last hidden states, no markers,
    expansion or projection). Lengths, markers, expansion and skiplist come from the checkpoint; ``query_length``,
    ``doc_length`` and ``query_augmentation`` given here override it. ``whole_word`` and ``drop_stopwords`` prune
    documents only. ``settings()`` lists everything that changes the vectors, for index manifests.

    Example::

        model = ColBERTModel("colbert-ir/colbertv2.0")
        q = model.encode(["what is a gene?"], role="query")[0]
        q.embs.shape, model.token_strings(q.ids)[:3]
    ((32, 128), ['[CLS]', '[unused0]', 'what'])
    """

    def __init__(self, model: str, *, query_length: int | None = None, doc_length: int | None = None,
                 query_augmentation: bool | None = None, whole_word: bool = False, drop_stopwords: bool = False,
                 batch_size: int | None = None, device: str | torch.device | None = None, precision: str = "auto",
                 verbose: bool = True):
        super().__init__(batch_size=batch_size, device=device, precision=precision, verbose=verbose)
        self.model_id = str(model)
        path = resolve_model(self.model_id)
        ckpt = read_colbert_checkpoint(path)
        self.layout = ckpt.layout
        self.tokenizer, self.encoder = _load_encoder(path, ckpt.transformer_path)
        self.projection = load_projection(path, ckpt)
        modules = [self.encoder] + ([self.projection] if self.projection is not None else [])
        self.fingerprint = _fingerprint(modules)  # before the precision cast below
        hidden = int(self.encoder.config.hidden_size)
        if self.projection is not None and self.projection[0].linear.in_features != hidden:
            raise ValueError(f"checkpoint {self.model_id!r}: its projection takes "
                             f"{self.projection[0].linear.in_features}-dimensional inputs but its encoder outputs "
                             f"{hidden}-dimensional token states")
        self.dim = hidden if self.projection is None else int(self.projection[-1].linear.out_features)
        self.vocab_size = len(self.tokenizer)
        self.query_marker, self.doc_marker = ckpt.query_marker, ckpt.doc_marker
        self._marker_ids = {"query": self._token_id(ckpt.query_marker, "query marker"),
                            "doc": self._token_id(ckpt.doc_marker, "document marker")}
        self.query_augmentation = bool(ckpt.query_augmentation if query_augmentation is None else query_augmentation)
        self.attend_to_expansion = self.query_augmentation and ckpt.attend_to_expansion
        self._expansion_id = self._expansion_token() if self.query_augmentation else None
        cap = self._max_positions()
        self.query_length = self._check_length("query_length", query_length or ckpt.query_length
                                               or min(_ZERO_SHOT_QUERY_LENGTH, cap), "query")
        self.doc_length = self._check_length("doc_length", doc_length or ckpt.doc_length or cap, "doc")
        self.max_length = self.doc_length
        self.skiplist = frozenset(self._skiplist(ckpt))
        self.whole_word, self.drop_stopwords = bool(whole_word), bool(drop_stopwords)
        if (self.whole_word or self.drop_stopwords) and not self.tokenizer.is_fast:
            raise ValueError("whole_word and drop_stopwords need a fast tokenizer (word boundaries), and "
                             f"{self.model_id!r} has a slow one")
        self._strip, self._lowercase = ckpt.strip_and_lowercase
        for m in modules:
            m.eval().to(self.device)
            if self.precision != "fp32":
                _store_linear_weights(m, torch.bfloat16 if self.precision == "bf16" else torch.float16)

    # --- what the checkpoint fixes ---------------------------------------------------------------------------------

    def _token_id(self, token: str | None, what: str) -> int | None:
        if token is None:
            return None
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or (tid == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token):
            raise ValueError(f"the {what} {token!r} of checkpoint {self.model_id!r} is not a token of its tokenizer")
        return int(tid)

    def _expansion_token(self) -> int:
        for tid in (self.tokenizer.mask_token_id, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id):
            if tid is not None:
                return int(tid)
        raise ValueError(f"query_augmentation pads queries with [MASK], and the tokenizer of {self.model_id!r} has "
                         "no mask, end or padding token; pass query_augmentation=False")

    def _max_positions(self) -> int:
        cap = getattr(self.tokenizer, "model_max_length", 512)
        cap = cap if isinstance(cap, int) and cap < 100_000 else 512
        positions = getattr(self.encoder.config, "max_position_embeddings", None)
        return min(cap, 512, positions) if isinstance(positions, int) and positions > 0 else min(cap, 512)

    def _check_length(self, name: str, value, role: str) -> int:
        least = self.tokenizer.num_special_tokens_to_add() + (self._marker_ids[role] is not None) + 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least} (special tokens, marker and one token), got {value!r}")
        return value

    def _skiplist(self, ckpt) -> set[int]:
        if ckpt.skip_punctuation:  # ColBERT: the first token of each punctuation character
            pieces = (self.tokenizer.encode(c, add_special_tokens=False) for c in string.punctuation)
            return {int(p[0]) for p in pieces if p}
        ids = (self.tokenizer.convert_tokens_to_ids(w) for w in ckpt.skiplist_words)  # PyLate: tokens as they are
        return {int(i) for i in ids if i is not None}

    def settings(self) -> dict:
        """Every setting that changes the vectors, as stored in an index manifest."""
        return {"model": self.model_id, "fingerprint": self.fingerprint, "dim": self.dim, "layout": self.layout,
                "query_length": self.query_length, "doc_length": self.doc_length, "query_marker": self.query_marker,
                "doc_marker": self.doc_marker, "query_augmentation": self.query_augmentation,
                "attend_to_expansion": self.attend_to_expansion, "skiplist": sorted(self.skiplist), "normalize": True,
                "whole_word": self.whole_word, "drop_stopwords": self.drop_stopwords}

    # --- encoding --------------------------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], role: str = "doc", *, progress: bool | None = None,
               report_truncation: bool = True) -> list[TokenVectors]:
        """Encode ``texts`` (``role`` ``"query"`` or ``"doc"``) into one :class:`TokenVectors` each, in input order.

        A text that is not a string, or is blank, raises ValueError naming its position. Queries longer than
        ``query_length`` and documents longer than ``doc_length`` tokens are truncated and counted in one warning per
        call (or, with ``report_truncation=False``, when :meth:`report_truncation` is called)."""
        return self._encode_all(texts, role, progress, report_truncation)

    def token_strings(self, ids) -> list[str]:
        """The token string of each id (``[CLS]``, ``[unused0]``, ``gene``, ``##s``, ...)."""
        return self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])

    def word_starts(self, ids) -> np.ndarray:
        """bool per token: True where the token begins a word (or is a special token), False for the continuation
        pieces of a word (WordPiece ``##s``; for SentencePiece and byte-level BPE vocabularies, pieces without the
        word-start mark)."""
        toks = self.token_strings(ids)
        special = set(self.tokenizer.all_special_tokens)
        prefix = _continuation_prefix(self.tokenizer)
        if prefix:
            return np.array([t in special or not t.startswith(prefix) for t in toks], dtype=bool)
        return np.array([t in special or t.startswith(("\u2581", "\u0120")) for t in toks], dtype=bool)

    def report_truncation(self, role: str = "doc") -> None:
        """Log how many inputs of ``role`` were truncated since the last report (nothing if none were)."""
        truncated, total = self._unreported.pop(role, (0, 0))
        if truncated:
            name = "query_length" if role == "query" else "doc_length"
            limit = self.query_length if role == "query" else self.doc_length
            advice = f"raise {name}=" if role == "query" else _PASSAGING.replace("max_length=", f"{name}=")
            log.warning("%d of %d %s were longer than %s=%d tokens and were truncated; %s", truncated, total,
                        self.role_names.get(role, role), name, limit, advice)

    def _prepare(self, text: str) -> str:
        text = text.strip() if self._strip else text
        return text.lower() if self._lowercase else text

    def _tokenize(self, chunk: list, role: str) -> Tokenized:
        texts = [self._prepare(t) for t in chunk]
        marker = self._marker_ids[role]
        length = self.query_length if role == "query" else self.doc_length
        room = length - (marker is not None)  # the marker is inserted after tokenisation
        tok = tokenize(self.tokenizer, texts, room)
        rows = tok.ids["input_ids"]
        if marker is not None:
            rows = [row[:1] + [marker] + row[1:] for row in rows]
        columns = {"input_ids": rows}
        if role == "query":
            if self.query_augmentation:
                columns["attend"] = [[1] * len(r) + [int(self.attend_to_expansion)] * (length - len(r)) for r in rows]
                columns["input_ids"] = [r + [self._expansion_id] * (length - len(r)) for r in rows]
            columns["slot"] = [list(range(len(r))) for r in columns["input_ids"]]
        else:
            columns["slot"] = self._doc_slots(texts, rows, room, marker is not None)
        return Tokenized(columns, {**tok.pad_ids, "attend": 0, "slot": -1}, tok.truncated)

    def _doc_slots(self, texts: list[str], rows: list[list[int]], room: int, marked: bool) -> list[list[int]]:
        """For each token of each document, the output row its vector goes to (-1: dropped). Skiplist tokens are
        dropped; with ``drop_stopwords`` so are stopwords and punctuation; with ``whole_word`` the sub-words of a word
        share one row. Special tokens and markers always keep a row of their own; a document keeps at least one."""
        words = None
        if self.whole_word or self.drop_stopwords:
            words = self.tokenizer(texts, truncation=True, max_length=room, return_offsets_mapping=True,
                                   return_attention_mask=False)
        out = []
        for i, row in enumerate(rows):
            word_ids, spans = [None] * len(row), {}
            if words is not None:
                word_ids = list(words.word_ids(i))
                for w, (start, end) in zip(word_ids, words["offset_mapping"][i]):
                    if w is not None:
                        s, e = spans.get(w, (start, end))
                        spans[w] = (min(s, start), max(e, end))
                if marked:
                    word_ids.insert(1, None)
            slots, seen = [], {}
            for j, (tid, w) in enumerate(zip(row, word_ids)):
                stop = w is not None and self.drop_stopwords and _is_stop(texts[i][slice(*spans[w])])
                if tid in self.skiplist or stop:
                    slots.append(-1)
                    continue
                key = ("word", w) if w is not None and self.whole_word else j
                slots.append(seen.setdefault(key, len(seen)))
            if not seen:
                slots[0] = 0
            out.append(slots)
        return out

    def _forward(self, batch: dict[str, torch.Tensor], role: str) -> list[TokenVectors]:
        slots = batch.pop("slot").cpu().numpy()
        mask = batch.pop("attend", batch["attention_mask"])
        states = self.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        if self.projection is not None:
            states = self.projection(states)
        vecs = torch.nn.functional.normalize(states.float(), dim=-1).cpu().numpy()
        return [_gather(v, ids, s) for v, ids, s in zip(vecs, batch["input_ids"].cpu().numpy(), slots)]

    def __repr__(self) -> str:
        return f"ColBERTModel({self.model_id!r}, layout={self.layout!r}, dim={self.dim}, precision={self.precision!r})"


def _continuation_prefix(tokenizer) -> str | None:
    """The prefix that marks a word's continuation pieces (``##`` for WordPiece), None for vocabularies that mark
    word starts instead."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    prefix = getattr(model, "continuing_subword_prefix", None)
    if prefix:
        return prefix
    return "##" if type(tokenizer).__name__.startswith(("Bert", "DistilBert", "Electra")) else None


def _gather(vecs: np.ndarray, ids: np.ndarray, slots: np.ndarray) -> TokenVectors:
    """Rows of one text by slot: kept as they are, or summed and re-normalised where several tokens share a slot."""
    keep = slots >= 0
    vecs, ids, slots = vecs[keep], ids[keep], slots[keep]
    _, first = np.unique(slots, return_index=True)
    if len(first) < len(slots):
        summed = np.zeros((len(first), vecs.shape[1]), dtype=np.float32)
        np.add.at(summed, slots, vecs)
        vecs = summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)
    return TokenVectors(np.ascontiguousarray(vecs, dtype=np.float32), ids[first].astype(np.int32))
