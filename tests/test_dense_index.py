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


def test_append_equals_a_build_from_scratch(tmp_path):
    full, vecs = build(tmp_path / "full.dense", n=20)
    with DenseIndexWriter(tmp_path / "inc.dense", mode="append") as w:   # append to nothing creates the index
        w.add([f"doc{i}" for i in range(7)], vecs[:7])
    for lo, hi in ((7, 15), (15, 20)):
        with DenseIndexWriter(tmp_path / "inc.dense", mode="append") as w:
            w.add([f"doc{i}" for i in range(lo, hi)], vecs[lo:hi])
    inc = ptd.DenseIndex(tmp_path / "inc.dense")
    assert inc.count == 20
    np.testing.assert_array_equal(inc.vectors, full.vectors)
    assert inc.docnos[np.arange(20)].tolist() == full.docnos[np.arange(20)].tolist()
    q = random_vectors(3, 8, seed=5)
    for a, b in zip(inc.search(q, 10), full.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    inc.verify()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_append_keeps_float16_and_refuses_another_dtype_or_dim(tmp_path):
    index, vecs = build(tmp_path / "h.dense", n=4, dtype="float16")
    with DenseIndexWriter(tmp_path / "h.dense", mode="append") as w:
        w.add(["new"], vecs[:1])
    assert ptd.DenseIndex(tmp_path / "h.dense").manifest["dtype"] == "float16"
    assert os.path.getsize(tmp_path / "h.dense" / "vecs.f2") == 5 * 8 * 2
    with pytest.raises(ValueError, match="cannot append as float32 to .* which stores float16"):
        DenseIndexWriter(tmp_path / "h.dense", mode="append", dtype="float32")
    with pytest.raises(ValueError, match="cannot append 4-dimensional vectors .* holds 8-dimensional"):
        DenseIndexWriter(tmp_path / "h.dense", mode="append", dim=4)
    with pytest.raises(ValueError, match="4-dimensional vector; this index holds 8"):
        with DenseIndexWriter(tmp_path / "h.dense", mode="append") as w:
            w.add(["x"], random_vectors(1, 4))
    assert ptd.DenseIndex(tmp_path / "h.dense").count == 5


def test_append_of_a_stored_docno_fails_and_keeps_the_index(tmp_path):
    build(tmp_path / "x.dense", n=6)
    before = {f: (tmp_path / "x.dense" / f).read_bytes() for f in os.listdir(tmp_path / "x.dense")}
    with pytest.raises(ValueError, match="duplicate docno 'doc3'"):
        with DenseIndexWriter(tmp_path / "x.dense", mode="append") as w:
            w.add(["new1", "doc3"], random_vectors(2, 8))
    after = {f: (tmp_path / "x.dense" / f).read_bytes() for f in os.listdir(tmp_path / "x.dense")}
    assert after == before and os.listdir(tmp_path) == ["x.dense"]


def test_append_refuses_to_mix_encoded_and_given_vectors(tmp_path):
    build(tmp_path / "raw.dense", n=4)
    settings = {"dim": 8, "fingerprint": "abc", "pooling": "mean"}
    with pytest.raises(ValueError, match="built from vectors given directly; append the same way"):
        DenseIndexWriter(tmp_path / "raw.dense", mode="append", encoder=settings)
    with DenseIndexWriter(tmp_path / "enc.dense", encoder=settings) as w:
        w.add(["a"], random_vectors(1, 8))
    with pytest.raises(ValueError, match="built by an encoder; append the same way"):
        DenseIndexWriter(tmp_path / "enc.dense", mode="append")
    with pytest.raises(ValueError, match="another encoder configuration \\(pooling: index 'mean', encoder 'cls'\\)"):
        DenseIndexWriter(tmp_path / "enc.dense", mode="append", encoder={**settings, "pooling": "cls"})


def test_append_detects_a_concurrent_change(tmp_path):
    build(tmp_path / "x.dense", n=6)
    with pytest.raises(RuntimeError, match="changed while documents were being appended"):
        with DenseIndexWriter(tmp_path / "x.dense", mode="append") as w:
            w.add(["new"], random_vectors(1, 8))
            build(tmp_path / "x.dense", n=10, mode="overwrite")   # another process replaced it meanwhile
    assert ptd.DenseIndex(tmp_path / "x.dense").count == 10


def test_a_build_killed_between_its_two_renames_is_named(tmp_path):
    build(tmp_path / "x.dense")
    os.replace(tmp_path / "x.dense", tmp_path / "x.dense.old-999999-abcd")   # what a kill after the first rename leaves
    with pytest.raises(FileNotFoundError, match="x.dense.old-999999-abcd holds the previous index; rename it back"):
        ptd.DenseIndex(tmp_path / "x.dense").count
