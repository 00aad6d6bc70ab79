"""indexes/exact_search: rankings against brute force, block merging, deterministic ties."""
import numpy as np
import pytest

from pyterrier_dense.indexes import exact_search
from pyterrier_dense.indexes.exact_search import exact_top_k
from conftest import random_vectors


def brute_force(q, v, k):
    s = q @ v.T
    order = np.lexsort((np.broadcast_to(np.arange(len(v)), s.shape), -s), axis=-1)[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("k", [1, 7, 100, 500])
def test_matches_brute_force(k):
    q, v = random_vectors(13, 16, 1), random_vectors(300, 16, 2)
    scores, rows = exact_top_k(q, v, k)
    ref_s, ref_r = brute_force(q, v, min(k, 300))
    np.testing.assert_array_equal(rows, ref_r)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5)


def test_blockwise_merge_equals_single_block(monkeypatch):
    q, v = random_vectors(9, 16, 3), random_vectors(1000, 16, 4)
    whole = exact_top_k(q, v, 50)
    monkeypatch.setattr(exact_search, "SCORE_BUDGET", 9 * 64)  # 64-document blocks
    monkeypatch.setattr(exact_search, "QUERY_BLOCK", 4)         # and query blocks of 4
    blocked = exact_top_k(q, v, 50)
    np.testing.assert_array_equal(whole[1], blocked[1])
    np.testing.assert_allclose(whole[0], blocked[0], rtol=1e-6)


def test_ties_are_broken_by_row_even_at_the_cutoff(monkeypatch):
    v = np.zeros((40, 2), np.float32)
    v[:, 0] = [1.0 if i % 3 else 2.0 for i in range(40)]  # 14 rows score 2, the rest 1
    q = np.array([[1.0, 0.0]], np.float32)
    _, rows = exact_top_k(q, v, 20)
    expected = [i for i in range(40) if i % 3 == 0] + [i for i in range(40) if i % 3][:6]
    assert rows[0].tolist() == expected
    monkeypatch.setattr(exact_search, "SCORE_BUDGET", 25)  # same answer across blocks
    assert exact_top_k(q, v, 20)[1][0].tolist() == expected


def test_k_larger_than_collection_and_no_queries():
    v = random_vectors(5, 4)
    assert exact_top_k(random_vectors(2, 4), v, 100)[1].shape == (2, 5)
    assert exact_top_k(np.empty((0, 4), np.float32), v, 3)[1].shape == (0, 0)


class SliceSpy:
    """An array that records the rows of every slice read from it."""

    def __init__(self, array):
        self.array, self.reads = array, []

    def __len__(self):
        return len(self.array)

    def __getitem__(self, key):
        out = self.array[key]
        self.reads.append(len(out))
        return out


def test_memory_is_bounded_by_bytes_for_one_query_and_float16(monkeypatch):
    """Blocks were sized by rows (SCORE_BUDGET // n_queries: 33.5M rows for one query), so a float16 index was
    converted to float32 whole; now each block of float32 vectors is at most BLOCK_BYTES."""
    monkeypatch.setattr(exact_search, "BLOCK_BYTES", 1 << 16, raising=False)
    v = random_vectors(5000, 16, 2).astype(np.float16)
    spy = SliceSpy(v)
    q = random_vectors(1, 16, 1)
    scores, rows = exact_top_k(q, spy, 50)
    assert max(spy.reads) * 16 * 4 <= 1 << 16 and len(spy.reads) > 1
    ref_s, ref_r = brute_force(q, v.astype(np.float32), 50)
    np.testing.assert_array_equal(rows, ref_r)


def test_rerank_gathers_a_bounded_number_of_vectors_at_once(monkeypatch):
    from pyterrier_dense.indexes import ann_search
    monkeypatch.setattr(ann_search, "GATHER_BYTES", 1 << 14)
    v = random_vectors(400, 8, 3)
    gathered = []

    class Snapshot:
        dim = 8

        def gather(self, rows):
            gathered.append(len(rows))
            return v[rows]

    q = random_vectors(30, 8, 4)
    candidates = np.tile(np.arange(200), (30, 1))
    candidates[:, -3:] = -1   # fewer found than asked
    scores, rows = ann_search.AnnSearcher._rescore(Snapshot(), q, candidates)
    assert max(gathered) * 8 * 4 <= 1 << 14 and sum(gathered) == 30 * 200
    exact = q @ v[:197].T
    np.testing.assert_array_equal(rows[:, :197], np.argsort(-exact, axis=1, kind="stable"))
    assert (rows[:, 197:] == -1).all() and np.isinf(scores[:, 197:]).all()
