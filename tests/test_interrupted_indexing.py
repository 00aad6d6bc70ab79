"""A process that dies at any phase of publishing a build leaves the previous index (or none) or the complete new
one at the path, never a broken one, and the next build cleans up what it left.

Crashes are injected deterministically: ``PYTERRIER_DENSE_FAULT=<phase>`` makes the indexing process ``os._exit(99)``
at that phase of the publish (no cleanup runs, as with SIGKILL or a power cut), so every phase is hit on every run.
"""
import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import pyterrier_dense as ptd
from pyterrier_dense.indexes import DenseIndexWriter

DIM, OLD_N, NEW_N = 16, 10, 2000
OLD_SEED, NEW_SEED, FRESH_SEED = 101, 202, 303
FAULT_ENV = "PYTERRIER_DENSE_FAULT"
# phases of IndexBuild.publish, in order; the crash lands before the pointer swap for all but the last
PHASES = ["before_manifest", "after_manifest", "after_rename", "after_swap"]
META, LOCK = "pt_meta.json", ".write.lock"

CHILD = textwrap.dedent("""
    import sys, numpy as np, pyterrier_dense as ptd
    path, mode, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    vecs = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    ptd.DenseIndex(path).indexer(mode=mode).index({"docno": f"new{i}", "doc_vec": vecs[i]} for i in range(n))
    print("finished", flush=True)
""")


def records(prefix: str, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """The docnos and vectors a build writes: the child computes the same from the same seed."""
    return [f"{prefix}{i}" for i in range(n)], np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def read_index(path) -> dict:
    """Everything about the index at ``path``, checksums verified; pins nothing once it returns."""
    index = ptd.DenseIndex(path)
    index.verify()
    snap = index.snapshot()
    state = {"docnos": list(snap.docnos[np.arange(snap.count)]), "vectors": np.array(snap.vectors),
             "generation": snap.reader.generation, "count": snap.count}
    del index, snap
    gc.collect()
    return state


def assert_holds(path, docnos: list[str], vectors: np.ndarray) -> dict:
    state = read_index(path)
    assert state["docnos"] == docnos
    assert state["vectors"].dtype == np.float32 and np.array_equal(state["vectors"], vectors)
    return state


def generations(path) -> list[str]:
    return sorted(p for p in os.listdir(path) if p.startswith("g") and os.path.isdir(os.path.join(path, p)))


def builds(path) -> list[str]:
    return sorted(p for p in os.listdir(path) if p.startswith("build-"))


def run_crashing_child(path, mode: str, phase: str | None, index_before: bool, new_count: int,
                       script: str = CHILD) -> int:
    """Run the indexing child with the fault at ``phase``; while it runs, check the path as a reader would: there is
    always an index when there was one before, and whatever index is there opens and holds the old or the new
    document count."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if phase is not None:
        env[FAULT_ENV] = phase
    child = subprocess.Popen([sys.executable, "-c", script, str(path), mode, str(NEW_N), str(NEW_SEED)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    allowed = {OLD_N, new_count} if index_before else {new_count}
    try:
        while child.poll() is None:
            index = ptd.DenseIndex(path)
            if index_before:
                assert index.exists(), f"the index at {path} went missing while a build was publishing"
            if index.exists():
                assert index.count in allowed
            del index
            time.sleep(0.01)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    gc.collect()
    assert "finished" not in out, f"the child finished without crashing ({phase}): {err[-2000:]}"
    return child.returncode


@pytest.mark.parametrize("mode", ["overwrite", "append"])
@pytest.mark.parametrize("index_before", [False, True], ids=["no_index_before", "index_before"])
@pytest.mark.parametrize("phase", PHASES)
def test_crash_at_each_publish_phase(tmp_path, phase, index_before, mode):
    path = tmp_path / "victim.dense"
    old_docnos, old_vecs = records("old", OLD_N, OLD_SEED)
    new_docnos, new_vecs = records("new", NEW_N, NEW_SEED)
    if index_before:
        with DenseIndexWriter(path, dim=DIM) as w:
            w.add(old_docnos, old_vecs)
        old_meta = (path / META).read_bytes()
        old_generation = read_index(path)["generation"]
    if mode == "append" and index_before:
        want_docnos, want_vecs = old_docnos + new_docnos, np.concatenate([old_vecs, new_vecs])
    else:
        want_docnos, want_vecs = new_docnos, new_vecs

    rc = run_crashing_child(path, mode, phase, index_before, len(want_docnos))
    assert rc == 99, f"the fault at {phase} did not land (exit status {rc})"

    swapped = phase == "after_swap"
    if swapped:   # the pointer names the new generation: the complete new index is there
        state = assert_holds(path, want_docnos, want_vecs)
        if index_before:   # killed before it removed the old generation: the next build does
            assert old_generation in generations(path) and state["generation"] != old_generation
    elif index_before:   # exactly the previous index: same pointer file, same generation, same documents
        assert (path / META).read_bytes() == old_meta
        state = assert_holds(path, old_docnos, old_vecs)
        assert state["generation"] == old_generation
    else:   # no index, and reading says why rather than calling the directory corrupt
        index = ptd.DenseIndex(path)
        assert not index.exists()
        with pytest.raises(FileNotFoundError, match="interrupted"):
            index.count
        del index
        gc.collect()

    # what the crash left, phase by phase (this also shows the crash landed where its name says)
    if phase in ("before_manifest", "after_manifest"):
        [build] = builds(path)
        written = np.fromfile(path / build / "vecs.f4", dtype=np.float32).reshape(-1, DIM)
        assert np.array_equal(written, want_vecs), "the vectors were not all written before the publish began"
        builder = path / build / ".builder.json"
        if phase == "before_manifest":
            info = json.loads(builder.read_text())
            assert info["host"] == socket.gethostname()
        else:
            assert not builder.exists() and (path / build / META).exists()
    elif phase == "after_rename":
        assert not builds(path)
        current = [old_generation] if index_before else []
        [orphan] = [g for g in generations(path) if g not in current]
        assert_holds(path / orphan, want_docnos, want_vecs)   # a complete generation, just not yet pointed to
    else:
        assert not builds(path)

    # the next normal build is not blocked by the leftovers, removes them, and leaves only its own generation
    exists = ptd.DenseIndex(path).exists()
    assert exists == (index_before or swapped)
    fresh_docnos, fresh_vecs = records("fresh", 3, FRESH_SEED)
    with DenseIndexWriter(path, dim=DIM, mode="overwrite" if exists else "error", lock_timeout=10) as w:
        w.add(fresh_docnos, fresh_vecs)
    state = assert_holds(path, fresh_docnos, fresh_vecs)
    assert builds(path) == []
    assert generations(path) == [state["generation"]]
    assert sorted(os.listdir(path)) == sorted([LOCK, META, state["generation"]])
    assert os.listdir(tmp_path) == ["victim.dense"]


def crash_while_writing_the_pointer(tmp_path, index_before: bool):
    """A build killed between writing the new pointer's temporary file and renaming it over ``pt_meta.json``."""
    path = tmp_path / "victim.dense"
    old_docnos, old_vecs = records("old", OLD_N, OLD_SEED)
    if index_before:
        with DenseIndexWriter(path, dim=DIM) as w:
            w.add(old_docnos, old_vecs)
    rc = run_crashing_child(path, "overwrite", "during_swap", index_before, NEW_N)
    assert rc == 99
    return path, old_docnos, old_vecs


@pytest.mark.parametrize("index_before", [False, True], ids=["no_index_before", "index_before"])
def test_a_crash_while_writing_the_pointer_leaves_the_previous_state(tmp_path, index_before):
    path, old_docnos, old_vecs = crash_while_writing_the_pointer(tmp_path, index_before)
    if index_before:
        assert_holds(path, old_docnos, old_vecs)
    else:
        assert not ptd.DenseIndex(path).exists()
        with pytest.raises(FileNotFoundError, match="interrupted"):
            ptd.DenseIndex(path).count


@pytest.mark.parametrize("index_before", [False, True], ids=["no_index_before", "index_before"])
def test_a_crash_while_writing_the_pointer_does_not_block_or_litter_the_next_build(tmp_path, index_before):
    path, _, _ = crash_while_writing_the_pointer(tmp_path, index_before)
    fresh_docnos, fresh_vecs = records("fresh", 3, FRESH_SEED)
    with DenseIndexWriter(path, dim=DIM, mode="overwrite" if index_before else "error", lock_timeout=10) as w:
        w.add(fresh_docnos, fresh_vecs)
    state = assert_holds(path, fresh_docnos, fresh_vecs)
    assert sorted(os.listdir(path)) == sorted([LOCK, META, state["generation"]])


def test_a_build_that_completes_leaves_only_its_generation(tmp_path):
    """The child without a fault (the control for the crash tests): it finishes, and replaces the previous index."""
    path = tmp_path / "victim.dense"
    old_docnos, old_vecs = records("old", OLD_N, OLD_SEED)
    with DenseIndexWriter(path, dim=DIM) as w:
        w.add(old_docnos, old_vecs)
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), "overwrite", str(NEW_N), str(NEW_SEED)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished" in done.stdout
    state = assert_holds(path, *records("new", NEW_N, NEW_SEED))
    assert sorted(os.listdir(path)) == sorted([LOCK, META, state["generation"]])


def test_ctrl_c_during_a_first_build_leaves_nothing(tmp_path):
    docnos, vecs = records("d", 5000, 1)

    def docs():   # more than one write chunk reaches the disk before the interrupt
        for d, v in zip(docnos, vecs):
            yield {"docno": d, "doc_vec": v}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ptd.DenseIndex(tmp_path / "x.dense").indexer().index(docs())
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", ["overwrite", "append"])
def test_ctrl_c_leaves_the_previous_index(tmp_path, mode):
    path = tmp_path / "x.dense"
    old_docnos, old_vecs = records("old", OLD_N, OLD_SEED)
    with DenseIndexWriter(path, dim=DIM) as w:
        w.add(old_docnos, old_vecs)
    old_meta = (path / META).read_bytes()
    old_generation = read_index(path)["generation"]
    new_docnos, new_vecs = records("new", 5000, 2)

    def docs():
        for d, v in zip(new_docnos, new_vecs):
            yield {"docno": d, "doc_vec": v}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ptd.DenseIndex(path).indexer(mode=mode).index(docs())
    assert (path / META).read_bytes() == old_meta
    assert_holds(path, old_docnos, old_vecs)
    assert sorted(os.listdir(path)) == sorted([LOCK, META, old_generation])


def test_only_this_hosts_unfinished_builds_are_removed(tmp_path, caplog):
    """Another host's unfinished build may be alive (on a shared filesystem we cannot tell): it is left alone. One of
    this host is dead, as the next builder holds the write lock: it is removed."""
    path = tmp_path / "x.dense"
    old_docnos, old_vecs = records("old", OLD_N, OLD_SEED)
    with DenseIndexWriter(path, dim=DIM) as w:
        w.add(old_docnos, old_vecs)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    foreign, ours = path / "build-0000aaaa", path / "build-0000bbbb"
    for directory, info in ((foreign, {"host": "some-other-host", "pid": 1}),
                            (ours, {"host": socket.gethostname(), "pid": dead_pid})):
        directory.mkdir()
        (directory / ".builder.json").write_text(json.dumps(info))
        (directory / "vecs.f4").write_bytes(b"\0" * 64)
    foreign_files = sorted(os.listdir(foreign))

    new_docnos, new_vecs = records("new", 20, 5)
    with caplog.at_level("WARNING", logger="pyterrier_dense"):
        with DenseIndexWriter(path, mode="append", lock_timeout=10) as w:
            w.add(new_docnos, new_vecs)
    state = assert_holds(path, old_docnos + new_docnos, np.concatenate([old_vecs, new_vecs]))
    assert not ours.exists()
    assert foreign.is_dir() and sorted(os.listdir(foreign)) == foreign_files
    assert json.loads((foreign / ".builder.json").read_text()) == {"host": "some-other-host", "pid": 1}
    assert any("some-other-host" in r.getMessage() for r in caplog.records), "leaving it was not reported"
    assert sorted(os.listdir(path)) == sorted([LOCK, META, state["generation"], foreign.name])
    # nor does it block a later build, or stop the index being read
    with DenseIndexWriter(path, dim=DIM, mode="overwrite", lock_timeout=10) as w:
        w.add(new_docnos, new_vecs)
    assert_holds(path, new_docnos, new_vecs)
    assert foreign.is_dir()


def test_another_hosts_unfinished_build_does_not_block_a_first_build(tmp_path):
    path = tmp_path / "x.dense"
    foreign = path / "build-0000aaaa"
    foreign.mkdir(parents=True)
    (foreign / ".builder.json").write_text(json.dumps({"host": "some-other-host", "pid": 1}))
    assert not ptd.DenseIndex(path).exists()
    docnos, vecs = records("d", 7, 9)
    with DenseIndexWriter(path, dim=DIM, lock_timeout=10) as w:   # mode="error"
        w.add(docnos, vecs)
    assert_holds(path, docnos, vecs)
    assert foreign.is_dir()
