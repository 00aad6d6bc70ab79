"""ColBERT: the PyTerrier stage around a late-interaction (token vectors + MaxSim) encoder."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from ..indexes.maxsim import maxsim_pairs
from ..models.colbert_model import ColBERTModel
from .bi_encoder import _loading_bars
from .columns import require_columns, stamp, stamp_records, texts_of
from .progress import show_progress
from .query_pruning import PRUNE_BY, coverage_choice, icf_choice, stand_in_weights
from .resume import skip_resumed
from .ranking import sort_and_rank

__all__ = ["ColBERT"]
_ROLE_METHODS = {"query": "query_encoder", "doc": "doc_encoder", "score": "scorer"}
PIPELINE_DOCS = 512


class ColBERT(pt.Transformer):
    """Encodes queries and documents into token vectors, or scores query/document pairs by MaxSim.

    What it does depends on the columns it is given: ``query`` only adds ``query_embs`` (one float32 matrix per
    query) and ``query_toks`` (its tokens); ``text`` only adds ``doc_embs`` and ``doc_token_ids``; both (a result
    frame) sets ``score`` and ``rank`` (text re-ranking, candidates encoded on the fly).

    Example::

        colbert = ptd.ColBERT("colbert-ir/colbertv2.0")     # or a PyLate checkpoint, or any encoder (zero-shot)
        rerank = bm25 % 100 >> collection.text_loader() >> colbert
        index = ptd.ColBERTIndex("scifact.colbert")
        (colbert >> index.indexer()).index(collection.corpus_iter())
        e2e = colbert.query_encoder() >> index.retriever(num_results=100)
        pruned = colbert.query_encoder(prune_to=8, frequencies=index) >> index.retriever()

    Arguments after ``model`` go to :class:`~pyterrier_dense.models.ColBERTModel` (query_length, doc_length,
    query_augmentation, whole_word, drop_stopwords, batch_size, device, precision, verbose).
    """

    def __init__(self, model, *, text_field: str = "text", **model_args):
        if isinstance(model, ColBERTModel):
            self.model = model
        elif isinstance(model, str) or hasattr(model, "__fspath__"):
            with _loading_bars(show_progress(model_args.get("verbose", True))):
                self.model = ColBERTModel(str(model), **model_args)
        else:
            raise TypeError(f"model must be a model name, a local path or a ColBERTModel, got {type(model).__name__}")
        self.text_field, self.role = text_field, "auto"
        self.prune_to, self.frequencies, self.prune_by = None, None, "coverage"

    @property
    def batch_size(self) -> int:
        """Records per call on PyTerrier's indexing path (the length-sorting window there): 512 documents, whose
        token matrices take about 170 MB at 220 tokens x 384 dimensions -- a bi-encoder's 4,096 would take 1.4 GB."""
        return min(PIPELINE_DOCS, getattr(self.model, "chunk_size", PIPELINE_DOCS))

    # ---- roles -------------------------------------------------------------------------------------------------
    def query_encoder(self, *, prune_to: int | None = None, frequencies=None,
                      prune_by: str = "coverage") -> "ColBERT":
        """Adds ``query_embs`` and ``query_toks``. ``prune_to=k`` keeps k of a query's content tokens, plus [CLS],
        [SEP] and the marker ([MASK] expansions and punctuation are dropped), using the inverse collection
        frequencies (ICF) of ``frequencies`` (a :class:`ColBERTIndex`, or ``(counts, total)``).
        ``prune_by="coverage"`` (the default) keeps the k tokens whose vectors best stand in for the others
        (ICF-weighted) and scales each kept vector by the number of tokens it stands for; ``prune_by="icf"`` keeps
        the k of highest ICF (Tonellotto & Macdonald, 2021), unweighted. Details in
        :mod:`pyterrier_dense.stages.query_pruning`::

            pruned = colbert.query_encoder(prune_to=8, frequencies=index) >> index.retriever(num_results=100)
        """
        stage = self._as("query")
        if prune_to is not None:
            if isinstance(prune_to, bool) or not isinstance(prune_to, int) or prune_to < 1:
                raise ValueError(f"prune_to must be an int >= 1 (query tokens kept), got {prune_to!r}")
            if frequencies is None:
                raise ValueError("prune_to needs collection frequencies: pass frequencies=<the ColBERTIndex>")
        if prune_by not in PRUNE_BY:
            raise ValueError(f"prune_by must be one of {PRUNE_BY}, got {prune_by!r}")
        stage.prune_to, stage.frequencies, stage.prune_by = prune_to, frequencies, prune_by
        return stage

    def doc_encoder(self) -> "ColBERT":
        """Adds ``doc_embs`` and ``doc_token_ids`` (even when the frame also has ``query``)."""
        return self._as("doc")

    def scorer(self) -> "ColBERT":
        """Scores ``query`` + ``text`` rows by MaxSim, encoding both on the fly."""
        return self._as("score")

    def _as(self, role: str) -> "ColBERT":
        stage = object.__new__(type(self))
        stage.__dict__.update(self.__dict__, role=role, prune_to=None, frequencies=None, prune_by="coverage")
        return stage

    def _mode(self, columns) -> str:
        if self.role != "auto":
            return self.role
        has_query, has_text = "query" in columns, self.text_field in columns
        if has_query or has_text:
            return "score" if has_query and has_text else "query" if has_query else "doc"
        raise ValueError(f"ColBERT needs a 'query' column (to add query_embs), a {self.text_field!r} column (to add "
                         f"doc_embs), or both (to score); got {list(columns)}")

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
        if not records or self._mode(records[0].keys()) != "doc":
            return self.transform(pd.DataFrame(records)).to_dict(orient="records")
        frame = pd.DataFrame({"docno": [r.get("docno") for r in records],
                              self.text_field: [r.get(self.text_field) for r in records]})
        out = self.model.encode(texts_of(frame, self.text_field, ("docno",), "ColBERT"), role="doc",
                                report_truncation=False, progress=self._progress())
        settings = self.model.settings()
        return stamp_records(records, settings, {"doc_embs": [o.embs for o in out],
                                                 "doc_token_ids": [o.ids for o in out]})

    def _progress(self) -> bool | None:
        return None if show_progress() else False

    def _stamped(self, out: pd.DataFrame, column: str) -> pd.DataFrame:
        return stamp(out, self.model.settings(), column)

    def _query_tokens(self, queries: list[str], qids: list) -> list:
        """TokenVectors of distinct queries, pruned when asked."""
        out = self.model.encode(queries, role="query", progress=self._progress())
        if self.prune_to is not None:   # the collection's counts and the tokenizer's ids, once for the frame
            frequencies, ids = _frequencies(self.frequencies), self._structural_ids()
            out = [self._prune(o, qid, frequencies, ids) for o, qid in zip(out, qids)]
        return out

    def _prune(self, tv, qid, frequencies: tuple[np.ndarray, int], ids: tuple[np.ndarray, np.ndarray]):
        """Keep ``prune_to`` content tokens (see :mod:`.query_pruning`) plus the structural tokens ([CLS], [SEP],
        markers: on SciFact zero-shot, keeping them gives 0.683 nDCG@10 at 8 ICF tokens against 0.665 without).
        [MASK] expansions and skiplist tokens (punctuation), whose collection frequency of 0 would rank them
        first, are neither kept nor stood in for."""
        (counts, total), (structural, dropped) = frequencies, ids
        is_structural = np.isin(tv.ids, structural)
        content = np.flatnonzero(~is_structural & ~np.isin(tv.ids, dropped))
        if not len(content):
            raise ValueError(f"ColBERT.query_encoder(prune_to={self.prune_to}): the query of qid={qid!r} has no "
                             "token left to keep (only special tokens, punctuation or padding)")
        if self.prune_by == "icf":
            words = np.cumsum(self.model.word_starts(tv.ids))[content]
            best = content[icf_choice(tv.ids[content], words, counts, self.prune_to)]
        else:
            best = content[coverage_choice(tv.embs[content], tv.ids[content], counts, total, self.prune_to)]
        keep = np.sort(np.concatenate([np.flatnonzero(is_structural), best]))
        embs = tv.embs[keep]
        if self.prune_by == "coverage":
            embs = embs * stand_in_weights(embs, tv.embs[np.setdiff1d(content, best)])[:, None]
        return type(tv)(embs, tv.ids[keep])

    def _structural_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids pruning always keeps (special tokens and markers but [MASK]) and ids it never keeps ([MASK]
        expansions, and what documents drop: the skiplist)."""
        tok = self.model.tokenizer
        mask = {tok.mask_token_id} - {None}
        keep = set(tok.all_special_ids) - mask
        for marker in (self.model.settings().get("query_marker"), self.model.settings().get("doc_marker")):
            if marker:
                keep.add(tok.convert_tokens_to_ids(marker))
        drop = mask | set(getattr(self.model, "skiplist", ()))
        return np.array(sorted(keep), dtype=np.int64), np.array(sorted(drop), dtype=np.int64)

    def _encode_queries(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["query"], "ColBERT.query_encoder()")
        if not len(inp):
            return self._stamped(inp.assign(query_embs=pd.Series(dtype=object), query_toks=pd.Series(dtype=object)),
                                "query_embs")
        queries = texts_of(inp, "query", ("qid",), "ColBERT")
        unique, first, codes = np.unique(np.array(queries, dtype=object), return_index=True, return_inverse=True)
        qids = inp["qid"].to_numpy()[first] if "qid" in inp.columns else first
        out = self._query_tokens(unique.tolist(), list(qids))
        toks = [self.model.token_strings(o.ids) for o in out]
        codes = codes.ravel()
        return self._stamped(inp.assign(query_embs=[out[c].embs for c in codes], query_toks=[toks[c] for c in codes]),
                             "query_embs")

    def _encode_docs(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, [self.text_field], "ColBERT.doc_encoder()")
        inp = skip_resumed(inp, self)   # documents an interrupted build being resumed already holds
        if not len(inp):
            return self._stamped(inp.assign(doc_embs=pd.Series(dtype=object), doc_token_ids=pd.Series(dtype=object)),
                                "doc_embs")
        out = self.model.encode(texts_of(inp, self.text_field, ("docno",), "ColBERT"), role="doc",
                                progress=self._progress())
        return self._stamped(inp.assign(doc_embs=[o.embs for o in out], doc_token_ids=[o.ids for o in out]), "doc_embs")

    def _score(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "query", self.text_field], "ColBERT.scorer()",
                        "Load document texts first, e.g. bm25 >> collection.text_loader() >> colbert")
        if not len(inp):
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        queries = texts_of(inp, "query", ("qid",), "ColBERT")
        texts = texts_of(inp, self.text_field, ("qid", "docno"), "ColBERT")
        unique, first, codes = np.unique(np.array(queries, dtype=object), return_index=True, return_inverse=True)
        q = self._query_tokens(unique.tolist(), list(inp["qid"].to_numpy()[first]))
        d = self.model.encode(texts, role="doc", progress=self._progress())
        lengths = np.fromiter((len(o.embs) for o in d), np.int64, len(d))
        offsets = np.zeros(len(d) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        scores = maxsim_pairs([o.embs for o in q], codes.ravel(), np.concatenate([o.embs for o in d]), offsets)
        out = inp.drop(columns=[c for c in ("score", "rank") if c in inp.columns])
        return sort_and_rank(out.assign(score=scores.astype(np.float64)))

    def transform_inputs(self):
        inputs = {"query": [["query"]], "doc": [[self.text_field]], "score": [["qid", "query", self.text_field]]}
        return inputs.get(self.role, [["query"], [self.text_field]])

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        added = {"query": ["query_embs", "query_toks"], "doc": ["doc_embs", "doc_token_ids"],
                 "score": ["score", "rank"]}[self._mode(input_columns)]
        return [c for c in input_columns if c not in added] + added

    def __eq__(self, other) -> bool:
        return isinstance(other, ColBERT) and other.model is self.model and \
            (other.role, other.text_field, other.prune_to, id(other.frequencies), other.prune_by) == \
            (self.role, self.text_field, self.prune_to, id(self.frequencies), self.prune_by)

    def __hash__(self) -> int:
        return hash((id(self.model), self.role, self.text_field, self.prune_to))

    def __repr__(self) -> str:
        suffix = f".{_ROLE_METHODS[self.role]}()" if self.role in _ROLE_METHODS else ""
        if self.prune_to is not None:
            suffix = f".query_encoder(prune_to={self.prune_to}, prune_by={self.prune_by!r})"
        return f"ColBERT({self.model.model_id!r}){suffix}"


def _frequencies(source) -> tuple[np.ndarray, int]:
    if hasattr(source, "token_frequencies"):
        return source.token_frequencies()
    counts, total = source
    return np.asarray(counts), int(total)
