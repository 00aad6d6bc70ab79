"""A Qdrant collection as an index (no torch): the connection with its timeout, the collection's schema and
metadata (the encoder's settings, the sparse vocabulary), upserts and exact search.

One collection holds one representation: ``doc_vec`` (a dense named vector ``vec``, dot product), ``toks`` (a
sparse vector ``toks``: our terms are strings, Qdrant's are integers, so the collection's metadata keeps the
vocabulary) or ``doc_embs`` (a multivector ``vec`` scored by MaxSim). Point ids are UUIDs derived from the docno
(uuid5), so the same docno is always the same point; the docno itself is in the payload. ``location`` is a server
URL (``http://host:6333``) or, through qdrant-client's local mode, a directory or ``":memory:"`` (brute force in
Python, for tests and small data: not the production engine).
"""
from __future__ import annotations

import atexit
import uuid

import numpy as np

__all__ = ["QdrantStore", "QdrantUnavailableError", "REPRESENTATIONS"]

REPRESENTATIONS = {"doc_vec": "dense", "toks": "sparse", "doc_embs": "multi"}
QUERY_COLUMNS = {"doc_vec": "query_vec", "toks": "query_toks", "doc_embs": "query_embs"}
META_KEY = "pyterrier_dense"
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
        """What this package recorded in the collection's metadata: representation, dim, encoder, vocabulary."""
        info = self._call("get_collection", self.client.get_collection, self.collection)
        meta = (info.config.metadata or {}).get(META_KEY)
        if meta is None:
            raise ValueError(f"Qdrant collection {self.collection!r} at {self.location} was not made by "
                             "pyterrier-dense (no pyterrier_dense metadata); choose another collection")
        return meta

    def set_meta(self, meta: dict) -> None:
        self._call("update_collection", self.client.update_collection, self.collection, metadata={META_KEY: meta})

    def create(self, representation: str, dim: int | None, encoder: dict | None) -> dict:
        from qdrant_client import models
        kind = REPRESENTATIONS[representation]
        vectors, sparse = {}, None
        if kind == "sparse":
            sparse = {"toks": models.SparseVectorParams()}
        else:
            multi = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM) if kind == "multi" else None
            vectors = {"vec": models.VectorParams(size=int(dim), distance=models.Distance.DOT, multivector_config=multi)}
        meta = {"representation": representation, "dim": dim, "encoder": encoder, "vocab": {} if sparse else None,
                "count": 0}
        self._call("create_collection", self.client.create_collection, self.collection, vectors_config=vectors,
                   sparse_vectors_config=sparse, metadata={META_KEY: meta})
        return meta

    def drop(self) -> None:
        self._call("delete_collection", self.client.delete_collection, self.collection)

    # ---- points --------------------------------------------------------------------------------------------------
    def _vector(self, meta: dict, value, *, grow: bool):
        from qdrant_client import models
        kind = REPRESENTATIONS[meta["representation"]]
        if kind == "sparse":
            vocab = meta["vocab"]
            terms = [t for t in value if t in vocab or grow]
            for t in terms:
                vocab.setdefault(t, len(vocab))
            return models.SparseVector(indices=[vocab[t] for t in terms], values=[float(value[t]) for t in terms])
        return np.asarray(value, dtype=np.float32).tolist()

    def upsert(self, meta: dict, docnos: list[str], values: list) -> None:
        from qdrant_client import models
        terms = len(meta["vocab"]) if meta.get("vocab") is not None else None
        points = [models.PointStruct(id=point_id(d), vector={self._name(meta): self._vector(meta, v, grow=True)},
                                     payload={"docno": d}) for d, v in zip(docnos, values)]
        if terms is not None and len(meta["vocab"]) > terms:
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

    @staticmethod
    def _name(meta: dict) -> str:
        return "toks" if meta["representation"] == "toks" else "vec"

    def count(self) -> int:
        return int(self._call("count", self.client.count, self.collection, exact=True).count)

    # ---- search --------------------------------------------------------------------------------------------------
    def search(self, meta: dict, query, k: int, docnos: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
        """Exact top ``k`` for one query: ``(scores, docnos)``, best first; with ``docnos``, only among those."""
        from qdrant_client import models
        vector = self._vector(meta, query, grow=False)
        if isinstance(vector, models.SparseVector) and not vector.indices:
            return np.empty(0, np.float32), []
        flt = None if docnos is None else models.Filter(must=[models.HasIdCondition(has_id=[point_id(d) for d in docnos])])
        exact = models.SearchParams(exact=True) if self.location.startswith("http") else None   # local: always
        res = self._call("query_points", self.client.query_points, self.collection, query=vector,
                         using=self._name(meta), limit=k, query_filter=flt, with_payload=True, search_params=exact)
        return np.array([p.score for p in res.points], np.float32), [p.payload["docno"] for p in res.points]
