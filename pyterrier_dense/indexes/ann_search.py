"""AnnSearcher: top-k search of a FAISS structure, with optional exact re-ranking from full vectors."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .dense_store import GATHER_BYTES, query_matrix
from .vector_index import size_report

__all__ = ["AnnSearcher"]


class AnnSearcher:
    """``search(snapshot, queries, k) -> (scores, rows)``; rows are -1 where fewer than k were found.

    ``load(snapshot)`` returns ``(faiss_index, build_report, file)`` of one pinned generation (loaded once per process
    and shared). With ``rerank=n`` and full vectors, the top ``max(n, k)`` candidates are re-scored exactly and the
    best ``k`` kept, a bounded number of queries at a time (``GATHER_BYTES`` of gathered vectors).
    """

    exact = False

    def __init__(self, spec, load: Callable, *, rerank: int = 0, has_vectors: bool = True, name: str = ""):
        if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 0:
            raise ValueError(f"rerank must be an int >= 0, got {rerank!r}")
        if rerank and not has_vectors:
            raise ValueError(f"rerank needs the full vectors, which {name} does not keep")
        self.spec, self._load, self.rerank, self.name = spec, load, rerank, name

    def search(self, snapshot, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = query_matrix(snapshot, queries)
        if snapshot.count == 0 or len(queries) == 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        depth = min(max(k, self.rerank), snapshot.count)
        structure = self._load(snapshot)[0]
        scores, rows = structure.search(queries, depth, params=self.spec.search_params(depth))
        if self.rerank:
            scores, rows = self._rescore(snapshot, queries, rows)
        return scores[:, :k], rows[:, :k]

    @staticmethod
    def _rescore(snapshot, queries: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nq, depth = rows.shape
        step = max(1, GATHER_BYTES // (4 * snapshot.dim * depth))
        out_s, out_r = np.empty(rows.shape, np.float32), np.empty_like(rows)
        for start in range(0, nq, step):
            r = rows[start:start + step]
            found = r >= 0
            docs = snapshot.gather(np.where(found, r, 0).ravel()).reshape(*r.shape, snapshot.dim)
            exact = np.einsum("qkd,qd->qk", docs, queries[start:start + step])
            exact = np.where(found, exact, -np.inf)
            best = np.argsort(-exact, axis=1, kind="stable")
            out_s[start:start + step] = np.take_along_axis(exact, best, 1)
            out_r[start:start + step] = np.take_along_axis(r, best, 1)
        return out_s, out_r

    def build_report(self, snapshot) -> dict:
        """How the structure searched in ``snapshot`` was built (training sample, timings, shortfalls)."""
        return self._load(snapshot)[1]

    def size(self, snapshot) -> dict:
        """Bytes per document of the searched structure on disk, and its compression against float32."""
        file = self._load(snapshot)[2]
        report = size_report(file.stat().st_size, snapshot.count, snapshot.dim)
        if hasattr(self.spec, "code_bytes"):   # the codes alone, without codebooks and lists (they amortise)
            report["code_bytes_per_doc"] = self.spec.code_bytes()
        return report

    def __repr__(self) -> str:
        extra = f", rerank={self.rerank}" if self.rerank else ""
        return f"{self.name}:{self.spec}{extra}"
