"""The stages of a Qdrant collection: indexing ``doc_vec`` / ``toks`` / ``doc_embs`` records (one representation
or several per collection), exact retrieval of the matching query columns (several fused by the engine), and
re-scoring of candidates by the engine."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyterrier as pt

from ..indexes.qdrant_store import FUSIONS, QUERY_COLUMNS, QdrantStore
from ..indexes.token_store import DOC_SIDE_KEYS
from ..indexes.vector_index import NAME_KEYS, encoder_differences
from .columns import check_num_results, encoder_of, record_encoder, require_columns
from .ranking import sort_and_rank
from .record_indexer import SHARD_SIZE, RecordIndexer

__all__ = ["QdrantIndexer", "QdrantRetriever"]

MODES = ("error", "overwrite", "append")
# settings that shape only documents: queries need not share them (ColBERT's, and the bi-encoder's and SPLADE's own)
DOC_SIDE = DOC_SIDE_KEYS + ("doc_prefix", "doc_top_k")


def _problem(value, representation: str, dim: int | None) -> str | None:
    """What is wrong with one document's (or query's) value, or None."""
    if representation == "toks":
        if not isinstance(value, dict) or not value:
            return "is not a non-empty {term: weight} dict"
        bad = next((t for t, w in value.items() if not isinstance(t, str) or not t or isinstance(w, bool)
                    or not isinstance(w, (int, float, np.number)) or not math.isfinite(w) or w < 0), None)
        return None if bad is None else f"has a bad term or weight ({bad!r}: {value.get(bad)!r})"
    arr = np.asarray(value) if value is not None else None
    want = 1 if representation == "doc_vec" else 2
    if arr is None or arr.ndim != want or arr.dtype.kind not in "fiu" or not arr.size:
        return f"is not a {want}-D numeric array (got {type(value).__name__} {np.shape(value)})"
    if dim is not None and arr.shape[-1] != dim:
        return f"has {arr.shape[-1]} dimensions; the collection holds {dim}"
    if not np.isfinite(arr).all():
        return "has a NaN or infinite value"
    return None


class _QdrantWriter:
    """Streams records into the collection. Qdrant has no atomic build: a new collection that fails is removed,
    and a failed append removes the points it added. ``encoder`` settings are per representation."""

    def __init__(self, store: QdrantStore, representations: tuple[str, ...], mode: str):
        self.store, self.representations, self.mode = store, representations, mode
        self.meta, self.encoders, self.created, self.added = None, {}, False, []
        self._seen: set[str] = set()

    def __enter__(self) -> "_QdrantWriter":
        if self.store.exists():
            if self.mode == "error":
                raise ValueError(f"Qdrant collection {self.store.collection!r} at {self.store.location} already "
                                 "exists; pass mode='overwrite' to replace it or mode='append' to add documents")
            if self.mode == "overwrite":
                self.store.drop()
            else:
                self.meta = self.store.meta()
                held = tuple(self.meta["representations"])
                if sorted(held) != sorted(self.representations):
                    raise ValueError(f"Qdrant collection {self.store.collection!r} holds {list(held)}; an append "
                                     f"must add the same representations, not {list(self.representations)}")
        return self

    def set_encoder(self, encoders: dict | None) -> None:
        encoders = encoders or {}
        if self.meta is not None:
            for rep in self.representations:
                stored = self.meta["representations"][rep].get("encoder")
                if stored != encoders.get(rep):
                    diffs = encoder_differences(stored, encoders.get(rep) or {}, keys=None) or ["settings differ"]
                    raise ValueError(f"cannot append to Qdrant collection {self.store.collection!r}: its {rep} was "
                                     f"built with another encoder configuration ({'; '.join(diffs)})")
        self.encoders = encoders

    def add(self, docnos: list, values: dict[str, list]) -> None:
        reps = None if self.meta is None else self.meta["representations"]
        dims = {rep: None if reps is None else reps[rep]["dim"] for rep in self.representations}
        for i, d in enumerate(docnos):
            if not isinstance(d, str) or not d:
                raise ValueError(f"docno {d!r}: docnos must be non-empty strings")
            for rep in self.representations:
                v = values[rep][i]
                why = _problem(v, rep, dims[rep])
                if why:
                    raise ValueError(f"document {d!r}: its {rep} {why}")
                if dims[rep] is None and rep != "toks":
                    dims[rep] = int(np.shape(v)[-1])
        for d in docnos:
            if d in self._seen:
                raise ValueError(f"duplicate docno {d!r}: every document must have its own docno")
            self._seen.add(d)
        if self.meta is None:
            self.meta, self.created = self.store.create(dims, self.encoders), True
        elif not self.created:
            stored = self.store.existing(docnos)
            if stored:
                raise ValueError(f"docno {stored[0]!r} is already in Qdrant collection {self.store.collection!r}")
        self.store.upsert(self.meta, list(docnos), values)
        self.added.extend(docnos)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.meta is None:
                raise ValueError("no documents were given: a Qdrant collection is made by its first documents")
            self.meta["count"] = self.meta.get("count", 0) + len(self.added)
            self.store.set_meta(self.meta)
        elif self.created:
            self.store.drop()
        elif self.added:
            self.store.delete(self.added)


def _representations(value) -> tuple[str, ...]:
    reps = (value,) if isinstance(value, str) else tuple(value)
    bad = [r for r in reps if r not in QUERY_COLUMNS]
    if not reps or bad or len(set(reps)) != len(reps):
        raise ValueError(f"representation must be one of {list(QUERY_COLUMNS)} or several of them, got {value!r}")
    return reps


class QdrantIndexer(RecordIndexer):
    """``(enc >> qindex.indexer()).index(docs)``: writes ``docno`` + ``doc_vec`` (or ``toks``, ``doc_embs``, or
    several of them) records into the collection; each encoder's settings go into its metadata."""

    def __init__(self, index, *, representation, mode: str, resume: bool = True, shard_size: int = SHARD_SIZE):
        reps = _representations(representation)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.index_ref, self.representations, self.VALUE, self.mode = index, reps, reps[0], mode
        shown = reps[0] if len(reps) == 1 else reps
        self.ENCODER_HINT = f"(encoder >> index.indexer(representation={shown!r})).index(docs)"
        self._resumable(resume and index.path is not None, shard_size)

    @property
    def VALUES(self) -> tuple[str, ...]:
        return self.representations

    def _settings(self, holder: dict, default=None) -> dict:
        default = default or {}
        return {rep: record_encoder(holder, rep, default.get(rep)) for rep in self.representations}

    def _writer(self) -> _QdrantWriter:
        return _QdrantWriter(self.index_ref.store, self.representations, self.mode)

    def _add(self, writer: _QdrantWriter, records: list[dict]) -> None:
        writer.add([r["docno"] for r in records], {rep: [r[rep] for r in records] for rep in self.representations})

    def __repr__(self) -> str:
        shown = self.VALUE if len(self.representations) == 1 else self.representations
        return f"{self.index_ref!r}.indexer(representation={shown!r}, mode={self.mode!r})"


class QdrantRetriever(pt.Transformer):
    """Exact retrieval (``candidates=False``) or re-scoring of candidates (``candidates=True``) by the engine, for the
    query columns that match the collection's representations (``query_vec``, ``query_toks``, ``query_embs``):
    ``representation`` picks them, by default every one the frame has; several are fused by the engine."""

    def __init__(self, index, *, num_results: int = 1000, candidates: bool = False, check_encoder: bool = True,
                 representation=None, fusion: str = "rrf", rrf_k: int = 60, depth: int | None = None):
        self.index, self.candidates, self.check_encoder = index, candidates, check_encoder
        self.num_results = check_num_results(num_results)
        self.representation = None if representation is None else _representations(representation)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {list(FUSIONS)}, got {fusion!r}")
        self.fusion, self.rrf_k = fusion, check_num_results(rrf_k, "rrf_k")
        self.depth = None if depth is None else check_num_results(depth, "depth")

    def _chosen(self, meta: dict, inp: pd.DataFrame, name: str) -> tuple[str, ...]:
        held = tuple(meta["representations"])
        if self.representation is not None:
            missing = [r for r in self.representation if r not in held]
            if missing:
                raise ValueError(f"Qdrant collection {self.index.store.collection!r} holds {list(held)}, not "
                                 f"{missing}")
            reps = self.representation
        else:
            reps = tuple(r for r in held if QUERY_COLUMNS[r] in inp.columns)
        if not reps:     # none of the collection's query columns: name them (one: as every stage does)
            wanted = [QUERY_COLUMNS[r] for r in held]
            require_columns(inp, wanted[:1] if len(wanted) == 1 else wanted, name,
                            "" if len(wanted) == 1 else "any one of them will do")
        require_columns(inp, ["qid"] + [QUERY_COLUMNS[r] for r in reps] + (["docno"] if self.candidates else []), name)
        return reps

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        meta = self.index.store.meta()
        name = "QdrantIndex.scorer()" if self.candidates else "QdrantIndex.retriever()"
        reps = self._chosen(meta, inp, name)
        columns = [QUERY_COLUMNS[r] for r in reps]
        for rep, column in zip(reps, columns):
            stored, settings = meta["representations"][rep].get("encoder"), encoder_of(inp, column)
            if self.check_encoder and settings is not None and stored is not None:
                keys = [k for k in stored if k not in NAME_KEYS + DOC_SIDE]
                diffs = encoder_differences(stored, settings, keys=keys)
                if diffs:
                    raise ValueError(f"the {rep} of Qdrant collection {self.index.store.collection!r} was built with "
                                     f"another encoder configuration ({'; '.join(diffs)}); pass check_encoder=False "
                                     "to override")
        keep = [c for c in inp.columns if c not in (*QUERY_COLUMNS.values(), "docno", "docid", "score", "rank")]
        rows = []
        for qid, group in inp.groupby("qid", sort=False):
            queries = {}
            for rep, column in zip(reps, columns):
                value = group[column].iloc[0]
                why = _problem(value, rep, meta["representations"][rep]["dim"])
                if why and not (rep == "toks" and isinstance(value, dict) and not value):
                    raise ValueError(f"qid {qid!r}: its {column} {why}")
                queries[rep] = value
            docnos = group["docno"].tolist() if self.candidates else None
            k = len(docnos) if self.candidates else self.num_results
            scores, found = self.index.store.search(meta, queries, k, docnos, fusion=self.fusion, rrf_k=self.rrf_k,
                                                    depth=self.depth)
            first = group.iloc[0]
            if self.candidates:
                by_docno = dict(zip(found, scores))
                missing = [d for d in docnos if d not in by_docno]
                if missing and "toks" not in reps:    # (sparse: a document with no query term scores 0)
                    raise ValueError(f"docno {missing[0]!r} (qid {qid!r}) is not in Qdrant collection "
                                     f"{self.index.store.collection!r}")
                for _, row in group.iterrows():
                    rows.append({**{c: row[c] for c in keep}, "docno": row["docno"],
                                 "score": float(by_docno.get(row["docno"], 0.0))})
            else:
                rows.extend({**{c: first[c] for c in keep}, "docno": d, "score": float(s)}
                            for d, s in zip(found, scores))
        if not rows:
            return pd.DataFrame(columns=keep + ["docno", "score", "rank"])
        return sort_and_rank(pd.DataFrame(rows))

    def __repr__(self) -> str:
        role = "scorer(" if self.candidates else f"retriever(num_results={self.num_results}"
        if self.representation is not None:
            role += ("" if role.endswith("(") else ", ") + f"representation={self.representation!r}"
        return f"{self.index!r}.{role})"
