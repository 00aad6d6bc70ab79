"""BiEncoder: the PyTerrier stage around a single-vector encoder."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from ..models.bi_encoder_model import BiEncoderModel
from ..models.default_model import DEFAULT_MODEL
from .ranking import sort_and_rank
from .columns import ENCODER_ATTR, require_columns, texts_of

__all__ = ["BiEncoder"]
_ROLE_METHODS = {"query": "query_encoder", "doc": "doc_encoder", "score": "text_scorer"}


class BiEncoder(pt.Transformer):
    """Encodes queries and documents into single vectors, or scores query/document pairs by their vectors.

    What it does depends on the columns it is given: ``query`` only adds ``query_vec``; ``text`` only adds
    ``doc_vec``; both ``query`` and ``text`` (a result frame) sets ``score`` and ``rank`` (text re-ranking).

    Example::

        enc = ptd.BiEncoder("sentence-transformers/all-MiniLM-L6-v2")
        (enc >> index.indexer()).index(collection.corpus_iter())
        dense = enc >> index.retriever(num_results=1000)
        rerank = bm25 >> collection.text_loader() >> enc

    Arguments after ``model`` are passed to :class:`~pyterrier_dense.models.BiEncoderModel` (pooling, normalize,
    query_prefix, doc_prefix, max_length, batch_size, device, precision, query_model, verbose).
    """

    def __init__(self, model: str | BiEncoderModel = DEFAULT_MODEL, *, text_field: str = "text", **model_args):
        if not isinstance(model, (str, BiEncoderModel)) and not hasattr(model, "__fspath__"):
            raise TypeError(f"model must be a model name, a local path or a BiEncoderModel, got {type(model).__name__}")
        self.model = model if isinstance(model, BiEncoderModel) else BiEncoderModel(model, **model_args)
        self.text_field = text_field
        self.role = "auto"

    @property
    def batch_size(self) -> int:
        """Records per call on PyTerrier's indexing path (``Compose.index`` batches by the largest ``batch_size``
        of a pipeline's stages): the model's length-sorting window, so ``enc >> index.indexer()`` sorts over it."""
        return getattr(self.model, "chunk_size", 4096)

    def query_encoder(self) -> "BiEncoder":
        """This encoder, restricted to adding ``query_vec`` (even when the frame also has ``text``)."""
        return self._as("query")

    def doc_encoder(self) -> "BiEncoder":
        """This encoder, restricted to adding ``doc_vec``."""
        return self._as("doc")

    def text_scorer(self) -> "BiEncoder":
        """This encoder, restricted to scoring ``query`` + ``text`` rows."""
        return self._as("score")

    def _as(self, role: str) -> "BiEncoder":
        stage = object.__new__(type(self))
        stage.__dict__.update(self.__dict__, role=role)
        return stage

    def _mode(self, columns) -> str:
        if self.role != "auto":
            return self.role
        has_query, has_text = "query" in columns, self.text_field in columns
        if has_query and has_text:
            return "score"
        if has_query:
            return "query"
        if has_text:
            return "doc"
        raise ValueError(f"BiEncoder needs a 'query' column (to add query_vec), a {self.text_field!r} column (to add "
                         f"doc_vec), or both (to score); got {list(columns)}")

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        mode = self._mode(inp.columns)
        if mode == "query":
            return self._encode_queries(inp)
        if mode == "doc":
            return self._encode_docs(inp)
        return self._score(inp)

    def transform_iter(self, inp):
        # indexing path (Compose.index hands us lists of records): avoid a DataFrame round trip
        records = list(inp)
        if not records or self._mode(records[0].keys()) != "doc":
            return self.transform(pd.DataFrame(records)).to_dict(orient="records")
        frame = pd.DataFrame({"docno": [r.get("docno") for r in records], self.text_field: [r.get(self.text_field) for r in records]})
        vecs = self.model.encode(texts_of(frame, self.text_field, ("docno",), "BiEncoder"), role="doc",
                                 report_truncation=False)  # the indexer reports once, at the end
        settings = self.model.settings()   # travels with each record: indexers record it in their manifest
        return [{**r, "doc_vec": v, ENCODER_ATTR: settings} for r, v in zip(records, vecs)]

    def _encode_queries(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["query"], "BiEncoder.query_encoder()")
        if not len(inp):
            return self._stamped(inp.assign(query_vec=pd.Series(dtype=object)))
        queries = texts_of(inp, "query", ("qid",), "BiEncoder")
        unique, codes = np.unique(np.array(queries, dtype=object), return_inverse=True)
        vecs = self.model.encode(unique.tolist(), role="query")
        return self._stamped(inp.assign(query_vec=list(vecs[codes.ravel()])))

    def _encode_docs(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, [self.text_field], "BiEncoder.doc_encoder()")
        if not len(inp):
            return self._stamped(inp.assign(doc_vec=pd.Series(dtype=object)))
        vecs = self.model.encode(texts_of(inp, self.text_field, ("docno",), "BiEncoder"), role="doc")
        return self._stamped(inp.assign(doc_vec=list(vecs)))

    def _stamped(self, out: pd.DataFrame) -> pd.DataFrame:
        """The frame, carrying this encoder's settings in ``attrs`` for index stages to check."""
        out.attrs[ENCODER_ATTR] = self.model.settings()
        return out

    def _score(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "query", self.text_field], "BiEncoder.text_scorer()",
                        "Load document texts first, e.g. bm25 >> collection.text_loader() >> enc")
        if not len(inp):
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        queries = texts_of(inp, "query", ("qid",), "BiEncoder")
        texts = texts_of(inp, self.text_field, ("qid", "docno"), "BiEncoder")
        unique_q, q_codes = np.unique(np.array(queries, dtype=object), return_inverse=True)
        qv = self.model.encode(unique_q.tolist(), role="query")
        dv = self.model.encode(texts, role="doc")
        scores = np.einsum("ij,ij->i", qv[q_codes.ravel()], dv)
        out = inp.drop(columns=[c for c in ("score", "rank") if c in inp.columns]).assign(score=scores.astype(np.float64))
        return sort_and_rank(out)

    def transform_inputs(self):
        inputs = {"query": [["query"]], "doc": [[self.text_field]], "score": [["qid", "query", self.text_field]]}
        return inputs.get(self.role, [["query"], [self.text_field]])

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        mode = self._mode(input_columns)
        added = {"query": ["query_vec"], "doc": ["doc_vec"], "score": ["score", "rank"]}[mode]
        return [c for c in input_columns if c not in added] + added

    def __eq__(self, other) -> bool:
        # the same model object in the same role: pt.Experiment(..., precompute_prefix=True) shares the work
        return isinstance(other, BiEncoder) and other.model is self.model and \
            (other.role, other.text_field) == (self.role, self.text_field)

    def __hash__(self) -> int:
        return hash((id(self.model), self.role, self.text_field))

    def __repr__(self) -> str:
        suffix = f".{_ROLE_METHODS[self.role]}()" if self.role in _ROLE_METHODS else ""
        return f"BiEncoder({self.model.model_id!r}){suffix}"
