"""Late-interaction search over a :class:`~pyterrier_dense.indexes.token_store.TokenSnapshot`: exact MaxSim over
every document (the reference), PLAID-style end-to-end retrieval, and re-scoring of given documents.

PLAID (Santhanam et al., 2022) in three steps:

1. **cells probed**: each query vector's ``cells`` nearest centroids; the documents listed under any of them in the
   inverted file are the candidates;
2. **centroid interaction** (the pruning steps): each candidate gets an approximate MaxSim in which a document token
   counts as its centroid and only the probed centroids are seen, computed from the inverted file alone; the best
   ``INTERACTION_FACTOR * candidates`` go on to a full centroid interaction (every token counted as its centroid,
   from the stored codes), and the best ``candidates`` of those go on;
3. **exact MaxSim** over those documents' stored (decompressed) token vectors; the top ``k`` are returned. For a
   frame of queries, each chosen document is read once for all the queries that chose it.

Steps 1 and 2 cost little beside step 3, whose products are as many as ``candidates`` documents' tokens times the
query's vectors: it is what the knob trades against recall.

Probing every cell with ``candidates >= count`` gives exactly the exhaustive ranking.
"""
from __future__ import annotations

import numpy as np

from .maxsim import as_float32, gathered_rows, maxsim, maxsim_many
from .token_ivf import doc_blocks

__all__ = ["exhaustive_search", "plaid_search", "score_docs", "score_pairs", "top_k", "DEFAULT_CANDIDATES"]

SCAN_TOKENS = 1 << 13      # stored tokens read (decompressed) at once by the scans
SHARED_DOCS = 2            # score_pairs reads documents once for all queries when they are chosen this often
INTERACTION_FACTOR = 4     # documents ranked by full centroid interaction, per document then scored exactly
QUERY_ROWS = 1024          # query vectors scored together against a block by the exhaustive scan
# documents a query scores exactly by default, per storage. Residual storage's centroid interaction is a closer
# stand-in for its own MaxSim (its tokens are their centroids plus a coarse residual) and its exact stage costs
# more (decompression). SciFact zero-shot, recall of the same storage's exhaustive top 100 at 224 / 256 / 288 /
# 320 candidates: float16 0.914 / 0.934 / 0.949 / 0.961; 2-bit 0.950 / 0.963 / 0.973 / 0.980; 1-bit 0.976 /
# 0.984 / 0.988 / 0.992.
DEFAULT_CANDIDATES = {"float16": 320, "residual": 256}


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


def _query_groups(queries: list[np.ndarray]) -> list[list[int]]:
    """Consecutive queries in groups of at most QUERY_ROWS vectors (a longer query alone)."""
    groups, rows = [], 0
    for i, q in enumerate(queries):
        if not groups or rows + len(q) > QUERY_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(i)
        rows += len(q)
    return groups


def exhaustive_search(snap, queries: list[np.ndarray], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact MaxSim of each query against every document: ``[(scores, rows)]``, best first. Each block of stored
    tokens is read (and decompressed) once for all queries, which are scored in groups of QUERY_ROWS vectors."""
    best = [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in queries]
    groups = _query_groups(queries)
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


def _probe(qc: np.ndarray, cells: int) -> np.ndarray:
    """The centroids probed for a query whose scores with every centroid are ``qc`` (m x K): each query vector's
    ``cells`` nearest."""
    cells = min(cells, qc.shape[1])
    if cells < qc.shape[1]:
        return np.unique(np.argpartition(-qc, cells - 1, axis=1)[:, :cells])
    return np.arange(qc.shape[1])


def _probed_interaction(snap, qc: np.ndarray, probed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (documents listed under a probed centroid) and their approximate MaxSim from the inverted file
    alone: per query vector, the best probed centroid the document has a token in."""
    ivf_off, ivf_docs = snap.ivf
    starts, lengths = ivf_off[probed], ivf_off[probed + 1] - ivf_off[probed]
    docs = np.asarray(ivf_docs[gathered_rows(starts, lengths)[0]], dtype=np.int64)
    cell = np.repeat(probed, lengths)
    order = np.argsort(docs, kind="stable")
    docs, cell = docs[order], cell[order]
    bounds = np.flatnonzero(np.concatenate([[True], docs[1:] != docs[:-1]]))
    return docs[bounds], _interaction(qc, cell, bounds)


def _full_interaction(snap, qc: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Approximate MaxSim of documents ``rows`` with every token counted as its centroid (codes only, no vectors)."""
    off = snap.offsets
    tokens, firsts = gathered_rows(off[rows], off[rows + 1] - off[rows])
    return _interaction(qc, snap.codes[tokens], firsts)


def _interaction(qc: np.ndarray, cells: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """Sum over query vectors of the best centroid score in each run of ``cells`` (run j starts at ``firsts[j]``),
    ``qc`` being the query's (m x K) centroid scores. ``np.take`` along axis 1 then a reduction along contiguous
    rows: 5x faster than fancy indexing ``qc[:, cells]`` or reducing gathered (n x m) rows."""
    return np.maximum.reduceat(np.take(qc, cells, axis=1), firsts, axis=1).sum(axis=0)


def _candidates(snap, qc: np.ndarray, k: int, cells: int, candidates: int) -> np.ndarray:
    """Steps 1 and 2 for one query whose scores with the centroids are ``qc`` (m x K): the rows to score exactly."""
    cand, approx = _probed_interaction(snap, qc, _probe(qc, cells))
    keep = min(max(candidates, k), len(cand))
    _, chosen = top_k(approx.astype(np.float32), cand, min(len(cand), INTERACTION_FACTOR * keep))
    if len(chosen) > keep:
        _, chosen = top_k(_full_interaction(snap, qc, chosen).astype(np.float32), chosen, keep)
    return chosen


def score_pairs(snap, queries: list[np.ndarray], rows: list[np.ndarray]) -> list[np.ndarray]:
    """Exact MaxSim of each query with its own documents ``rows[i]``: ``[scores]`` aligned with ``rows``.

    Where the queries share documents (a frame of many queries), each document is read (and decompressed) once and
    scored against all the queries that chose it, their vectors stacked into one product; otherwise each query's
    documents are gathered into one product of their own (:func:`score_docs`)."""
    sizes = np.array([len(r) for r in rows], np.int64)
    pair_doc = np.concatenate(rows).astype(np.int64) if len(rows) else np.empty(0, np.int64)
    docs, pair_at = np.unique(pair_doc, return_inverse=True)
    if len(pair_doc) < SHARED_DOCS * len(docs):
        return [score_docs(snap, q, r) for q, r in zip(queries, rows)]
    pair_query = np.repeat(np.arange(len(queries)), sizes)
    order = np.lexsort((pair_query, pair_at))                 # by document, then query
    bounds = np.searchsorted(pair_at[order], np.arange(len(docs) + 1))
    stacked = np.concatenate(queries)
    q_off = np.zeros(len(queries) + 1, np.int64)
    np.cumsum([len(q) for q in queries], out=q_off[1:])
    scores = np.empty(len(pair_doc), np.float32)
    off = snap.offsets
    lengths = off[docs + 1] - off[docs]
    doc_bounds = np.zeros(len(docs) + 1, np.int64)
    np.cumsum(lengths, out=doc_bounds[1:])
    for a, b in doc_blocks(doc_bounds, SCAN_TOKENS):
        vecs, local = snap.doc_tokens(docs[a:b])
        vecs = as_float32(vecs)
        for j in range(a, b):
            pairs = order[bounds[j]:bounds[j + 1]]
            qs = pair_query[pairs]
            vec_rows, firsts = gathered_rows(q_off[qs], q_off[qs + 1] - q_off[qs])
            sims = stacked[vec_rows] @ vecs[local[j - a]:local[j - a + 1]].T
            scores[pairs] = np.add.reduceat(sims.max(axis=1), firsts)
    return np.split(scores, np.cumsum(sizes)[:-1])


def plaid_search(snap, queries: list[np.ndarray], k: int, *, cells: int,
                 candidates: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """PLAID retrieval (see the module docstring) of several queries: ``[(scores, rows)]``, best first. The
    queries' scores with every centroid come from one product per group of QUERY_ROWS vectors, and the exact
    stage reads each chosen document once for all the queries that chose it (:func:`score_pairs`)."""
    if snap.count == 0 or not queries:
        return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in queries]
    centroids = snap.codec.centroids
    chosen = []
    for group in _query_groups(queries):
        qc = np.concatenate([queries[i] for i in group]) @ centroids.T
        at = 0
        for i in group:
            chosen.append(_candidates(snap, qc[at:at + len(queries[i])], k, cells, candidates))
            at += len(queries[i])
    return [top_k(s, r, k) for s, r in zip(score_pairs(snap, queries, chosen), chosen)]
