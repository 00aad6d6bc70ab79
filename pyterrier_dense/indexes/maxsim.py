"""Late-interaction (ColBERT MaxSim) scoring of queries against documents' token vectors, exact, in numpy.

A document is a run of rows in one token matrix, delimited by an offsets array. For each query (and each block of
its documents) one float32 GEMM scores the query vectors against the documents' tokens laid end to end, so no
padding is ever computed; ``np.maximum.reduceat`` then takes each document's maximum per query vector and a sum
over query vectors gives the scores. Memory is bounded: at most ``MAXSIM_BLOCK_BYTES`` of float32 scores plus the
float32 copy of a block (float16 tokens converted, or tokens gathered for scattered pairs) are held at once; a
single document larger than that is scored alone.
"""
from __future__ import annotations

import functools
from typing import Iterator, Sequence

import faiss
import numpy as np

__all__ = ["as_float32", "gathered_rows", "maxsim", "maxsim_many", "maxsim_pairs", "MAXSIM_BLOCK_BYTES"]

MAXSIM_BLOCK_BYTES = 1 << 25   # at most this many bytes of float32 query x token scores (and block copies) at once


def _token_matrix(tokens) -> np.ndarray:
    tokens = np.asarray(tokens)   # a memmap stays mapped: only the view's type changes
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be a 2-D (num_tokens, dim) matrix, got shape {tokens.shape}")
    return tokens


def _query_matrix(query, dim: int, name: str = "query") -> np.ndarray:
    query = np.asarray(query)
    if query.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (num_vectors, dim) matrix, got shape {query.shape}")
    if query.shape[0] == 0:
        raise ValueError(f"{name} has no vectors (shape {query.shape})")
    if query.shape[1] != dim:
        raise ValueError(f"{name} dim {query.shape[1]} does not match token dim {dim}")
    return np.ascontiguousarray(query, dtype=np.float32)


def _checked_offsets(offsets, num_tokens: int, what: str) -> np.ndarray:
    """Offsets as int64, with each document non-empty and inside the token matrix; errors name the position."""
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) == 0 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(f"offsets must be a non-empty 1-D integer array, got {offsets.dtype} shape {offsets.shape}")
    offsets = offsets.astype(np.int64, copy=False)
    if offsets[0] < 0 or offsets[-1] > num_tokens:
        raise ValueError(f"offsets span [{offsets[0]}, {offsets[-1]}), outside the {num_tokens} token rows")
    bad = np.flatnonzero(offsets[1:] <= offsets[:-1])
    if bad.size:
        j = int(bad[0])
        if offsets[j + 1] < offsets[j]:
            raise ValueError(f"offsets decrease at {what} {j}: {offsets[j]} > {offsets[j + 1]}")
        raise ValueError(f"{what} {j} has no tokens (offsets[{j}] == offsets[{j + 1}] == {offsets[j]})")
    return offsets


def _blocks(lengths: np.ndarray, bytes_per_token: int) -> Iterator[tuple[int, int]]:
    """Split consecutive documents into ``[i, j)`` runs of at most MAXSIM_BLOCK_BYTES (one document at least)."""
    cap = max(1, MAXSIM_BLOCK_BYTES // bytes_per_token)
    ends = np.cumsum(lengths)
    i, n = 0, len(lengths)
    while i < n:
        before = ends[i - 1] if i else 0
        j = max(i + 1, int(np.searchsorted(ends, before + cap, side="right")))
        yield i, j
        i = j


def _segment_maxsim(query: np.ndarray, block: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Scores of the documents laid end to end in ``block``, document k starting at row ``starts[k]``."""
    scores = query @ block.T                                # (m, t): one GEMM, no padding
    return np.maximum.reduceat(scores, starts, axis=1).sum(axis=0)


@functools.lru_cache(maxsize=8)
def _fp16_decoder(dim: int) -> faiss.ScalarQuantizer:
    return faiss.ScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16)


def as_float32(block: np.ndarray) -> np.ndarray:
    """The block as float32. Float16 rows go through FAISS's SIMD decoder (bit-exact) on the calling thread only:
    a multi-threaded decode leaves OpenMP threads spinning that then starve the GEMM's BLAS threads (measured: 2x
    slower end to end on 2 cores), and numpy's astype is 1.7x slower than the single-threaded decode."""
    if block.dtype == np.float32:
        return block
    if block.dtype != np.float16 or not block.flags.c_contiguous or not block.size:
        return block.astype(np.float32)
    threads = faiss.omp_get_max_threads()   # per-thread OpenMP setting: other threads are unaffected
    faiss.omp_set_num_threads(1)
    try:
        return _fp16_decoder(block.shape[1]).decode(block.view(np.uint8))
    finally:
        faiss.omp_set_num_threads(threads)


def _maxsim_contiguous(query: np.ndarray, tokens: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """Score documents that follow one another in ``tokens`` (validated offsets), slicing without a copy."""
    converts = tokens.dtype != np.float32
    per_token = 4 * len(query) + (4 * tokens.shape[1] if converts else 0)
    for i, j in _blocks(np.diff(offsets), per_token):
        start = offsets[i]
        block = as_float32(tokens[start:offsets[j]])
        out[i:j] = _segment_maxsim(query, block, offsets[i:j] - start)


def gathered_rows(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of documents ``[starts[k], starts[k] + lengths[k])`` end to end, and each one's first position."""
    firsts = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=firsts[1:])
    rows = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - firsts, lengths)
    return rows, firsts


def _maxsim_scattered(query: np.ndarray, tokens: np.ndarray, offsets: np.ndarray, pairs: np.ndarray,
                      out: np.ndarray) -> None:
    """Score pairs whose documents are not adjacent in ``tokens``: gather each block's rows, then one GEMM."""
    lengths = offsets[pairs + 1] - offsets[pairs]
    per_token = 4 * len(query) + 4 * tokens.shape[1] + 8 + (tokens.itemsize * tokens.shape[1]
                                                             if tokens.dtype != np.float32 else 0)
    for i, j in _blocks(lengths, per_token):
        rows, firsts = gathered_rows(offsets[pairs[i:j]], lengths[i:j])
        block = as_float32(np.take(tokens, rows, axis=0))
        out[pairs[i:j]] = _segment_maxsim(query, block, firsts)


def maxsim(query: np.ndarray, tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Late-interaction scores of one query against consecutive documents.

    ``query``: (m, dim) float32, only the vectors that count (no padding rows). ``tokens``: (T, dim) float32 or
    float16, possibly a read-only memmap. ``offsets``: int (nd + 1,), non-decreasing; document j is
    ``tokens[offsets[j]:offsets[j + 1]]`` (``offsets[0]`` need not be 0). Returns float32 (nd,):
    ``S_j = sum_i max_{t in doc j} query[i] . tokens[t]``.

    >>> q = np.array([[1., 0.], [0., 1.]], dtype=np.float32)
    >>> t = np.array([[1., 2.], [3., 0.], [0., 5.]], dtype=np.float32)
    >>> maxsim(q, t, np.array([0, 2, 3])).tolist()
    [5.0, 5.0]
    """
    tokens = _token_matrix(tokens)
    query = _query_matrix(query, tokens.shape[1])
    offsets = _checked_offsets(offsets, len(tokens), "document")
    out = np.empty(len(offsets) - 1, np.float32)
    _maxsim_contiguous(query, tokens, offsets, out)
    return out


def _checked_pair_query(pair_query, num_pairs: int, num_queries: int) -> np.ndarray:
    pair_query = np.asarray(pair_query)
    if pair_query.shape != (num_pairs,) or (num_pairs and not np.issubdtype(pair_query.dtype, np.integer)):
        raise ValueError(f"pair_query must be {num_pairs} integers (one per pair), got {pair_query.dtype} "
                         f"shape {pair_query.shape}")
    bad = np.flatnonzero((pair_query < 0) | (pair_query >= num_queries))
    if bad.size:
        p = int(bad[0])
        raise ValueError(f"pair {p} refers to query {pair_query[p]}, but there are {num_queries} queries")
    return pair_query.astype(np.int64, copy=False)


def maxsim_pairs(queries: Sequence[np.ndarray], pair_query: np.ndarray, tokens: np.ndarray,
                 offsets: np.ndarray) -> np.ndarray:
    """Late-interaction scores of many queries' candidate documents at once (re-ranking).

    ``queries``: (m_q, dim) float32 matrices (m_q may differ). ``pair_query``: int (P,), the query of each pair
    (pairs need not be grouped or sorted). Pair p's document is ``tokens[offsets[p]:offsets[p + 1]]``, offsets
    (P + 1,). Returns float32 (P,) in pair order. Each query's pairs are scored together: a query whose pairs are
    adjacent (the usual layout) reads its tokens in place, otherwise its documents are gathered block by block.
    """
    tokens = _token_matrix(tokens)
    queries = [_query_matrix(q, tokens.shape[1], f"query {k}") for k, q in enumerate(queries)]
    offsets = _checked_offsets(offsets, len(tokens), "pair")
    pair_query = _checked_pair_query(pair_query, len(offsets) - 1, len(queries))
    out = np.empty(len(pair_query), np.float32)
    order = np.argsort(pair_query, kind="stable")           # each query's pairs, in ascending pair order
    bounds = np.searchsorted(pair_query[order], np.arange(len(queries) + 1))
    for q, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        pairs = order[lo:hi]
        if len(pairs) and pairs[-1] - pairs[0] == len(pairs) - 1:   # adjacent pairs: no gather needed
            first = pairs[0]
            _maxsim_contiguous(queries[q], tokens, offsets[first:first + len(pairs) + 1], out[first:])
        elif len(pairs):
            _maxsim_scattered(queries[q], tokens, offsets, pairs, out)
    return out


def maxsim_many(queries: Sequence[np.ndarray], tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Scores of several queries against the same consecutive documents: float32 (len(queries), nd).

    All queries' vectors are stacked into one GEMM over each block of tokens (converted from float16 once, not once
    per query), then a segment max per document and a segment sum per query. The score matrix is bounded by
    MAXSIM_BLOCK_BYTES as in :func:`maxsim`.
    """
    tokens = _token_matrix(tokens)
    queries = [_query_matrix(q, tokens.shape[1], f"query {k}") for k, q in enumerate(queries)]
    offsets = _checked_offsets(offsets, len(tokens), "document")
    stacked = np.concatenate(queries)
    firsts = np.zeros(len(queries), np.int64)
    np.cumsum([len(q) for q in queries[:-1]], out=firsts[1:])
    out = np.empty((len(queries), len(offsets) - 1), np.float32)
    per_token = 4 * len(stacked) + (4 * tokens.shape[1] if tokens.dtype != np.float32 else 0)
    for i, j in _blocks(np.diff(offsets), per_token):
        start = offsets[i]
        block = as_float32(tokens[start:offsets[j]])
        best = np.maximum.reduceat(stacked @ block.T, offsets[i:j] - start, axis=1)   # (rows, docs)
        out[:, i:j] = np.add.reduceat(best, firsts, axis=0)
    return out
