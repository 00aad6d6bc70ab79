"""Resumable builds: a build interrupted (an exception such as Ctrl-C, or a process killed after a shard completes)
and run again encodes only the documents after its last completed shard, and publishes the same index as an
uninterrupted build, for every index kind."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyterrier_dense as ptd
from conftest import random_vectors

FAULT_ENV = "PYTERRIER_DENSE_FAULT"
WORDS = ["gene", "cell", "protein", "cancer", "field", "quantum", "light", "wave", "theory", "electron"]


def texts(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"docno": f"d{i}", "text": " ".join(rng.choice(WORDS, int(rng.integers(3, 12))))} for i in range(n)]


def interrupted(records, after: int):
    """The records, then a KeyboardInterrupt (Ctrl-C) when record ``after`` is asked for."""
    for i, r in enumerate(records):
        if i == after:
            raise KeyboardInterrupt
        yield r


def files_of(index) -> dict:
    """The bytes of every file of the current generation but the manifest (which holds times and generation)."""
    directory = index.snapshot().reader.directory
    return {p: open(os.path.join(directory, p), "rb").read() for p in sorted(os.listdir(directory))
            if not p.startswith(".") and p != "pt_meta.json"}


def partials(path) -> list[str]:
    return sorted(p for p in os.listdir(path) if p.startswith("partial-")) if os.path.isdir(path) else []


@pytest.fixture
def counted(tiny_encoder, monkeypatch):
    """The tiny encoder, counting the documents it encodes, read by PyTerrier in batches of 100 documents."""
    monkeypatch.setattr(tiny_encoder.model, "chunk_size", 100)
    seen = []
    encode = tiny_encoder.model.encode

    def counting(texts, role="doc", **kw):
        if role == "doc":
            seen.extend(texts)
        return encode(texts, role=role, **kw)
    monkeypatch.setattr(tiny_encoder.model, "encode", counting)
    return tiny_encoder, seen


def test_ctrl_c_then_rerun_encodes_only_the_rest_and_equals_one_build(tmp_path, counted):
    enc, seen = counted
    docs = texts(250)
    whole = ptd.DenseIndex(tmp_path / "whole.dense")
    (enc >> whole.indexer(shard_size=50)).index(docs)
    assert partials(whole.path) == []                       # published: nothing left to resume

    index = ptd.DenseIndex(tmp_path / "x.dense")
    seen.clear()
    with pytest.raises(KeyboardInterrupt):                   # batches of 100: docs 0-99 indexed, then Ctrl-C at 180
        (enc >> index.indexer(shard_size=50)).index(interrupted(docs, 180))
    assert not index.exists() and len(partials(index.path)) == 1   # no index, two completed shards kept
    seen.clear()
    (enc >> index.indexer(shard_size=50)).index(docs)
    assert len(seen) == 150                                   # the 100 done documents were not encoded again
    assert files_of(index) == files_of(whole)
    assert partials(index.path) == []


def test_resume_checks_the_documents_are_the_same(tmp_path, counted):
    enc, _ = counted
    docs = texts(120)
    index = ptd.DenseIndex(tmp_path / "x.dense")
    with pytest.raises(KeyboardInterrupt):
        (enc >> index.indexer(shard_size=20)).index(interrupted(docs, 110))
    other = [{**d, "docno": "z" + d["docno"]} if i == 7 else d for i, d in enumerate(docs)]
    with pytest.raises(ValueError, match=r"document 7 of the input has docno 'zd7'.*has 'd7'.*resume=False"):
        (enc >> index.indexer(shard_size=20)).index(other)
    (enc >> index.indexer(shard_size=20, resume=False)).index(other)   # starts again, from scratch
    assert index.snapshot().docnos[np.array([7])][0] == "zd7" and partials(index.path) == []


def test_resume_refuses_another_encoder(tmp_path, tiny_st_model, other_tiny_model):
    docs = texts(120)
    index = ptd.DenseIndex(tmp_path / "x.dense")
    first = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    first.model.chunk_size = 20   # PyTerrier reads 20 documents at a time: shards complete before the Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        (first >> index.indexer(shard_size=20)).index(interrupted(docs, 110))
    other = ptd.BiEncoder(other_tiny_model, precision="fp32", verbose=False)
    with pytest.raises(ValueError, match="another encoder configuration.*resume=False"):
        (other >> index.indexer(shard_size=20)).index(docs)


def test_other_options_do_not_resume(tmp_path, counted):
    enc, seen = counted
    docs = texts(150)
    index = ptd.DenseIndex(tmp_path / "x.dense")
    with pytest.raises(KeyboardInterrupt):
        (enc >> index.indexer(shard_size=50)).index(interrupted(docs, 120))
    seen.clear()
    (enc >> index.indexer(shard_size=50, dtype="float16")).index(docs)   # another dtype: a build of its own
    assert len(seen) == 150 and partials(index.path) == []


CHILD = textwrap.dedent("""
    import sys, numpy as np, pyterrier_dense as ptd
    sys.path.insert(0, sys.argv[3])
    from test_resumable_indexing import stage_and_records
    kind, path = sys.argv[1], sys.argv[2]
    indexer, records = stage_and_records(kind, path)
    indexer.index(records)
    print("finished", flush=True)
""")


def stage_and_records(kind: str, path: str):
    """An indexer of ``kind`` with shards of 30 documents, and 100 records carrying their representations."""
    rng = np.random.default_rng(5)
    if kind == "dense":
        vecs = random_vectors(100, 16, seed=3)
        return ptd.DenseIndex(path).indexer(shard_size=30), [{"docno": f"d{i}", "doc_vec": vecs[i]} for i in range(100)]
    if kind in ("float16", "residual"):
        centres = rng.standard_normal((6, 16))
        recs = []
        for i in range(100):
            m = centres[rng.integers(0, 6, int(rng.integers(2, 9)))] + 0.3 * rng.standard_normal((1, 16))
            m = (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)
            recs.append({"docno": f"d{i}", "doc_embs": m, "doc_token_ids": rng.integers(5, 60, len(m))})
        return ptd.ColBERTIndex(path).indexer(storage=kind, shard_size=30), recs
    recs = [{"docno": f"d{i}", "toks": {f"t{j}": float(rng.random()) + 0.1 for j in rng.integers(0, 40, 6)}}
            for i in range(100)]
    return ptd.SparseIndex(path).indexer(shard_size=30), recs


@pytest.mark.parametrize("kind", ["dense", "float16", "residual", "sparse"])
def test_a_kill_after_a_shard_then_rerun_equals_one_build(tmp_path, kind):
    whole_path, path = str(tmp_path / "whole"), str(tmp_path / "x")
    indexer, records = stage_and_records(kind, whole_path)
    whole = indexer.index(records)
    env = {**os.environ, FAULT_ENV: "after_shard_1"}
    child = subprocess.run([sys.executable, "-c", CHILD, kind, path, os.path.dirname(__file__)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 99 and "finished" not in child.stdout, child.stderr[-2000:]
    assert len(partials(path)) == 1
    indexer, records = stage_and_records(kind, path)
    resumed = indexer.index(records)                         # records given with their vectors: the indexer drops
    assert files_of(resumed) == files_of(whole)              # the 60 done ones itself, checking their docnos
    assert partials(path) == []


def test_a_corrupt_shard_fails_the_build_and_names_it(tmp_path):
    path = str(tmp_path / "x")
    env = {**os.environ, FAULT_ENV: "after_shard_1"}
    subprocess.run([sys.executable, "-c", CHILD, "dense", path, os.path.dirname(__file__)], env=env,
                   capture_output=True, timeout=300)
    (shard,) = [os.path.join(path, p, "shard-000001.rec") for p in partials(path)]
    data = bytearray(open(shard, "rb").read())
    data[-5] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    indexer, records = stage_and_records("dense", path)
    with pytest.raises(ValueError, match="shard-000001.rec does not match.*corrupt partial build"):
        indexer.index(records)
    assert not ptd.DenseIndex(path).exists()


def test_resume_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="shard_size"):
        ptd.DenseIndex(tmp_path / "x").indexer(shard_size=0)
    with pytest.raises(ValueError, match="resume"):
        ptd.SparseIndex(tmp_path / "y").indexer(resume="yes")
