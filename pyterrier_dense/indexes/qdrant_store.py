"""A Qdrant collection as an index (no torch): the connection with its timeout, the collection's schema and
metadata (each representation's encoder settings, the sparse vocabulary), upserts, exact search and hybrid search.

A collection holds one or more representations of the same documents, each a named vector of the point:
``doc_vec`` (dense ``vec``, dot product), ``toks`` (sparse ``toks``: our terms are strings, Qdrant's are integers,
so the collection's metadata keeps the vocabulary) and ``doc_embs`` (a multivector ``embs`` scored by MaxSim).
Several in one collection are searched together by the engine's fusion (reciprocal rank or distribution-based).
Point ids are UUIDs derived from the docno (uuid5), so the same docno is always the same point; the docno itself is
in the payload. ``location`` is a server URL (``http://host:6333``) or, through qdrant-client's local mode, a
directory or ``":memory:"`` (brute force in Python, for tests and small data: not the production engine).
"""
from __future__ import annotations

import atexit
import uuid

import numpy as np

__all__ = ["QdrantStore", "QdrantUnavailableError", "REPRESENTATIONS", "QUERY_COLUMNS", "FUSIONS"]

REPRESENTATIONS = {"doc_vec": "dense", "toks": "sparse", "doc_embs": "multi"}
QUERY_COLUMNS = {"doc_vec": "query_vec", "toks": "query_toks", "doc_embs": "query_embs"}
NAMES = {"doc_vec": "vec", "toks": "toks", "doc_embs": "embs"}   # the point's named vector for each
FUSIONS = ("rrf", "dbsf")
META_KEY = "pyterrier_dense"
META_VERSION = 2
_NAMESPACE = uuid.UUID("5b0c6a1e-9a55-4f1e-8a53-7064746e7365")


class QdrantUnavailableError(ConnectionError):
    """The Qdrant server did not answer (refused, timed out, or failed)."""


def point_id(docno: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, docno))


def _client(location: str, timeout: float, api_key: str | None):
    try:
        from qdrant_client import QdrantClient
    except ImportError:
        raise ImportError("QdrantIndex needs qdrant-client: pip install 'pyterrier-dense[qdrant]'") from None
    if location.startswith(("http://", "https://")):
        return QdrantClient(url=location, timeout=timeout, api_key=api_key, check_compatibility=False)
    client = QdrantClient(location=":memory:") if location == ":memory:" else QdrantClient(path=location)
    atexit.register(client.close)   # closed before interpreter shutdown, which local mode's __del__ cannot do
    return client


class QdrantStore:
    """Low-level access to one collection; every call that fails to reach the server raises
    :class:`QdrantUnavailableError` naming the location (after ``timeout`` seconds at most)."""

    def __init__(self, location: str, collection: str, *, timeout: float = 10.0, api_key: str | None = None):
        self.location, self.collection, self.timeout = str(location), collection, timeout
        self._api_key, self._c = api_key, None

    @property
    def client(self):
        if self._c is None:
            self._c = _client(self.location, self.timeout, self._api_key)
        return self._c

    def _call(self, what: str, fn, *args, **kwargs):
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
        try:
            return fn(*args, **kwargs)
        except (ResponseHandlingException, ConnectionError, TimeoutError, OSError) as e:
            raise QdrantUnavailableError(f"Qdrant at {self.location} did not answer ({what}, timeout "
                                         f"{self.timeout} s): {e}") from None
        except UnexpectedResponse as e:
            raise QdrantUnavailableError(f"Qdrant at {self.location} refused {what} on collection "
                                         f"{self.collection!r}: {e}") from None

    # ---- collection ----------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self._call("collection_exists", self.client.collection_exists, self.collection))

    def meta(self) -> dict:
        """What this package recorded in the collection's metadata: ``{"representations": {name: {"dim",
        "encoder", "vocab"}}, "count"}``."""
        info = self._call("get_collection", self.client.get_collection, self.collection)
        meta = (info.config.metadata or {}).get(META_KEY)
        if meta is None:
            raise ValueError(f"Qdrant collection {self.collection!r} at {self.location} was not made by "
                             "pyterrier-dense (no pyterrier_dense metadata); choose another collection")
        if meta.get("version") != META_VERSION:
            raise ValueError(f"Qdrant collection {self.collection!r} at {self.location} was made by another version "
                             f"of pyterrier-dense (metadata version {meta.get('version', 1)}, this one reads "
                             f"{META_VERSION}); index it again with indexer(mode='overwrite')")
        return meta

    def set_meta(self, meta: dict) -> None:
        self._call("update_collection", self.client.update_collection, self.collection, metadata={META_KEY: meta})

    def create(self, dims: dict[str, int | None], encoders: dict[str, dict | None]) -> dict:
        """A new collection for these representations (``{representation: dim}``, None for ``toks``)."""
        from qdrant_client import models
        vectors, sparse, reps = {}, {}, {}
        for rep, dim in dims.items():
            kind = REPRESENTATIONS[rep]
            if kind == "sparse":
                sparse[NAMES[rep]] = models.SparseVectorParams()
            else:
                multi = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM) \
                    if kind == "multi" else None
                vectors[NAMES[rep]] = models.VectorParams(size=int(dim), distance=models.Distance.DOT,
                                                          multivector_config=multi)
            reps[rep] = {"dim": dim, "encoder": encoders.get(rep), "vocab": {} if kind == "sparse" else None}
        meta = {"version": META_VERSION, "representations": reps, "count": 0}
        self._call("create_collection", self.client.create_collection, self.collection, vectors_config=vectors,
                   sparse_vectors_config=sparse or None, metadata={META_KEY: meta})
        return meta

    def drop(self) -> None:
        self._call("delete_collection", self.client.delete_collection, self.collection)

    # ---- points --------------------------------------------------------------------------------------------------
    @staticmethod
    def _vector(meta: dict, rep: str, value, *, grow: bool):
        from qdrant_client import models
        if REPRESENTATIONS[rep] == "sparse":
            vocab = meta["representations"][rep]["vocab"]
            terms = [t for t in value if t in vocab or grow]
            for t in terms:
                vocab.setdefault(t, len(vocab))
            return models.SparseVector(indices=[vocab[t] for t in terms], values=[float(value[t]) for t in terms])
        return np.asarray(value, dtype=np.float32).tolist()

    def upsert(self, meta: dict, docnos: list[str], values: dict[str, list]) -> None:
        """Points for ``docnos`` with ``values`` (``{representation: one value per docno}``)."""
        from qdrant_client import models
        reps = meta["representations"]
        terms = sum(len(r["vocab"]) for r in reps.values() if r["vocab"] is not None)
        points = [models.PointStruct(id=point_id(d), payload={"docno": d}, vector={
            NAMES[rep]: self._vector(meta, rep, values[rep][i], grow=True) for rep in values})
            for i, d in enumerate(docnos)]
        if sum(len(r["vocab"]) for r in reps.values() if r["vocab"] is not None) > terms:
            self.set_meta(meta)   # new terms recorded before any point uses them: a crash cannot reuse their ids
        self._call("upsert", self.client.upsert, self.collection, points=points, wait=True)

    def existing(self, docnos: list[str]) -> list[str]:
        """Which of these docnos the collection already holds."""
        found = self._call("retrieve", self.client.retrieve, self.collection, ids=[point_id(d) for d in docnos],
                           with_payload=True, with_vectors=False)
        return [p.payload["docno"] for p in found]

    def delete(self, docnos: list[str]) -> None:
        from qdrant_client import models
        self._call("delete", self.client.delete, self.collection,
                   points_selector=models.PointIdsList(points=[point_id(d) for d in docnos]))

    def count(self) -> int:
        return int(self._call("count", self.client.count, self.collection, exact=True).count)

    # ---- search --------------------------------------------------------------------------------------------------
    def search(self, meta: dict, queries: dict, k: int, docnos: list[str] | None = None, *, fusion: str = "rrf",
               rrf_k: float = 60, depth: int | None = None) -> tuple[np.ndarray, list[str]]:
        """Exact top ``k`` for one query (``queries``: ``{representation: query value}``): ``(scores, docnos)``,
        best first; with ``docnos``, only among those. With several representations, each one's exact top
        ``depth`` (default ``k``) is fused by the engine: ``"rrf"`` (``1 / (rrf_k + rank)`` summed, ranks from 1,
        as :class:`~pyterrier_dense.RRFusion`) or ``"dbsf"`` (distribution-based score fusion)."""
        from qdrant_client import models
        vectors = {rep: self._vector(meta, rep, q, grow=False) for rep, q in queries.items()}
        vectors = {rep: v for rep, v in vectors.items()          # a sparse query of no known term finds nothing
                   if not (isinstance(v, models.SparseVector) and not v.indices)}
        if not vectors:
            return np.empty(0, np.float32), []
        flt = None if docnos is None else models.Filter(must=[models.HasIdCondition(has_id=[point_id(d) for d in docnos])])
        exact = models.SearchParams(exact=True) if self.location.startswith("http") else None   # local: always
        if len(vectors) == 1:
            [(rep, vector)] = vectors.items()
            res = self._call("query_points", self.client.query_points, self.collection, query=vector,
                             using=NAMES[rep], limit=k, query_filter=flt, with_payload=True, search_params=exact)
        else:
            prefetch = [models.Prefetch(query=v, using=NAMES[rep], limit=depth or k, filter=flt, params=exact)
                        for rep, v in vectors.items()]
            # Qdrant counts ranks from 0: its k is ours + 1 for the same 1 / (k + rank)
            query = models.RrfQuery(rrf=models.Rrf(k=int(rrf_k) + 1)) if fusion == "rrf" \
                else models.FusionQuery(fusion=models.Fusion.DBSF)
            res = self._call("query_points", self.client.query_points, self.collection, prefetch=prefetch,
                             query=query, limit=k, with_payload=True)
        return np.array([p.score for p in res.points], np.float32), [p.payload["docno"] for p in res.points]
