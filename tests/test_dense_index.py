"""indexes/: the atomic storage helper, DenseIndex writing/reading, corruption and bad input."""
import json
import os

import numpy as np
import pyterrier as pt
import pytest

import pyterrier_dense as ptd
from pyterrier_dense.indexes import CorruptIndexError, DenseIndexWriter
from conftest import random_vectors


def build(path, n=20, dim=8, seed=0, **kw):
    vecs = random_vectors(n, dim, seed)
    with DenseIndexWriter(path, dim=dim, **kw) as w:
        w.add([f"doc{i}" for i in range(n // 2)], vecs[: n // 2])
        w.add([f"doc{i}" for i in range(n // 2, n)], vecs[n // 2:])
    return ptd.DenseIndex(path), vecs


def test_round_trip_manifest_and_artifact_load(tmp_path):
    index, vecs = build(tmp_path / "x.dense")
    assert (index.count, index.dim) == (20, 8)
    np.testing.assert_array_equal(index.vectors, vecs)
    assert index.docnos[[0, 19]].tolist() == ["doc0", "doc19"]
    assert index.docnos.rows_of(["doc5", "nope"]).tolist() == [5, -1]
    meta = json.loads((tmp_path / "x.dense" / "pt_meta.json").read_text())
    assert (meta["type"], meta["format"], meta["format_version"]) == ("dense_index", "pyterrier_dense", 1)
    assert meta["files"]["vecs.f4"]["bytes"] == 20 * 8 * 4
    loaded = pt.Artifact.load(str(tmp_path / "x.dense"))
    assert isinstance(loaded, ptd.DenseIndex) and loaded.count == 20
    index.verify()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_float16_storage_halves_the_bytes(tmp_path):
    index, vecs = build(tmp_path / "h.dense", dtype="float16")
    assert os.path.getsize(tmp_path / "h.dense" / "vecs.f2") == 20 * 8 * 2
    np.testing.assert_allclose(index.vectors.astype(np.float32), vecs, atol=2e-3)


def test_mode_error_refuses_and_overwrite_replaces(tmp_path):
    build(tmp_path / "x.dense", n=20)
    with pytest.raises(FileExistsError, match="mode='overwrite'"):
        build(tmp_path / "x.dense", n=10)
    index, _ = build(tmp_path / "x.dense", n=10, mode="overwrite")
    assert index.count == 10


@pytest.mark.parametrize("docnos,message", [
    (["a", "b", "a"], "duplicate docno 'a'"),
    (["a", "", "c"], "docno at row 1"),
    (["a", 7, "c"], "docno at row 1"),
])
def test_bad_docnos_name_the_value_and_leave_no_index(tmp_path, docnos, message):
    with pytest.raises(ValueError, match=message):
        with DenseIndexWriter(tmp_path / "x.dense", dim=4) as w:
            w.add(docnos, random_vectors(3, 4))
    assert os.listdir(tmp_path) == []


def test_duplicates_across_chunks_are_caught(tmp_path):
    with pytest.raises(ValueError, match="duplicate docno 'b'"):
        with DenseIndexWriter(tmp_path / "x.dense", dim=4) as w:
            w.add(["a", "b"], random_vectors(2, 4))
            w.add(["c", "b"], random_vectors(2, 4))
    assert os.listdir(tmp_path) == []


def test_nan_vector_names_the_docno(tmp_path):
    vecs = random_vectors(3, 4)
    vecs[2, 1] = np.nan
    with pytest.raises(ValueError, match="document 'z' has a NaN"):
        with DenseIndexWriter(tmp_path / "x.dense", dim=4) as w:
            w.add(["x", "y", "z"], vecs)
    with pytest.raises(ValueError, match="5-dimensional vector"):
        with DenseIndexWriter(tmp_path / "y.dense", dim=4) as w:
            w.add(["x"], random_vectors(1, 5))
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_previous_index(tmp_path):
    build(tmp_path / "x.dense", n=20)
    with pytest.raises(ValueError):
        with DenseIndexWriter(tmp_path / "x.dense", dim=8, mode="overwrite") as w:
            w.add(["a", "a"], random_vectors(2, 8))
    assert ptd.DenseIndex(tmp_path / "x.dense").count == 20


def test_missing_and_corrupt_indexes_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index at"):
        ptd.DenseIndex(tmp_path / "missing").count
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptIndexError, match="has no pt_meta.json"):
        ptd.DenseIndex(tmp_path / "empty").count
    build(tmp_path / "x.dense")
    vec_file = tmp_path / "x.dense" / "vecs.f4"
    data = vec_file.read_bytes()
    vec_file.write_bytes(data[:-4])
    with pytest.raises(CorruptIndexError, match="vecs.f4 is 636 bytes but the manifest says 640"):
        ptd.DenseIndex(tmp_path / "x.dense").count
    vec_file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    index = ptd.DenseIndex(tmp_path / "x.dense")
    assert index.count == 20  # sizes agree ...
    with pytest.raises(CorruptIndexError, match="fails its checksum"):
        index.verify()  # ... but the bytes do not
    (tmp_path / "x.dense" / "pt_meta.json").write_text("{not json")
    with pytest.raises(CorruptIndexError, match="pt_meta.json is corrupt"):
        ptd.DenseIndex(tmp_path / "x.dense").count
    (tmp_path / "x.dense" / "pt_meta.json").write_text(json.dumps({"type": "sparse_index", "format": "x"}))
    with pytest.raises(CorruptIndexError, match="holds a sparse_index.x artifact"):
        ptd.DenseIndex(tmp_path / "x.dense").count


def test_empty_index_needs_a_dim_and_searches_to_nothing(tmp_path):
    with pytest.raises(ValueError, match="pass dim="):
        with DenseIndexWriter(tmp_path / "none.dense"):
            pass
    with DenseIndexWriter(tmp_path / "e.dense", dim=4):
        pass
    index = ptd.DenseIndex(tmp_path / "e.dense")
    scores, rows = index.search(random_vectors(2, 4), 10)
    assert index.count == 0 and rows.shape == (2, 0)


def test_search_rejects_query_vectors_of_another_dimension(tmp_path):
    index, _ = build(tmp_path / "x.dense")
    with pytest.raises(ValueError, match="8-dimensional"):
        index.search(random_vectors(1, 5), 3)
