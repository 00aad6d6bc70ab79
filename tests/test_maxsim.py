"""Late-interaction scoring (pyterrier_dense.indexes.maxsim): exact against hand-computed and brute-force scores,
block boundaries, pair re-ranking in any order, bounded blocks, and errors that name the culprit."""
import numpy as np
import pytest

from conftest import random_vectors
from pyterrier_dense.indexes import maxsim as maxsim_module
from pyterrier_dense.indexes.maxsim import maxsim, maxsim_pairs


def brute_force(query, tokens, offsets):
    """sum_i max_t query[i] . tokens[t] per document, in float64 Python loops."""
    query, tokens = np.asarray(query, np.float64), np.asarray(tokens, np.float64)
    scores = []
    for j in range(len(offsets) - 1):
        doc = tokens[offsets[j]:offsets[j + 1]]
        scores.append(sum(max(float(q @ t) for t in doc) for q in query))
    return np.array(scores)


def random_collection(lengths, dim, seed, lead=0):
    """Token matrix with ``lead`` unused rows first, and offsets of documents of the given lengths after them."""
    offsets = lead + np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return random_vectors(int(offsets[-1]) + 3, dim, seed), offsets


def test_hand_computed_example():
    query = np.array([[1, 0, 2], [0, 1, -1]], np.float32)
    tokens = np.array([[9, 9, 9],                            # not part of any document: offsets start at 1
                       [1, 1, 0], [0, 2, 1],                 # doc 0: q0 -> max(1, 2) = 2; q1 -> max(1, 1) = 1
                       [2, 0, 0], [0, 0, 1], [-1, 3, 0]],    # doc 1: q0 -> max(2, 2, -1) = 2; q1 -> max(0, -1, 3) = 3
                      np.float32)
    scores = maxsim(query, tokens, np.array([1, 3, 6]))
    assert scores.dtype == np.float32
    assert scores.tolist() == [3.0, 5.0]
    assert maxsim_pairs([query[1:], query], np.array([1, 0]), tokens, np.array([1, 3, 6])).tolist() == [3.0, 3.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("block_bytes", [1 << 25, 97, 1000])
def test_matches_brute_force(monkeypatch, dtype, block_bytes):
    """Small budgets force many block boundaries and documents bigger than a block (scored alone)."""
    monkeypatch.setattr(maxsim_module, "MAXSIM_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(1)
    tokens, offsets = random_collection(rng.integers(1, 30, size=40), 16, seed=2, lead=5)
    tokens = tokens.astype(dtype)
    query = random_vectors(5, 16, seed=3)
    expected = brute_force(query, tokens, offsets)
    np.testing.assert_allclose(maxsim(query, tokens, offsets), expected, rtol=1e-5, atol=1e-4)


def test_read_only_float16_memmap(tmp_path):
    tokens, offsets = random_collection([3, 1, 7, 2], 8, seed=4, lead=2)
    np.save(tmp_path / "tokens.npy", tokens.astype(np.float16))
    mapped = np.load(tmp_path / "tokens.npy", mmap_mode="r")
    query = random_vectors(3, 8, seed=5)
    np.testing.assert_allclose(maxsim(query, mapped, offsets), brute_force(query, mapped, offsets),
                               rtol=1e-5, atol=1e-4)


def test_blocks_stay_within_budget(monkeypatch):
    budget = 2000
    monkeypatch.setattr(maxsim_module, "MAXSIM_BLOCK_BYTES", budget)
    seen = []
    real = maxsim_module._segment_maxsim

    def recording(query, block, starts):
        seen.append((len(query), block.shape, len(starts), block.dtype))
        return real(query, block, starts)
    monkeypatch.setattr(maxsim_module, "_segment_maxsim", recording)
    lengths = [5, 40, 3, 3, 3, 90, 1, 1, 12]
    tokens, offsets = random_collection(lengths, 6, seed=6)
    query = random_vectors(4, 6, seed=7)
    maxsim(query, tokens.astype(np.float16), offsets)
    assert sum(docs for _, _, docs, _ in seen) == len(lengths) and len(seen) > 3
    for m, (t, dim), docs, dtype in seen:
        assert dtype == np.float32
        assert docs == 1 or 4 * t * (m + dim) <= budget   # scores + the float32 copy of the float16 block


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("block_bytes", [1 << 25, 150])
def test_pairs_equal_per_pair_maxsim(monkeypatch, dtype, block_bytes):
    monkeypatch.setattr(maxsim_module, "MAXSIM_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(8)
    queries = [random_vectors(m, 12, seed=10 + m) for m in (3, 7, 1, 4)]   # query 3 has no pairs
    # query 0's pairs are adjacent (read in place); queries 1 and 2 interleave (gathered)
    pair_query = np.concatenate([[0, 0, 0, 0], rng.integers(1, 3, size=25), [0], rng.integers(1, 3, size=6)])
    tokens, offsets = random_collection(rng.integers(1, 20, size=len(pair_query)), 12, seed=9, lead=4)
    tokens = tokens.astype(dtype)
    scores = maxsim_pairs(queries, pair_query, tokens, offsets)
    assert scores.dtype == np.float32 and scores.shape == (len(pair_query),)
    expected = [maxsim(queries[q], tokens, offsets[p:p + 2])[0] for p, q in enumerate(pair_query)]
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(scores, [brute_force(queries[q], tokens, offsets[p:p + 2])[0]
                                        for p, q in enumerate(pair_query)], rtol=1e-5, atol=1e-4)


def test_no_documents():
    tokens = random_vectors(4, 3)
    assert maxsim(random_vectors(2, 3), tokens, np.array([2])).shape == (0,)
    assert maxsim_pairs([random_vectors(2, 3)], np.zeros(0, np.int64), tokens, np.array([0])).shape == (0,)


def test_empty_document_is_named():
    tokens = random_vectors(10, 4)
    with pytest.raises(ValueError, match="document 2 has no tokens"):
        maxsim(random_vectors(2, 4), tokens, np.array([1, 3, 5, 5, 9]))
    with pytest.raises(ValueError, match="pair 1 has no tokens"):
        maxsim_pairs([random_vectors(2, 4)], np.array([0, 0]), tokens, np.array([0, 4, 4]))


def test_empty_query_and_dim_mismatch():
    tokens, offsets = random_vectors(6, 5), np.array([0, 3, 6])
    with pytest.raises(ValueError, match="no vectors"):
        maxsim(np.zeros((0, 5), np.float32), tokens, offsets)
    with pytest.raises(ValueError, match="query 1 has no vectors"):
        maxsim_pairs([random_vectors(2, 5), np.zeros((0, 5), np.float32)], np.array([0, 1]), tokens, offsets)
    with pytest.raises(ValueError, match="dim 7 does not match token dim 5"):
        maxsim(random_vectors(2, 7), tokens, offsets)
    with pytest.raises(ValueError, match="query 0 dim 3 does not match token dim 5"):
        maxsim_pairs([random_vectors(2, 3)], np.array([0, 0]), tokens, offsets)


def test_bad_offsets_and_pair_queries():
    tokens = random_vectors(6, 5)
    query = random_vectors(2, 5)
    with pytest.raises(ValueError, match="offsets decrease at document 1"):
        maxsim(query, tokens, np.array([0, 4, 2]))
    with pytest.raises(ValueError, match="outside the 6 token rows"):
        maxsim(query, tokens, np.array([0, 7]))
    with pytest.raises(ValueError, match="pair 1 refers to query 3"):
        maxsim_pairs([query], np.array([0, 3]), tokens, np.array([0, 2, 4]))
    with pytest.raises(ValueError, match="one per pair"):
        maxsim_pairs([query], np.array([0]), tokens, np.array([0, 2, 4]))
