"""The stages of a Qdrant collection: indexing ``doc_vec`` / ``toks`` / ``doc_embs`` records, exact retrieval of the
matching query column, and re-scoring of candidates by the engine."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyterrier as pt

from ..indexes.qdrant_store import QUERY_COLUMNS, QdrantStore
from ..indexes.token_store import DOC_SIDE_KEYS
from ..indexes.vector_index import NAME_KEYS, encoder_differences
from .columns import check_num_results, encoder_of, require_columns
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
    and a failed append removes the points it added."""

    def __init__(self, store: QdrantStore, representation: str, mode: str):
        self.store, self.representation, self.mode = store, representation, mode
        self.meta, self.encoder, self.created, self.added = None, None, False, []
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
                if self.meta["representation"] != self.representation:
                    raise ValueError(f"Qdrant collection {self.store.collection!r} holds "
                                     f"{self.meta['representation']}, not {self.representation}")
        return self

    def set_encoder(self, encoder: dict | None) -> None:
        if self.meta is not None and self.meta.get("encoder") != encoder:
            diffs = encoder_differences(self.meta.get("encoder"), encoder or {}, keys=None) or ["settings differ"]
            raise ValueError(f"cannot append to Qdrant collection {self.store.collection!r}: it was built with "
                             f"another encoder configuration ({'; '.join(diffs)})")
        self.encoder = encoder

    def add(self, docnos: list, values: list) -> None:
        dim = None if self.meta is None else self.meta.get("dim")
        for d, v in zip(docnos, values):
            if not isinstance(d, str) or not d:
                raise ValueError(f"docno {d!r}: docnos must be non-empty strings")
            why = _problem(v, self.representation, dim)
            if why:
                raise ValueError(f"document {d!r}: its {self.representation} {why}")
            if dim is None and self.representation != "toks":
                dim = int(np.shape(v)[-1])
        for d in docnos:
            if d in self._seen:
                raise ValueError(f"duplicate docno {d!r}: every document must have its own docno")
            self._seen.add(d)
        if self.meta is None:
            self.meta, self.created = self.store.create(self.representation, dim, self.encoder), True
        elif not self.created:
            stored = self.store.existing(docnos)
            if stored:
                raise ValueError(f"docno {stored[0]!r} is already in Qdrant collection {self.store.collection!r}")
        self.store.upsert(self.meta, list(docnos), list(values))
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


class QdrantIndexer(RecordIndexer):
    """``(enc >> qindex.indexer()).index(docs)``: writes ``docno`` + ``doc_vec`` (or ``toks``, ``doc_embs``) records
    into the collection; the encoder's settings go into its metadata."""

    def __init__(self, index, *, representation: str, mode: str, resume: bool = True, shard_size: int = SHARD_SIZE):
        if representation not in QUERY_COLUMNS:
            raise ValueError(f"representation must be one of {list(QUERY_COLUMNS)}, got {representation!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.index_ref, self.VALUE, self.mode = index, representation, mode
        self.ENCODER_HINT = f"(encoder >> index.indexer(representation={representation!r})).index(docs)"
        self._resumable(resume and index.path is not None, shard_size)

    def _writer(self) -> _QdrantWriter:
        return _QdrantWriter(self.index_ref.store, self.VALUE, self.mode)

    def _add(self, writer: _QdrantWriter, records: list[dict]) -> None:
        writer.add([r["docno"] for r in records], [r[self.VALUE] for r in records])

    def __repr__(self) -> str:
        return f"{self.index_ref!r}.indexer(representation={self.VALUE!r}, mode={self.mode!r})"


class QdrantRetriever(pt.Transformer):
    """Exact retrieval (``candidates=False``) or re-scoring of candidates (``candidates=True``) by the engine, for the
    query column that matches the collection: ``query_vec``, ``query_toks`` or ``query_embs``."""

    def __init__(self, index, *, num_results: int = 1000, candidates: bool = False, check_encoder: bool = True):
        self.index, self.candidates, self.check_encoder = index, candidates, check_encoder
        self.num_results = check_num_results(num_results)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        meta = self.index.store.meta()
        column = QUERY_COLUMNS[meta["representation"]]
        name = "QdrantIndex.scorer()" if self.candidates else "QdrantIndex.retriever()"
        require_columns(inp, ["qid", column] + (["docno"] if self.candidates else []), name)
        settings = encoder_of(inp)
        if self.check_encoder and settings is not None and meta.get("encoder") is not None:
            keys = [k for k in meta["encoder"] if k not in NAME_KEYS + DOC_SIDE]
            diffs = encoder_differences(meta["encoder"], settings, keys=keys)
            if diffs:
                raise ValueError(f"Qdrant collection {self.index.store.collection!r} was built with another encoder "
                                 f"configuration ({'; '.join(diffs)}); pass check_encoder=False to override")
        keep = [c for c in inp.columns if c not in (column, "docno", "docid", "score", "rank")]
        rows = []
        groups = inp.groupby("qid", sort=False)
        for qid, group in groups:
            value = group[column].iloc[0]
            why = _problem(value, meta["representation"], meta.get("dim"))
            if why and not (meta["representation"] == "toks" and isinstance(value, dict) and not value):
                raise ValueError(f"qid {qid!r}: its {column} {why}")
            docnos = group["docno"].tolist() if self.candidates else None
            k = len(docnos) if self.candidates else self.num_results
            scores, found = self.index.store.search(meta, value, k, docnos)
            first = group.iloc[0]
            if self.candidates:
                by_docno = dict(zip(found, scores))
                missing = [d for d in docnos if d not in by_docno]
                if missing and meta["representation"] != "toks":    # (sparse: no shared term, a score of 0)
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
        role = "scorer()" if self.candidates else f"retriever(num_results={self.num_results})"
        return f"{self.index!r}.{role}"
