"""Splade: the PyTerrier stage around a learned sparse encoder (``{term: weight}`` per text)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from ..models.splade_model import SpladeModel, TermWeights
from .bi_encoder import _loading_bars
from .columns import require_columns, stamp, stamp_records, texts_of
from .progress import show_progress
from .resume import skip_resumed
from .ranking import sort_and_rank

__all__ = ["Splade"]
_ROLE_METHODS = {"query": "query_encoder", "doc": "doc_encoder", "score": "scorer"}
PIPELINE_DOCS = 1024


class Splade(pt.Transformer):
    """Encodes queries and documents into ``{term: weight}`` dicts, or scores query/document pairs by their dot
    product.

    What it does depends on the columns it is given: ``query`` only adds ``query_toks``; ``text`` only adds
    ``toks``; both (a result frame) sets ``score`` and ``rank`` (text re-ranking, both sides encoded on the fly, each
    distinct text once).
    The role methods fix it whatever the columns. Queries are de-duplicated before encoding; a query left with no
    weighted term (only special tokens, or everything pruned away) is an error naming its qid.

    Example::

        splade = ptd.Splade("naver/splade-cocondenser-ensembledistil")
        rerank = bm25 % 100 >> collection.text_loader() >> splade.scorer()

    With an impact index, quantise (``scale=100``) and index the documents' ``toks`` (pyterrier-pisa)::

        splade = ptd.Splade(path, scale=100, doc_top_k=256)
        pisa_index = pyterrier_pisa.PisaIndex("scifact.pisa-splade", stemmer="none")
        (splade.doc_encoder() >> pisa_index.toks_indexer()).index(collection.corpus_iter())
        retrieve = splade.query_encoder() >> pisa_index.quantized()

    or with this package's own sparse index, which checks that queries and documents share one encoder::

        index = ptd.SparseIndex("scifact.splade")
        (splade.doc_encoder() >> index.indexer()).index(collection.corpus_iter())
        retrieve = splade.query_encoder() >> index.retriever()

    Arguments after ``model`` go to :class:`~pyterrier_dense.models.SpladeModel` (head, query_length, doc_length,
    query_top_k, doc_top_k, min_weight, scale, batch_size, device, precision, verbose).
    """

    def __init__(self, model, *, text_field: str = "text", **model_args):
        if isinstance(model, SpladeModel):
            if model_args:
                raise TypeError(f"model arguments {sorted(model_args)} cannot apply to an already loaded SpladeModel")
            self.model = model
        elif isinstance(model, str) or hasattr(model, "__fspath__"):
            with _loading_bars(show_progress(model_args.get("verbose", True))):
                self.model = SpladeModel(str(model), **model_args)
        else:
            raise TypeError(f"model must be a model name, a local path or a SpladeModel, got {type(model).__name__}")
        self.text_field, self.role = text_field, "auto"

    @property
    def batch_size(self) -> int:
        """Records per call on PyTerrier's indexing path (the length-sorting window there)."""
        return min(PIPELINE_DOCS, getattr(self.model, "chunk_size", PIPELINE_DOCS))

    # ---- roles -------------------------------------------------------------------------------------------------
    def query_encoder(self) -> "Splade":
        """Adds ``query_toks`` (even when the frame also has ``text``)."""
        return self._as("query")

    def doc_encoder(self) -> "Splade":
        """Adds ``toks`` (even when the frame also has ``query``)."""
        return self._as("doc")

    def scorer(self) -> "Splade":
        """Scores ``query`` + ``text`` rows by the dot product of their weights, encoding both on the fly."""
        return self._as("score")

    def _as(self, role: str) -> "Splade":
        stage = object.__new__(type(self))
        stage.__dict__.update(self.__dict__, role=role)
        return stage

    def _mode(self, columns) -> str:
        if self.role != "auto":
            return self.role
        has_query, has_text = "query" in columns, self.text_field in columns
        if has_query or has_text:
            return "score" if has_query and has_text else "query" if has_query else "doc"
        raise ValueError(f"Splade needs a 'query' column (to add query_toks), a {self.text_field!r} column (to add "
                         f"toks), or both (to score); got {list(columns)}")

    # ---- transforms -----------------------------------------------------------------------------------------------
    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        mode = self._mode(inp.columns)
        return {"query": self._encode_queries, "doc": self._encode_docs, "score": self._score}[mode](inp)

    def transform_iter(self, inp):
        # indexing path (Compose.index hands us lists of records): no DataFrame round trip
        records = list(inp)
        if records and isinstance(records[0], dict) and self._mode(records[0].keys()) == "doc":
            records = skip_resumed(records, self)   # documents an interrupted build being resumed already holds
            if not records:
                return []
        if not records:
            return []
        if self._mode(records[0].keys()) != "doc":
            return self.transform(pd.DataFrame(records)).to_dict(orient="records")
        frame = pd.DataFrame({"docno": [r.get("docno") for r in records],
                              self.text_field: [r.get(self.text_field) for r in records]})
        toks = self.model.encode(texts_of(frame, self.text_field, ("docno",), "Splade"), role="doc",
                                 report_truncation=False, progress=self._progress())
        settings = self.model.settings()   # travels with each record: indexers record it in their manifest
        return stamp_records(records, settings, {"toks": toks})

    def _progress(self) -> bool | None:
        return None if show_progress() else False

    def _stamped(self, out: pd.DataFrame, column: str) -> pd.DataFrame:
        return stamp(out, self.model.settings(), column)

    def _query_weights(self, inp: pd.DataFrame, stage: str) -> tuple[list[TermWeights], np.ndarray]:
        """Weights of the distinct queries (in order of first appearance) and each row's index into them; a query
        with no weighted term is an error naming its qid."""
        queries = texts_of(inp, "query", ("qid",), "Splade")
        codes, unique = pd.factorize(pd.Series(queries, dtype=object))
        out = self.model.encode_arrays(list(unique), role="query", progress=self._progress())
        for i, tw in enumerate(out):
            if not len(tw.ids):
                row = int(np.argmax(codes == i))
                qid = inp["qid"].iloc[row] if "qid" in inp.columns else f"row {row}"
                raise ValueError(f"{stage}: the query of qid={qid!r} ({unique[i]!r}) has no term with a weight "
                                 f"(only special tokens, or all pruned: min_weight={self.model.min_weight}, "
                                 f"query_top_k={self.model.query_top_k}, scale={self.model.scale}); it cannot match "
                                 "any document")
        return out, codes

    def _encode_queries(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["query"], "Splade.query_encoder()")
        if not len(inp):
            return self._stamped(inp.assign(query_toks=pd.Series(dtype=object)), "query_toks")
        out, codes = self._query_weights(inp, "Splade.query_encoder()")
        toks = [self.model.to_dict(tw) for tw in out]
        return self._stamped(inp.assign(query_toks=[toks[c] for c in codes]), "query_toks")

    def _encode_docs(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, [self.text_field], "Splade.doc_encoder()")
        inp = skip_resumed(inp, self)   # documents an interrupted build being resumed already holds
        if not len(inp):
            return self._stamped(inp.assign(toks=pd.Series(dtype=object)), "toks")
        toks = self.model.encode(texts_of(inp, self.text_field, ("docno",), "Splade"), role="doc",
                                 progress=self._progress())
        return self._stamped(inp.assign(toks=toks), "toks")

    def _score(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "query", self.text_field], "Splade.scorer()",
                        "Load document texts first, e.g. bm25 >> collection.text_loader() >> splade")
        if not len(inp):
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        texts = texts_of(inp, self.text_field, ("qid", "docno"), "Splade")
        queries, codes = self._query_weights(inp, "Splade.scorer()")
        doc_codes, unique_texts = pd.factorize(pd.Series(texts, dtype=object))   # a text is encoded once
        docs = self.model.encode_arrays(list(unique_texts), role="doc", progress=self._progress())
        scores = np.fromiter((_dot(queries[q], docs[d]) for q, d in zip(codes, doc_codes)), np.float64, len(texts))
        out = inp.drop(columns=[c for c in ("score", "rank") if c in inp.columns])
        return sort_and_rank(out.assign(score=scores))

    def transform_inputs(self):
        inputs = {"query": [["query"]], "doc": [[self.text_field]], "score": [["qid", "query", self.text_field]]}
        return inputs.get(self.role, [["query"], [self.text_field]])

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        added = {"query": ["query_toks"], "doc": ["toks"], "score": ["score", "rank"]}[self._mode(input_columns)]
        return [c for c in input_columns if c not in added] + added

    def __eq__(self, other) -> bool:
        return isinstance(other, Splade) and other.model is self.model and \
            (other.role, other.text_field) == (self.role, self.text_field)

    def __hash__(self) -> int:
        return hash((id(self.model), self.role, self.text_field))

    def __repr__(self) -> str:
        suffix = f".{_ROLE_METHODS[self.role]}()" if self.role in _ROLE_METHODS else ""
        return f"Splade({self.model.model_id!r}, head={self.model.head!r}){suffix}"


def _dot(q: TermWeights, d: TermWeights) -> float:
    """The dot product of two texts' weights (token ids ascending and unique in both).

    >>> _dot(TermWeights(np.array([1, 5]), np.array([0.5, 2.0])), TermWeights(np.array([5, 9]), np.array([3, 1])))
    6.0
    """
    _, qi, di = np.intersect1d(q.ids, d.ids, assume_unique=True, return_indices=True)
    return float(np.dot(q.weights[qi].astype(np.float64), d.weights[di].astype(np.float64)))
