"""BiEncoder: the PyTerrier stage around a single-vector encoder."""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict

import numpy as np
import pandas as pd
import pyterrier as pt

from ..models.bi_encoder_model import BiEncoderModel
from ..models.default_model import DEFAULT_MODEL
from .ranking import sort_and_rank
from .columns import require_columns, stamp, stamp_records, texts_of
from .progress import show_progress
from .resume import skip_resumed

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

    ``query_cache=n`` keeps the vectors of the last ``n`` distinct queries (least recently used go first; at most
    ``n * dim * 4`` bytes, 15 MB for 10,000 MiniLM queries), so an experiment whose systems share this encoder
    (dense retrieval, re-ranking, a hybrid) encodes each topic once::

        enc = ptd.BiEncoder(query_cache=10_000)
        pt.Experiment([enc >> index.retriever(), bm25 >> enc >> index.scorer(), ptd.ScoreFusion(bm25, dense)], ...)

    Off by default, so timing a query pipeline measures the encoder. The cache belongs to this stage and the role
    stages it hands out, is emptied when the model's settings change, and goes with the stage;
    ``clear_query_cache()`` empties it at once.

    Arguments after ``model`` are passed to :class:`~pyterrier_dense.models.BiEncoderModel` (pooling, normalize,
    query_prefix, doc_prefix, max_length, batch_size, device, precision, query_model, verbose).
    """

    def __init__(self, model: str | BiEncoderModel = DEFAULT_MODEL, *, text_field: str = "text",
                 query_cache: int = 0, **model_args):
        if not isinstance(model, (str, BiEncoderModel)) and not hasattr(model, "__fspath__"):
            raise TypeError(f"model must be a model name, a local path or a BiEncoderModel, got {type(model).__name__}")
        if not isinstance(query_cache, int) or isinstance(query_cache, bool) or query_cache < 0:
            raise ValueError(f"query_cache must be an int >= 0 (the number of query vectors kept), got {query_cache!r}")
        if isinstance(model, BiEncoderModel):
            self.model = model
        else:
            with _loading_bars(show_progress(model_args.get("verbose", True))):
                self.model = BiEncoderModel(model, **model_args)
        self.text_field = text_field
        self.role = "auto"
        self._query_cache = _QueryVectorCache(query_cache) if query_cache else None

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
        if records and isinstance(records[0], dict) and self._mode(records[0].keys()) == "doc":
            records = skip_resumed(records, self)   # documents an interrupted build being resumed already holds
            if not records:
                return []
        if not records or self._mode(records[0].keys()) != "doc":
            return self.transform(pd.DataFrame(records)).to_dict(orient="records")
        frame = pd.DataFrame({"docno": [r.get("docno") for r in records], self.text_field: [r.get(self.text_field) for r in records]})
        vecs = self.model.encode(texts_of(frame, self.text_field, ("docno",), "BiEncoder"), role="doc",
                                 report_truncation=False,  # the indexer reports once, at the end
                                 progress=self._progress())
        settings = self.model.settings()   # travels with each record: indexers record it in their manifest
        return stamp_records(records, settings, {"doc_vec": list(vecs)})

    def _encode_queries(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["query"], "BiEncoder.query_encoder()")
        if not len(inp):
            return self._stamped(inp.assign(query_vec=pd.Series(dtype=object)), "query_vec")
        queries = texts_of(inp, "query", ("qid",), "BiEncoder")
        unique, codes = np.unique(np.array(queries, dtype=object), return_inverse=True)
        vecs = self._query_vectors(unique.tolist())
        return self._stamped(inp.assign(query_vec=list(vecs[codes.ravel()])), "query_vec")

    def _encode_docs(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, [self.text_field], "BiEncoder.doc_encoder()")
        inp = skip_resumed(inp, self)   # documents an interrupted build being resumed already holds
        if not len(inp):
            return self._stamped(inp.assign(doc_vec=pd.Series(dtype=object)), "doc_vec")
        vecs = self.model.encode(texts_of(inp, self.text_field, ("docno",), "BiEncoder"), role="doc",
                                 progress=self._progress())
        return self._stamped(inp.assign(doc_vec=list(vecs)), "doc_vec")

    def _progress(self) -> bool | None:
        """The model's own choice (its ``verbose``), unless bars are off here (``quiet()``, or the logger)."""
        return None if show_progress() else False

    def _query_vectors(self, queries: list[str]) -> np.ndarray:
        """The vectors of distinct ``queries``; with a query cache, only those it lacks are encoded."""
        cache = self._query_cache
        if cache is None:
            return self.model.encode(queries, role="query", progress=self._progress())
        found = cache.get_many(queries, self.model.settings())
        missing = [q for q, v in zip(queries, found) if v is None]
        if missing:
            new = self.model.encode(missing, role="query", progress=self._progress())
            cache.put_many(missing, new)
            fresh = dict(zip(missing, new))
            found = [fresh[q] if v is None else v for q, v in zip(queries, found)]
        return np.stack(found) if found else np.empty((0, self.model.dim), dtype=np.float32)

    def fit(self, train_topics: pd.DataFrame, train_qrels: pd.DataFrame, valid_topics: pd.DataFrame | None = None,
            valid_qrels: pd.DataFrame | None = None, *, texts, negatives=None, n_negatives: int = 1,
            skip_top: int = 0, teacher=None, epochs: int = 1, batch_size: int = 32, lr: float = 2e-5,
            temperature: float = 0.05, seed: int = 0, out=None, **train_args) -> "BiEncoder":
        """Fine-tune the encoder in place (PyTerrier's Estimator interface) and return this stage.

        InfoNCE over in-batch documents and ``n_negatives`` hard negatives a query, sampled each epoch from what
        ``negatives`` (any PyTerrier retrieval pipeline, or a run DataFrame such as
        :func:`~pyterrier_dense.training.read_triples` gives) returns for the training topics, with judged positives
        removed and the first ``skip_top`` results skipped. ``texts`` gives the documents' texts (a
        :class:`~pyterrier_dense.Collection`, a dict or a docno/text DataFrame).

        ``teacher`` (any pipeline that scores documents for the topics: a fusion, ``bm25 % 100 >> cross_encoder``;
        or its run, a qid/docno/score DataFrame) adds distillation from its scores, computed once and cached on
        disk: ``distill="kl"`` (listwise, the default) or ``"margin_mse"``, ``teacher_temperature``,
        ``in_batch_weight``; without ``negatives`` the teacher's ranking is the pool of negatives.

        With validation topics and qrels, each epoch re-ranks the negatives (or teacher) pipeline's candidates for
        them and ``valid_metric`` (nDCG@10) by ``pt.Experiment`` keeps the best epoch's weights (``patience`` stops
        early). ``out`` saves the result as a sentence-transformers directory and holds checkpoints while training
        (``checkpoint_every`` steps): a killed run re-run with the same ``out`` resumes. Other options:
        ``accumulation``, ``chunk_size`` (GradCache split batches), ``gradient_checkpointing``, ``warmup``,
        ``precision`` (``"auto"``: bf16 autocast where native), ``attention_dropout`` (0 while training by default,
        so that PyTorch's fused attention kernel runs; ``None`` keeps the model's). ``interpolate=w`` (below 1)
        ends with ``w`` of the trained weights and ``1 - w`` of the starting ones (WiSE-FT,
        :func:`~pyterrier_dense.training.interpolate`), a trade of the gain on the training collection for more of
        the starting model elsewhere (the README has figures). The fingerprint changes, so indexes built before are
        refused; ``last_fit`` holds the report::

            enc = ptd.BiEncoder(precision="fp32")
            enc.fit(coll.topics("train"), coll.qrels("train"), texts=coll, negatives=bm25 % 50, n_negatives=4,
                    skip_top=3, epochs=2, out="minilm-scifact")
            dense = enc >> ptd.DenseIndex("scifact-ft.dense").retriever()
        """
        from ..training import fit_model
        self.last_fit = fit_model(self.model, "bi_encoder", train_topics, train_qrels, valid_topics, valid_qrels,
                                  texts=texts, negatives=negatives, skip_top=skip_top, teacher=teacher, out=out,
                                  valid_scorer=self.text_scorer(), epochs=epochs, batch_size=batch_size, lr=lr,
                                  temperature=temperature, seed=seed, n_negatives=n_negatives,
                                  verbose=self.model.verbose, **train_args)
        self.clear_query_cache()
        return self

    def fit_jpq(self, pq_index, train_topics: pd.DataFrame, train_qrels: pd.DataFrame, *, out_index, **jpq_args):
        """JPQ (Zhan et al. 2021): train a copy of the query tower and the centroids of ``pq_index`` (a
        :class:`~pyterrier_dense.PQIndex`) with a ranking loss over its fixed document codes. Returns
        ``(query encoder, PQIndex at out_index)``, to be used together; this encoder and the index are left as they
        are. Options are :func:`~pyterrier_dense.training.train_jpq`'s (``out_model``, ``epochs``, ``lr``,
        ``centroid_lr``, ``n_negatives``, ...)::

            pq_index = dense_index.compress("scifact.pq", m=48, nbits=8)
            jpq_enc, jpq_index = enc.fit_jpq(pq_index, coll.topics("train"), coll.qrels("train"),
                                             out_index="scifact.jpq", epochs=4, lr=2e-5)
            jpq = jpq_enc >> jpq_index.retriever()
        """
        from ..training.jpq import train_jpq
        return train_jpq(self, pq_index, train_topics, train_qrels, out_index=out_index, **jpq_args)

    def clear_query_cache(self) -> None:
        """Forget the cached query vectors (of this stage and the role stages it handed out)."""
        if self._query_cache is not None:
            self._query_cache.clear()

    def _stamped(self, out: pd.DataFrame, column: str) -> pd.DataFrame:
        """The frame, carrying this encoder's settings in ``attrs`` for index stages to check."""
        return stamp(out, self.model.settings(), column)

    def _score(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["qid", "query", self.text_field], "BiEncoder.text_scorer()",
                        "Load document texts first, e.g. bm25 >> collection.text_loader() >> enc")
        if not len(inp):
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        queries = texts_of(inp, "query", ("qid",), "BiEncoder")
        texts = texts_of(inp, self.text_field, ("qid", "docno"), "BiEncoder")
        unique_q, q_codes = np.unique(np.array(queries, dtype=object), return_inverse=True)
        qv = self._query_vectors(unique_q.tolist())
        dv = self.model.encode(texts, role="doc", progress=self._progress())
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


@contextlib.contextmanager
def _loading_bars(show: bool):
    """Hide transformers' ``Loading weights`` bar unless bars are wanted (``verbose``, ``quiet()``, the logger)."""
    from transformers.utils import logging as hf_logging
    hide = not show and hf_logging.is_progress_bar_enabled()
    if hide:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hide:
            hf_logging.enable_progress_bar()


class _QueryVectorCache:
    """Least-recently-used query text -> vector, at most ``size`` entries, valid for one set of encoder settings
    (a change of the model's settings empties it). Thread-safe."""

    def __init__(self, size: int):
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._settings: dict | None = None
        self._lock = threading.Lock()

    def get_many(self, queries: list[str], settings: dict) -> list[np.ndarray | None]:
        with self._lock:
            if settings != self._settings:
                self._vectors.clear()
                self._settings = settings
            found = []
            for q in queries:
                v = self._vectors.get(q)
                if v is not None:
                    self._vectors.move_to_end(q)
                found.append(v)
            return found

    def put_many(self, queries: list[str], vectors: np.ndarray) -> None:
        with self._lock:
            for q, v in zip(queries[-self.size:], vectors[-self.size:]):
                self._vectors[q] = v.copy()   # a row of its own: the batch matrix is not kept alive
                self._vectors.move_to_end(q)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()

    def __getstate__(self) -> dict:   # a pickled stage takes the bound along, not the vectors or the lock
        return {"size": self.size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["size"])

    def __len__(self) -> int:
        return len(self._vectors)
