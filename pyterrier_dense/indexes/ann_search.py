"""AnnSearcher: top-k search of a FAISS structure, with optional exact re-ranking from full vectors."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from .vector_index import size_report

__all__ = ["AnnSearcher"]


class AnnSearcher:
    """``search(queries, k) -> (scores, rows)`` like ``DenseIndex.search``; rows are -1 where fewer than k were found.

    ``load`` returns ``(faiss_index, build_report, file)`` and is called once, on first use. With ``rerank=n`` and
    full ``vectors``, the top ``max(n, k)`` candidates are re-scored exactly and the best ``k`` kept.
    """

    exact = False

    def __init__(self, spec, load: Callable[[], tuple], index, *, rerank: int = 0):
        if rerank and not hasattr(index, "vectors"):
            raise ValueError(f"rerank needs the full vectors, which {index!r} does not keep")
        if rerank < 0:
            raise ValueError(f"rerank must be >= 0, got {rerank}")
        self.spec, self._load, self.index, self.rerank = spec, load, index, rerank
        self._structure: faiss.Index | None = None
        self.report: dict = {}
        self.file: Path | None = None

    def structure(self) -> faiss.Index:
        if self._structure is None:
            self._structure, self.report, self.file = self._load()
        return self._structure

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        count, dim = self.index.count, self.index.dim
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise ValueError(f"query vectors have shape {queries.shape}, but {self.index.path} holds {dim}-dimensional vectors")
        if count == 0 or len(queries) == 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        depth = min(max(k, self.rerank), count)
        scores, rows = self.structure().search(queries, depth, params=self.spec.search_params(depth))
        if self.rerank:
            scores, rows = self._rescore(queries, rows)
        return scores[:, :k], rows[:, :k]

    def _rescore(self, queries: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dim = self.index.dim
        found = rows >= 0
        flat = np.where(found, rows, 0).ravel()
        order = np.argsort(flat, kind="stable")                     # read the memory map in file order
        docs = np.empty((len(flat), dim), np.float32)
        docs[order] = self.index.vectors[flat[order]]
        exact = np.einsum("qkd,qd->qk", docs.reshape(*rows.shape, dim), queries)
        exact = np.where(found, exact, -np.inf)
        best = np.argsort(-exact, axis=1, kind="stable")
        return np.take_along_axis(exact, best, 1).astype(np.float32), np.take_along_axis(rows, best, 1)

    def size(self) -> dict:
        """Bytes per document of the searched structure on disk, and its compression against float32."""
        self.structure()
        report = size_report(self.file.stat().st_size, self.index.count, self.index.dim)
        if hasattr(self.spec, "code_bytes"):   # the codes alone, without codebooks and lists (they amortise)
            report["code_bytes_per_doc"] = self.spec.code_bytes()
        return report

    def __repr__(self) -> str:
        extra = f", rerank={self.rerank}" if self.rerank else ""
        return f"{self.index!r}:{self.spec}{extra}"
