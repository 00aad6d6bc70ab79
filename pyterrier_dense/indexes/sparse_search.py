"""Exact top-k over a sparse index by the dot product of query and document term weights, and re-scoring of given
documents from the forward postings.

Retrieval is term-at-a-time and vectorised, with MaxScore's bound (Turtle & Flood, 1995) to skip work without
losing exactness: the query's terms go in decreasing order of their largest possible contribution (query weight x
the term's largest weight). Once the contributions still to come add up to less than the k-th best partial score,
no document outside the ones already seen can enter the top k, so the remaining terms' postings are only looked
up for those documents (a binary search in each list) instead of being scanned. Ties are broken by index order.
"""
from __future__ import annotations

import numpy as np

__all__ = ["sparse_top_k", "score_pairs"]


def _top_k(scores: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of (scores, docs), by score descending then doc ascending."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth   # every tie of the k-th score, so that index order decides among them
        scores, docs = scores[keep], docs[keep]
    order = np.lexsort((docs, -scores))[:k]
    return scores[order], docs[order]


def _lookup(docs: np.ndarray, weights: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The weight of each of the ``wanted`` documents (ascending) in one postings list (0 where absent), by binary
    search rather than a scan of the list."""
    pos = np.searchsorted(docs, wanted)
    hit = pos < len(docs)
    hit[hit] = docs[pos[hit]] == wanted[hit]
    out = np.zeros(len(wanted), np.float64)
    out[hit] = weights[pos[hit]]
    return out


def sparse_top_k(snap, term_ids: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores float64, rows int64)`` of the ``k`` documents with the largest dot product with the query
    (``term_ids`` of the index, ``weights`` > 0), best first. Documents sharing no term with the query score 0 and
    are never returned."""
    inv_off, inv_docs, inv_w, max_w = snap.inverted
    term_ids = np.asarray(term_ids, np.int64)
    weights = np.asarray(weights, np.float64)
    if not len(term_ids) or k < 1:
        return np.empty(0), np.empty(0, np.int64)
    bound = weights * max_w[term_ids].astype(np.float64)
    order = np.argsort(-bound, kind="stable")
    term_ids, weights, bound = term_ids[order], weights[order], bound[order]
    # bound of the terms after each, with a margin for the rounding of sums taken in another order
    remaining = np.concatenate([np.cumsum(bound[::-1])[::-1][1:], [0.0]]) * (1 + 1e-9)
    acc = np.zeros(snap.count, np.float64)
    seen = np.zeros(snap.count, bool)
    threshold, i = -np.inf, 0
    # phase 1: scan whole postings lists until the rest cannot bring a new document into the top k. The k-th best
    # score among the documents of the list just scanned is a lower bound of the final k-th score (scores only grow)
    while i < len(term_ids):
        s, e = int(inv_off[term_ids[i]]), int(inv_off[term_ids[i] + 1])
        docs = inv_docs[s:e]
        acc[docs] += weights[i] * inv_w[s:e]
        seen[docs] = True
        if len(docs) >= k:
            part = acc[docs]
            threshold = max(threshold, np.partition(part, len(part) - k)[len(part) - k])
        i += 1
        if remaining[i - 1] < threshold:
            break
    cand = np.flatnonzero(seen)
    scores = acc[cand]
    if i < len(term_ids):
        # phase 2: only the seen documents can still reach the top k; each list is searched for them alone
        if len(cand) >= k:
            threshold = max(threshold, np.partition(scores, len(cand) - k)[len(cand) - k])
        for j in range(i, len(term_ids)):
            keep = scores + remaining[j - 1] >= threshold
            cand, scores = cand[keep], scores[keep]
            s, e = int(inv_off[term_ids[j]]), int(inv_off[term_ids[j] + 1])
            scores += weights[j] * _lookup(inv_docs[s:e], inv_w[s:e], cand)
    return _top_k(scores, cand.astype(np.int64), k)


def score_pairs(snap, rows: np.ndarray, query_terms: np.ndarray, query_weights: np.ndarray) -> np.ndarray:
    """The dot product of one query (``query_terms`` sorted ascending, ``query_weights``) with each document at
    ``rows``, from the forward postings."""
    fwd_off, fwd_terms, fwd_w = snap.forward
    rows = np.asarray(rows, np.int64)
    starts, ends = fwd_off[rows], fwd_off[rows + 1]
    lengths = ends - starts
    out = np.zeros(len(rows), np.float64)
    if not len(query_terms) or not lengths.sum():
        return out
    # every posting of the rows' documents, gathered in one vectorised step
    owner = np.repeat(np.arange(len(rows)), lengths)
    flat = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
    terms = fwd_terms[flat]
    pos = np.minimum(np.searchsorted(query_terms, terms), len(query_terms) - 1)
    hit = query_terms[pos] == terms
    np.add.at(out, owner[hit], query_weights[pos[hit]] * fwd_w[flat[hit]].astype(np.float64))
    return out
