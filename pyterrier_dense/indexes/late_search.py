"""Late-interaction search over a :class:`~pyterrier_dense.indexes.token_store.TokenSnapshot`: exact MaxSim over
every document (the reference), PLAID-style end-to-end retrieval, and re-scoring of given documents.

PLAID (Santhanam et al., 2022) in three steps, per query:

1. **cells probed**: each query vector's ``cells`` nearest centroids; the documents listed under any of them in the
   inverted file are the candidates;
2. **centroid interaction** (the pruning steps): each candidate gets an approximate MaxSim in which a document token
   counts as its centroid and only the probed centroids are seen, computed from the inverted file alone; the best
   ``2 * candidates`` go on to a full centroid interaction (every token counted as its centroid, from the stored
   codes), and the best ``candidates`` of those go on;
3. **exact MaxSim** over those documents' stored (decompressed) token vectors; the top ``k`` are returned.

Probing every cell with ``candidates >= count`` gives exactly the exhaustive ranking.
"""
from __future__ import annotations

import numpy as np

from .maxsim import maxsim, maxsim_many
from .token_ivf import doc_blocks

__all__ = ["exhaustive_search", "plaid_search", "score_docs", "top_k"]

SCAN_TOKENS = 1 << 13      # stored tokens read (decompressed) at once by the scans
INTERACTION_FACTOR = 2     # documents ranked by full centroid interaction, per document then scored exactly
QUERY_ROWS = 1024          # query vectors scored together against a block by the exhaustive scan


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


def exhaustive_search(snap, queries: list[np.ndarray], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact MaxSim of each query against every document: ``[(scores, rows)]``, best first. Each block of stored
    tokens is read (and decompressed) once for all queries, which are scored in groups of QUERY_ROWS vectors."""
    best = [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in queries]
    groups, rows = [], 0
    for i, q in enumerate(queries):
        if not groups or rows + len(q) > QUERY_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(i)
        rows += len(q)
    off = snap.offsets
    for d0, d1 in doc_blocks(off, SCAN_TOKENS):
        vecs = snap.token_range_vectors(int(off[d0]), int(off[d1]))
        local = np.asarray(off[d0:d1 + 1]) - off[d0]
        docs = np.arange(d0, d1, dtype=np.int64)
        for group in groups:
            scores = maxsim_many([queries[i] for i in group], vecs, local)
            for i, s in zip(group, scores):
                best[i] = top_k(np.concatenate([best[i][0], s]), np.concatenate([best[i][1], docs]), k)
    return best


def _probe(snap, query: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """The query's scores with every centroid (m x K), and the centroids probed: each query vector's ``cells``
    nearest."""
    qc = query @ snap.codec.centroids.T
    cells = min(cells, qc.shape[1])
    if cells < qc.shape[1]:
        return qc, np.unique(np.argpartition(-qc, cells - 1, axis=1)[:, :cells])
    return qc, np.arange(qc.shape[1])


def _probed_interaction(snap, qc: np.ndarray, probed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (documents listed under a probed centroid) and their approximate MaxSim from the inverted file
    alone: per query vector, the best probed centroid the document has a token in."""
    ivf_off, ivf_docs = snap.ivf
    starts, lengths = ivf_off[probed], ivf_off[probed + 1] - ivf_off[probed]
    firsts = np.zeros(len(probed), np.int64)
    np.cumsum(lengths[:-1], out=firsts[1:])
    pos = np.repeat(starts - firsts, lengths) + np.arange(int(lengths.sum()))
    docs = np.asarray(ivf_docs[pos], dtype=np.int64)
    cell = np.repeat(probed, lengths)
    order = np.argsort(docs, kind="stable")
    docs, cell = docs[order], cell[order]
    bounds = np.flatnonzero(np.concatenate([[True], docs[1:] != docs[:-1]]))
    return docs[bounds], np.maximum.reduceat(qc[:, cell], bounds, axis=1).sum(axis=0)


def _full_interaction(snap, qc: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Approximate MaxSim of documents ``rows`` with every token counted as its centroid (codes only, no vectors)."""
    off = snap.offsets
    starts, stops = off[rows], off[rows + 1]
    firsts = np.zeros(len(rows), np.int64)
    np.cumsum((stops - starts)[:-1], out=firsts[1:])
    codes = np.concatenate([snap.codes[a:b] for a, b in zip(starts.tolist(), stops.tolist())])
    return np.maximum.reduceat(qc[:, codes], firsts, axis=1).sum(axis=0)


def plaid_search(snap, query: np.ndarray, k: int, *, cells: int, candidates: int,
                 return_stats: bool = False):
    """PLAID retrieval (see the module docstring): ``(scores, rows)``, best first."""
    if snap.count == 0:
        empty = (np.empty(0, np.float32), np.empty(0, np.int64))
        return (*empty, {"candidates": 0, "scored": 0}) if return_stats else empty
    qc, probed = _probe(snap, query, cells)
    cand, approx = _probed_interaction(snap, qc, probed)
    keep = min(max(candidates, k), len(cand))
    _, chosen = top_k(approx.astype(np.float32), cand, min(len(cand), INTERACTION_FACTOR * keep))
    if len(chosen) > keep:
        _, chosen = top_k(_full_interaction(snap, qc, chosen).astype(np.float32), chosen, keep)
    scores, rows = top_k(score_docs(snap, query, chosen), chosen, k)
    if return_stats:
        return scores, rows, {"candidates": int(len(cand)), "scored": int(len(chosen))}
    return scores, rows
