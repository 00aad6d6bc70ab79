"""Residual compression (pyterrier_dense.indexes.residual_codec): bit packing, reconstruction quality by nbits,
per-dimension error bounds, nearest-centroid assignment, determinism, storage round trip and input errors."""
import numpy as np
import pytest

from conftest import random_vectors
from pyterrier_dense.indexes import residual_codec as codec_module
from pyterrier_dense.indexes.residual_codec import ResidualCodec, pack_buckets, suggest_ncentroids, unpack_buckets


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n, seed, dim=64, clusters=8, spread=0.35):
    """Unit vectors around 8 fixed unit centres (the same centres for every seed), noise norm about ``spread``."""
    centres = unit(np.random.default_rng(0).standard_normal((clusters, dim)))
    rng = np.random.default_rng(seed)
    return unit(centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim))


@pytest.fixture(scope="module")
def sample():
    return clustered(3000, seed=1)


@pytest.fixture(scope="module")
def held_out():
    return clustered(1000, seed=2)


@pytest.mark.parametrize("nbits,dim", [(1, 16), (2, 12), (4, 6)])
def test_packing_round_trip(nbits, dim):
    buckets = np.random.default_rng(nbits).integers(0, 1 << nbits, size=(50, dim)).astype(np.uint8)
    packed = pack_buckets(buckets, nbits)
    assert packed.dtype == np.uint8 and packed.shape == (50, dim * nbits // 8)
    assert np.array_equal(unpack_buckets(packed, nbits), buckets)


def test_packing_layout_first_dimension_in_high_bits():
    assert pack_buckets(np.array([[3, 0, 1, 2]]), 2).tolist() == [[0b11_00_01_10]]
    assert pack_buckets(np.array([[1, 0, 0, 0, 0, 0, 1, 1]]), 1).tolist() == [[0b1000_0011]]
    assert pack_buckets(np.array([[9, 4]]), 4).tolist() == [[0x94]]
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        pack_buckets(np.array([[4, 0, 0, 0]]), 2)


def cosines(codec, vectors):
    codes, packed = codec.compress(vectors)
    assert codes.dtype == np.int32 and packed.shape == (len(vectors), codec.bytes_per_vector)
    return np.einsum("ij,ij->i", codec.decompress(codes, packed), vectors), codes


def test_more_bits_reconstruct_better(sample, held_out):
    # Measured over 6 data seeds (64 dims, 8 clusters, 8 centroids): mean cosine of the centroid alone 0.87-0.95,
    # 1 bit 0.946-0.980, 2 bits 0.977-0.992, 4 bits 0.997-0.999; each step gained at least 0.006. The thresholds
    # sit below those minima and a broken bucketing, table or packing lands far below them.
    mean = {}
    for nbits in (1, 2, 4):
        codec = ResidualCodec.train(sample, 8, nbits, seed=0)
        cos, codes = cosines(codec, held_out)
        mean[nbits] = cos.mean()
        centroid_only = np.einsum("ij,ij->i", codec.centroids[codes], held_out).mean()
        assert mean[nbits] > centroid_only + 0.03
    assert mean[1] > 0.93 and mean[2] > 0.97 and mean[4] > 0.995
    assert mean[2] > mean[1] + 0.005 and mean[4] > mean[2] + 0.005


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_per_dimension_error_is_bounded_by_the_bucket(sample, held_out, nbits):
    codec = ResidualCodec.train(sample, 8, nbits, seed=0)
    codes, packed = codec.compress(held_out)
    residuals = held_out - codec.centroids[codes]
    buckets = unpack_buckets(packed, nbits).astype(np.intp)
    cutoffs, weights = codec.cutoffs, codec.weights
    dims = np.arange(codec.dim)
    # the bucket is the number of the dimension's cutoffs <= the value
    expected = np.stack([np.searchsorted(cutoffs[d], residuals[:, d], side="right") for d in dims], axis=1)
    assert np.array_equal(buckets, expected)
    decoded = codec.decode_residuals(packed)
    assert np.array_equal(decoded, weights[dims, buckets])
    # interior bucket [lo, hi): the weight (a mean of training values in it) lies inside, so |error| <= hi - lo;
    # an edge bucket has one cutoff c: |error| <= |r - c| + |c - weight|
    error = np.abs(held_out - (codec.centroids[codes] + decoded))
    padded = np.concatenate([np.full((codec.dim, 1), np.nan), cutoffs, np.full((codec.dim, 1), np.nan)], axis=1)
    lo, hi = padded[dims, buckets], padded[dims, buckets + 1]
    edge = np.where(np.isnan(lo), hi, lo)
    bound = np.where(np.isnan(lo) | np.isnan(hi),
                     np.abs(residuals - edge) + np.abs(edge - decoded), hi - lo)
    assert (error <= bound + 1e-6).all()
    assert (np.abs(weights[:, 1:-1] - cutoffs[:, :-1]) <= cutoffs[:, 1:] - cutoffs[:, :-1] + 1e-7).all()


def test_decompress_is_renormalised_centroid_plus_residual(sample, held_out):
    codec = ResidualCodec.train(sample, 8, 2, seed=0)
    codes, packed = codec.compress(held_out.astype(np.float16))
    out = codec.decompress(codes, packed)
    raw = codec.centroids[codes] + codec.decode_residuals(packed)
    np.testing.assert_allclose(out, unit(raw), rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32


def test_blockwise_equals_one_block(monkeypatch, sample, held_out):
    codec = ResidualCodec.train(sample, 8, 4, seed=0)
    whole = codec.compress(held_out), codec.decompress(*codec.compress(held_out))
    monkeypatch.setattr(codec_module, "BLOCK_BYTES", 1000)          # 16-row blocks
    monkeypatch.setattr(codec_module, "ASSIGN_BLOCK_BYTES", 100)    # 3 rows of 8 centroids' scores
    codes, packed = codec.compress(held_out)
    assert np.array_equal(codes, whole[0][0]) and np.array_equal(packed, whole[0][1])
    assert np.array_equal(codec.decompress(codes, packed), whole[1])


def test_assign_is_brute_force_argmax(monkeypatch):
    monkeypatch.setattr(codec_module, "ASSIGN_BLOCK_BYTES", 4 * 32 * 7)   # 7 rows per block
    codec = ResidualCodec.train(unit(random_vectors(400, 32, seed=3)), 32, 2, seed=0)
    vectors = random_vectors(300, 32, seed=4)
    expected = [int(np.argmax([float(v @ c) for c in codec.centroids.astype(np.float64)])) for v in vectors]
    codes = codec.assign(vectors)
    assert codes.dtype == np.int32 and codes.tolist() == expected
    assert np.array_equal(codec.assign(vectors.astype(np.float16)),
                          np.argmax(vectors.astype(np.float16).astype(np.float32) @ codec.centroids.T, axis=1))


def test_train_is_deterministic_for_a_seed(sample):
    first, again = (ResidualCodec.train(sample, 16, 2, seed=7) for _ in range(2))
    other = ResidualCodec.train(sample, 16, 2, seed=8)
    for name, array in first.arrays().items():
        assert np.array_equal(array, again.arrays()[name]), name
    assert not np.array_equal(first.centroids, other.centroids)
    np.testing.assert_allclose(np.linalg.norm(first.centroids, axis=1), 1, atol=1e-6)


def test_arrays_round_trip(sample, held_out):
    codec = ResidualCodec.train(sample, 8, 2, seed=0)
    arrays = codec.arrays()
    assert set(arrays) == {"centroids", "cutoffs", "weights"}
    assert arrays["cutoffs"].shape == (64, 3) and arrays["weights"].shape == (64, 4)
    assert all(a.dtype == np.float32 for a in arrays.values())
    restored = ResidualCodec.from_arrays(arrays, 2)
    codes, packed = codec.compress(held_out)
    assert np.array_equal(restored.decompress(codes, packed), codec.decompress(codes, packed))
    assert restored.bytes_per_vector == codec.bytes_per_vector == 16


def test_from_arrays_rejects_bad_shapes(sample):
    arrays = ResidualCodec.train(sample, 8, 2, seed=0).arrays()
    with pytest.raises(ValueError, match="cutoffs must be shape \\(64, 3\\)"):
        ResidualCodec.from_arrays({**arrays, "cutoffs": arrays["cutoffs"][:, :2]}, 2)
    with pytest.raises(ValueError, match="cutoffs must be shape \\(64, 15\\)"):
        ResidualCodec.from_arrays(arrays, 4)                        # arrays of a 2-bit codec read as 4-bit
    with pytest.raises(ValueError, match="weights must be shape \\(64, 4\\)"):
        ResidualCodec.from_arrays({**arrays, "weights": arrays["weights"].T}, 2)
    with pytest.raises(ValueError, match="lack \\['weights'\\]"):
        ResidualCodec.from_arrays({k: v for k, v in arrays.items() if k != "weights"}, 2)
    with pytest.raises(ValueError, match="unit rows"):
        ResidualCodec.from_arrays({**arrays, "centroids": 2 * arrays["centroids"]}, 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        ResidualCodec.from_arrays({**arrays, "cutoffs": arrays["cutoffs"][:, ::-1]}, 2)


def test_training_and_input_errors(sample):
    with pytest.raises(ValueError, match="ncentroids=10 exceeds the 9 sample vectors"):
        ResidualCodec.train(sample[:9], 10, 2)
    with pytest.raises(ValueError, match="nbits must be one of"):
        ResidualCodec.train(sample, 8, 3)
    with pytest.raises(ValueError, match="multiple of 8.*12 \\* 1"):
        ResidualCodec.train(unit(random_vectors(100, 12)), 8, 1)
    odd = ResidualCodec.train(unit(random_vectors(100, 12)), 8, 2)       # 12 dims x 2 bits = 3 bytes
    assert odd.compress(unit(random_vectors(5, 12)))[1].shape == (5, 3)
    with pytest.raises(ValueError, match="dim 32 does not match the codec's dim 12"):
        odd.compress(random_vectors(5, 32))
    with pytest.raises(ValueError, match="codes must lie in"):
        odd.decompress(np.array([8]), np.zeros((1, 3), np.uint8))


def test_suggest_ncentroids():
    assert suggest_ncentroids(1_000_000) == 4096           # 2**floor(log2(8 * 1000))
    assert suggest_ncentroids(10_000) == 512                # 8 * 100 = 800 -> 512
    assert suggest_ncentroids(1_000_000, sample_size=10_000) == 2048   # at least 4 sample tokens per centroid
    assert suggest_ncentroids(1_000_000, sample_size=1_000_000) == 4096
    assert suggest_ncentroids(50) == 32 and suggest_ncentroids(8) == 8
    assert suggest_ncentroids(5) == 4 and suggest_ncentroids(1) == 1
    values = [suggest_ncentroids(t) for t in range(1, 5000, 7)]
    assert all(v & (v - 1) == 0 for v in values) and values == sorted(values)
    assert all(v <= t for v, t in zip(values, range(1, 5000, 7)))
    with pytest.raises(ValueError):
        suggest_ncentroids(0)
