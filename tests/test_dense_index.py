"""indexes/: the atomic storage helper, DenseIndex writing/reading, corruption and bad input."""
import json
import os

import numpy as np
import pyterrier as pt
import pytest

import pyterrier_dense as ptd
from pyterrier_dense.indexes import CorruptIndexError, DenseIndexWriter, IndexLockedError
from conftest import random_vectors


def generation(path):
    """The directory of the index's current generation."""
    return ptd.DenseIndex(path).snapshot().reader.directory


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
    assert (meta["type"], meta["format"], meta["format_version"]) == ("dense_index", "pyterrier_dense", 2)
    assert meta["files"]["vecs.f4"]["bytes"] == 20 * 8 * 4
    loaded = pt.Artifact.load(str(tmp_path / "x.dense"))
    assert isinstance(loaded, ptd.DenseIndex) and loaded.count == 20
    index.verify()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_float16_storage_halves_the_bytes(tmp_path):
    index, vecs = build(tmp_path / "h.dense", dtype="float16")
    assert os.path.getsize(generation(tmp_path / "h.dense") / "vecs.f2") == 20 * 8 * 2
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
    vec_file = generation(tmp_path / "x.dense") / "vecs.f4"
    data = vec_file.read_bytes()
    vec_file.write_bytes(data[:-4])
    with pytest.raises(CorruptIndexError, match="vecs.f4 is 636 bytes but the manifest says 640"):
        ptd.DenseIndex(tmp_path / "x.dense").count
    import pyterrier_dense.indexes.storage as storage
    storage._READERS.clear()
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
    with pytest.raises(ValueError, match="pass dim= \\(index.indexer\\(dim=384\\)\\)"):
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
    assert os.path.getsize(generation(tmp_path / "h.dense") / "vecs.f2") == 5 * 8 * 2
    with pytest.raises(ValueError, match="cannot append as float32 to .* which stores float16"):
        with DenseIndexWriter(tmp_path / "h.dense", mode="append", dtype="float32"):
            pass
    with pytest.raises(ValueError, match="cannot append 4-dimensional vectors .* holds 8-dimensional"):
        with DenseIndexWriter(tmp_path / "h.dense", mode="append", dim=4):
            pass
    with pytest.raises(ValueError, match="4-dimensional vector; this index holds 8"):
        with DenseIndexWriter(tmp_path / "h.dense", mode="append") as w:
            w.add(["x"], random_vectors(1, 4))
    assert ptd.DenseIndex(tmp_path / "h.dense").count == 5


def test_append_of_a_stored_docno_fails_and_keeps_the_index(tmp_path):
    build(tmp_path / "x.dense", n=6)
    def files():   # the write lock's holder record (pid, time to the second) is not the index's content
        return {str(f): f.read_bytes() for f in sorted((tmp_path / "x.dense").rglob("*"))
                if f.is_file() and f.name != ".write.lock"}
    before = files()
    with pytest.raises(ValueError, match="duplicate docno 'doc3'"):
        with DenseIndexWriter(tmp_path / "x.dense", mode="append") as w:
            w.add(["new1", "doc3"], random_vectors(2, 8))
    assert files() == before and os.listdir(tmp_path) == ["x.dense"]


def test_append_refuses_to_mix_encoded_and_given_vectors(tmp_path):
    build(tmp_path / "raw.dense", n=4)
    settings = {"dim": 8, "fingerprint": "abc", "pooling": "mean"}
    with pytest.raises(ValueError, match="built from vectors given directly; append the same way"):
        with DenseIndexWriter(tmp_path / "raw.dense", mode="append", encoder=settings):
            pass
    with DenseIndexWriter(tmp_path / "enc.dense", encoder=settings) as w:
        w.add(["a"], random_vectors(1, 8))
    with pytest.raises(ValueError, match="built by an encoder; append the same way"):
        with DenseIndexWriter(tmp_path / "enc.dense", mode="append", encoder=None) as w:
            w.set_encoder(None)
    with pytest.raises(ValueError, match="another encoder configuration \\(pooling: index 'mean', encoder 'cls'\\)"):
        with DenseIndexWriter(tmp_path / "enc.dense", mode="append", encoder={**settings, "pooling": "cls"}):
            pass


def test_a_nested_build_of_the_same_index_fails_instead_of_waiting_for_itself(tmp_path):
    build(tmp_path / "x.dense", n=6)
    with pytest.raises(IndexLockedError, match="already being written by this thread"):
        with DenseIndexWriter(tmp_path / "x.dense", mode="append") as w:
            w.add(["new"], random_vectors(1, 8))
            build(tmp_path / "x.dense", n=10, mode="overwrite")
    assert ptd.DenseIndex(tmp_path / "x.dense").count == 6


@pytest.mark.parametrize("docno", ["a\x0bb", "a\x0cb", "a\x1cb", "a\x85b", "a\u2028b", "a\u2029b", "a\nb", "a\x00",
                                   "x" * 5000, "\U0001f600"])
def test_any_docno_is_stored_exactly_and_keeps_its_row(tmp_path, docno):
    """Line-splitting characters, trailing NULs and long docnos once shifted or changed stored docnos."""
    docnos = ["first", docno, "a", "last"]
    vecs = random_vectors(4, 8)
    with DenseIndexWriter(tmp_path / "x.dense", dim=8) as w:
        w.add(docnos, vecs)
    index = ptd.DenseIndex(tmp_path / "x.dense")
    assert index.docnos[np.arange(4)].tolist() == docnos
    assert index.docnos.rows_of(docnos).tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(index.vectors[index.docnos.rows_of(["last"])[0]], vecs[3])
    # one long docno costs its own bytes, not every row's
    assert index.manifest["files"]["docnos.bin"]["bytes"] == sum(len(d.encode("utf-8")) for d in docnos)


def test_docno_count_must_equal_vector_count_at_open(tmp_path):
    build(tmp_path / "x.dense", n=6)
    meta_path = tmp_path / "x.dense" / "pt_meta.json"
    meta = json.loads(meta_path.read_text())
    meta["count"] = 5
    meta["files"]["vecs.f4"]["bytes"] = 5 * 8 * 4
    (generation(tmp_path / "x.dense") / "vecs.f4").write_bytes(b"\0" * 5 * 8 * 4)
    import pyterrier_dense.indexes.storage as storage
    storage._READERS.clear()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptIndexError, match="do not hold 5 docnos, one per vector"):
        ptd.DenseIndex(tmp_path / "x.dense").count


def test_an_index_object_follows_appends_and_overwrites(tmp_path):
    index, _ = build(tmp_path / "x.dense", n=6)
    assert index.count == 6 and index.docnos[np.arange(6)].tolist()[-1] == "doc5"
    with DenseIndexWriter(tmp_path / "x.dense", mode="append") as w:
        w.add(["new"], random_vectors(1, 8, seed=3))
    assert index.count == 7 and index.docnos[np.arange(7)].tolist()[-1] == "new"
    np.testing.assert_array_equal(index.vectors[6], random_vectors(1, 8, seed=3)[0])
    build(tmp_path / "x.dense", n=4, seed=9, mode="overwrite")
    assert index.count == 4 and len(index.docnos) == 4 and index.vectors.shape == (4, 8)
    np.testing.assert_array_equal(index.vectors, random_vectors(4, 8, seed=9))


def test_a_snapshot_keeps_its_generation_while_the_index_moves_on(tmp_path):
    index, vecs = build(tmp_path / "x.dense", n=6)
    snap = index.snapshot()
    build(tmp_path / "x.dense", n=4, seed=9, mode="overwrite")
    build(tmp_path / "x.dense", n=3, seed=7, mode="overwrite")   # its sweep must not remove the pinned generation
    np.testing.assert_array_equal(snap.vectors, vecs)
    assert snap.docnos[np.arange(6)].tolist() == [f"doc{i}" for i in range(6)]
    snap.verify()
    assert index.count == 3
    pinned = snap.reader.directory
    import gc
    gc.disable()   # the pin must end when the last reference goes, not when a garbage collection happens to run
    try:
        del snap, index
        build(tmp_path / "x.dense", n=2, mode="overwrite")   # nothing pins the old generations now: removed
    finally:
        gc.enable()
    assert not pinned.exists()
    assert len([p for p in os.listdir(tmp_path / "x.dense") if p.startswith("g")]) <= 2


def test_values_that_overflow_the_stored_dtype_name_the_docno(tmp_path):
    vecs = np.ones((2, 4))
    vecs[1, 0] = 1e39   # finite in float64, inf in float32
    with pytest.raises(ValueError, match="document 'b' has a value too large for float32"):
        with DenseIndexWriter(tmp_path / "x.dense", dim=4) as w:
            w.add(["a", "b"], vecs)
    vecs[1, 0] = 1e5    # finite in float32, inf in float16
    with pytest.raises(ValueError, match="document 'b' has a value too large for float16"):
        with DenseIndexWriter(tmp_path / "y.dense", dim=4, dtype="float16") as w:
            w.add(["a", "b"], vecs)
    assert os.listdir(tmp_path) == []


def test_zero_dimensional_vectors_are_refused(tmp_path):
    with pytest.raises(ValueError, match="vectors need at least one dimension"):
        with DenseIndexWriter(tmp_path / "x.dense") as w:
            w.add(["a"], np.empty((1, 0), np.float32))
    with pytest.raises(ValueError, match="dim must be an int >= 1"):
        DenseIndexWriter(tmp_path / "x.dense", dim=0)
    assert os.listdir(tmp_path) == []


def test_a_directory_that_is_not_an_index_is_never_written_into(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is a directory that is not an index"):
        with DenseIndexWriter(tmp_path / "mine", dim=4, mode="overwrite") as w:
            w.add(["a"], random_vectors(1, 4))
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_an_index_of_the_older_format_says_to_rebuild_and_overwrite_replaces_it(tmp_path):
    path = tmp_path / "old.dense"
    path.mkdir()
    (path / "vecs.f4").write_bytes(b"\0" * 32)
    (path / "docnos.npy").write_bytes(b"x")
    (path / "pt_meta.json").write_text(json.dumps({"type": "dense_index", "format": "pyterrier_dense",
                                                   "format_version": 1, "count": 2, "dim": 4, "dtype": "float32",
                                                   "files": {"vecs.f4": {"bytes": 32, "crc32": 0},
                                                             "docnos.npy": {"bytes": 1, "crc32": 0}}}))
    with pytest.raises(CorruptIndexError, match="older pyterrier-dense \\(format 1\\); rebuild it"):
        ptd.DenseIndex(path).count
    index, _ = build(path, n=4, mode="overwrite")
    assert index.count == 4
    assert not (path / "vecs.f4").exists() and not (path / "docnos.npy").exists()


def test_a_generation_copied_out_on_its_own_is_an_index(tmp_path):
    import shutil
    index, vecs = build(tmp_path / "x.dense", n=5)
    shutil.copytree(generation(tmp_path / "x.dense"), tmp_path / "copy.dense")
    copy = ptd.DenseIndex(tmp_path / "copy.dense")
    np.testing.assert_array_equal(copy.vectors, vecs)
    copy.verify()
