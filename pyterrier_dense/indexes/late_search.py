"""Late-interaction search over a :class:`~pyterrier_dense.indexes.token_store.TokenSnapshot`: exact MaxSim over
every document (the reference), PLAID-style end-to-end retrieval, and re-scoring of given documents.

PLAID (Santhanam et al., 2022) in three steps, per query:

1. **cells probed**: each query vector's ``cells`` nearest centroids; the documents listed under any of them in the
   inverted file are the candidates;
2. **centroid interaction** (the pruning step): each candidate gets an approximate MaxSim in which a document token
   counts as its centroid and only the probed centroids are seen, computed from the inverted file alone (no token
   is read); the best ``candidates`` documents go on;
3. **exact MaxSim** over those documents' stored (decompressed) token vectors; the top ``k`` are returned.

Probing every cell with ``candidates >= count`` gives exactly the exhaustive ranking.
"""
from __future__ import annotations

import numpy as np

from .maxsim import maxsim
from .token_ivf import doc_blocks

__all__ = ["exhaustive_search", "plaid_search", "score_docs", "top_k"]

SCAN_TOKENS = 1 << 17      # stored tokens decompressed at once by the exhaustive scan


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (score descending, row ascending on ties)."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        kth = scores[part].min()
        keep = np.nonzero(scores >= kth)[0]      # all ties at the boundary, settled by row below
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]


def score_docs(snap, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact MaxSim of ``query`` with the stored documents ``rows``, read in blocks of about SCAN_TOKENS tokens."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty(len(rows), np.float32)
    lengths = snap.offsets[rows + 1] - snap.offsets[rows]
    bounds = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=bounds[1:])
    for a, b in doc_blocks(bounds, SCAN_TOKENS):
        vecs, off = snap.doc_tokens(rows[a:b])
        out[a:b] = maxsim(query, vecs, off)
    return out


def exhaustive_search(snap, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim of ``query`` against every document, block by block: ``(scores, rows)``, best first."""
    best_s, best_r = np.empty(0, np.float32), np.empty(0, np.int64)
    off = snap.offsets
    for d0, d1 in doc_blocks(off, SCAN_TOKENS):
        vecs = snap.token_range_vectors(int(off[d0]), int(off[d1]))
        s = maxsim(query, vecs, np.asarray(off[d0:d1 + 1]))
        best_s, best_r = top_k(np.concatenate([best_s, s]),
                               np.concatenate([best_r, np.arange(d0, d1, dtype=np.int64)]), k)
    return best_s, best_r


def _probe(snap, query: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """The probed centroids and the query's scores with them (m x probed)."""
    centroids = snap.codec.centroids
    qc = query @ centroids.T
    cells = min(cells, len(centroids))
    if cells < len(centroids):
        near = np.argpartition(-qc, cells - 1, axis=1)[:, :cells]
        probed = np.unique(near)
    else:
        probed = np.arange(len(centroids))
    return probed, qc[:, probed]


def plaid_search(snap, query: np.ndarray, k: int, *, cells: int, candidates: int,
                 return_stats: bool = False):
    """PLAID retrieval (see the module docstring): ``(scores, rows)``, best first."""
    if snap.count == 0:
        empty = (np.empty(0, np.float32), np.empty(0, np.int64))
        return (*empty, {"candidates": 0, "scored": 0}) if return_stats else empty
    probed, qc = _probe(snap, query, cells)
    ivf_off, ivf_docs = snap.ivf
    starts, stops = ivf_off[probed], ivf_off[probed + 1]
    lengths = stops - starts
    total = int(lengths.sum())
    pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(total)
    docs = np.asarray(ivf_docs[pos], dtype=np.int64)
    cell = np.repeat(np.arange(len(probed)), lengths)
    # centroid interaction: per (query vector, document), the best probed centroid the document has a token in
    order = np.argsort(docs, kind="stable")
    docs, cell = docs[order], cell[order]
    firsts = np.flatnonzero(np.concatenate([[True], docs[1:] != docs[:-1]]))
    cand = docs[firsts]
    approx = np.maximum.reduceat(qc[:, cell], firsts, axis=1).sum(axis=0)
    keep = min(max(candidates, k), len(cand))
    _, chosen = top_k(approx.astype(np.float32), cand, keep)
    exact = score_docs(snap, query, chosen)
    scores, rows = top_k(exact, chosen, k)
    if return_stats:
        return scores, rows, {"candidates": int(len(cand)), "scored": int(len(chosen))}
    return scores, rows
