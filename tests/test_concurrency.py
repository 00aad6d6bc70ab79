"""Several processes writing and reading one index at once: concurrent appends all land, an append racing an overwrite
gives one of the two serial results, readers never mix two builds, a pinned generation survives later builds, a
writer that cannot get the lock says who holds it, a cached FAISS structure is built once, two first builds of one
path serialise, and writers in two threads of one process wait for each other like processes.

Every test runs real processes (``python -c CHILD <role> ...``). They meet through marker files in a ``sync``
directory, so the overlaps the tests need happen on every run, however the processes are scheduled: a process that
finds a lock held says so (the package logs "waiting for ..."; a log handler of the child turns that into a marker),
and the holder keeps the lock until that marker appears.
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
import pandas as pd
import pytest

import pyterrier_dense as ptd
from pyterrier_dense.indexes import DenseIndexWriter

DIM = 16
META, LOCK = "pt_meta.json", ".write.lock"

CHILD = textwrap.dedent(r'''
    import gc, json, os, sys, time
    import numpy as np, pandas as pd
    import pyterrier_dense as ptd
    from pyterrier_dense.indexes import DenseIndexWriter, IndexLockedError

    DIM = 16

    def records(prefix, n, seed):
        return [f"{prefix}{i}" for i in range(n)], np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)

    def build_records(b):
        """Build b of the overwrite loop: doc i has docno b<b>-d<i> and b*1000+i in dim 0, so a score names both."""
        n = build_size(b)
        vecs = np.random.default_rng(b).standard_normal((n, DIM)).astype(np.float32)
        vecs[:, 0] = b * 1000 + np.arange(n)
        return [f"b{b}-d{i}" for i in range(n)], vecs

    def build_size(b):
        return 300 + (b * 37) % 600

    def mark(sync, name, text=""):
        tmp = os.path.join(sync, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(sync, name))

    def wait_for(sync, name, timeout=60, fail_on=None):
        deadline = time.monotonic() + timeout
        while not os.path.exists(os.path.join(sync, name)):
            if fail_on and os.path.exists(os.path.join(sync, fail_on)):
                raise SystemExit(f"{fail_on} appeared while waiting for {name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} never appeared in {sync}")
            time.sleep(0.002)

    def announce_waiting(sync, me):
        """Mark waiting-<me> as soon as this process finds a lock held by another (the package logs it then), so the
        holder can keep the lock until the other is known to be waiting for it: no sleeps, no timing luck."""
        import logging

        class Announce(logging.Handler):
            def emit(self, record):
                if record.getMessage().startswith("waiting for"):
                    mark(sync, f"waiting-{me}", record.getMessage())

        logging.getLogger("pyterrier_dense").addHandler(Announce())

    role, args = sys.argv[1], sys.argv[2:]

    if role == "writer":
        # order: "race" (both go at once), "first" (takes the lock first), "second" (tries once the other holds it)
        path, mode, prefix, n, seed, sync, me, other, order = args
        docnos, vecs = records(prefix, int(n), int(seed))
        announce_waiting(sync, me)
        mark(sync, f"ready-{me}")
        wait_for(sync, "go")
        if order == "second":
            wait_for(sync, f"inside-{other}")
        with DenseIndexWriter(path, dim=DIM if mode == "overwrite" else None, mode=mode, lock_timeout=60) as w:
            first_in = not os.path.exists(os.path.join(sync, f"inside-{other}"))
            mark(sync, f"inside-{me}")
            if first_in:   # hold the lock until the other writer has found it held (and not got it as well)
                wait_for(sync, f"waiting-{other}", fail_on=f"inside-{other}")
            for start in range(0, len(docnos), 1000):
                w.add(docnos[start:start + 1000], vecs[start:start + 1000])
        print(json.dumps({"first_in": first_in}))

    elif role == "overwrite_loop":
        path, sync, first, last = args
        wait_for(sync, "looping")
        for b in range(int(first), int(last) + 1):
            docnos, vecs = build_records(b)
            with DenseIndexWriter(path, dim=DIM, mode="overwrite", lock_timeout=60) as w:
                w.add(docnos, vecs)

    elif role == "reader":
        path, sync = args
        index = ptd.DenseIndex(path)
        pinned = index.snapshot()   # the long-lived reader: kept through every build of the loop
        n0 = pinned.count
        docnos0, vecs0 = list(pinned.docnos[np.arange(n0)]), np.array(pinned.vectors)
        directory = pinned.reader.directory
        mark(sync, "pinned", directory.name)
        retriever = ptd.DenseIndex(path).retriever(num_results=5)
        q = np.zeros(DIM, np.float32)
        q[0] = 1
        frame = pd.DataFrame({"qid": ["top", "bottom"], "query_vec": [q, -q]})
        calls, builds_seen, problems = 0, set(), []
        while calls < 20 or not os.path.exists(os.path.join(sync, "stop")):
            try:
                res = retriever(frame)
            except Exception as e:
                problems.append(f"call {calls}: {type(e).__name__}: {e}")
                res = None
            calls += 1
            if calls == 1:
                mark(sync, "looping")
            if res is None:
                continue
            builds = set()
            for qid, sign in (("top", 1), ("bottom", -1)):
                rows = res[res.qid == qid].sort_values("rank")
                if len(rows) != 5:
                    problems.append(f"call {calls}: {len(rows)} results for {qid}")
                    continue
                for rank, (docno, docid, score) in enumerate(zip(rows.docno, rows.docid, rows.score)):
                    b, i = (int(x) for x in docno[1:].split("-d"))
                    builds.add(b)
                    want_row = build_size(b) - 1 - rank if sign > 0 else rank
                    if score != sign * (b * 1000 + i) or docid != i or i != want_row:
                        problems.append(f"call {calls}: {qid} rank {rank}: docno {docno} docid {docid} score {score}")
            if len(builds) > 1:
                problems.append(f"call {calls}: results mix builds {sorted(builds)}")
            builds_seen |= builds
        # the pinned generation is still on disk and unchanged, whatever was built since
        pinned_ok = {
            "directory_exists": directory.is_dir(),
            "same_docnos": list(pinned.docnos[np.arange(n0)]) == docnos0,
            "same_vectors": bool(np.array_equal(pinned.vectors, vecs0)),
            "same_file": bool(np.array_equal(np.fromfile(directory / "vecs.f4", np.float32).reshape(-1, DIM), vecs0)),
        }
        try:
            pinned.verify()   # re-reads every file by name
            pinned_ok["verify"] = True
        except Exception as e:
            pinned_ok["verify"] = f"{type(e).__name__}: {e}"
        report = {"calls": calls, "builds_seen": sorted(builds_seen), "problems": problems[:20],
                  "pinned_count": n0, "pinned_first_docno": docnos0[0], "pinned": pinned_ok}
        del index, pinned, retriever, res
        gc.collect()   # releases this process's hold on every generation
        mark(sync, "released", json.dumps(report))
        wait_for(sync, "exit")

    elif role == "hold_lock":
        path, sync = args
        with DenseIndexWriter(path, mode="append") as w:
            mark(sync, "locked", str(os.getpid()))
            wait_for(sync, "release")

    elif role == "try_lock":
        path, sync, timeout = args
        wait_for(sync, "locked")
        started = time.monotonic()
        try:
            with DenseIndexWriter(path, mode="append", lock_timeout=float(timeout)) as w:
                pass
            print(json.dumps({"error": None}))
        except IndexLockedError as e:
            print(json.dumps({"error": type(e).__name__, "message": str(e),
                              "waited": time.monotonic() - started}))

    elif role == "hnsw":
        path, sync, me, other = args
        queries = np.random.default_rng(11).standard_normal((8, DIM)).astype(np.float32)
        frame = pd.DataFrame({"qid": [f"q{i}" for i in range(8)], "query_vec": list(queries)})
        retriever = ptd.DenseIndex(path).hnsw_retriever(num_results=10, m=8)
        announce_waiting(sync, me)
        from pyterrier_dense.indexes import faiss_structure
        build = faiss_structure.build_structure

        def build_when_the_other_waits(*a, **kw):   # called under the structure's lock: keep it until the other waits
            mark(sync, f"building-{me}")
            if not os.path.exists(os.path.join(sync, f"building-{other}")):   # else a second build: the test fails
                wait_for(sync, f"waiting-{other}")
            return build(*a, **kw)

        faiss_structure.build_structure = build_when_the_other_waits
        mark(sync, f"ready-{me}")
        wait_for(sync, "go")
        res = retriever(frame)
        print(json.dumps({"qid": res.qid.tolist(), "docno": res.docno.tolist(), "score": res.score.tolist(),
                          "report": retriever.searcher.build_report(ptd.DenseIndex(path).snapshot())}))

    elif role == "append":
        # with pause="pause_at_pointer", it stops just before its new pointer replaces pt_meta.json (the pointer's
        # temporary file is then in the index directory) until the test creates resume-<me>
        path, prefix, n, seed, sync, me, pause = args
        docnos, vecs = records(prefix, int(n), int(seed))
        announce_waiting(sync, me)
        if pause == "pause_at_pointer":
            pointer, real_replace = os.path.join(os.path.abspath(path), "pt_meta.json"), os.replace

            def replace(src, dst, *a, **kw):
                if os.path.abspath(dst) == pointer:
                    mark(sync, f"paused-{me}")
                    wait_for(sync, f"resume-{me}")
                return real_replace(src, dst, *a, **kw)

            os.replace = replace
        with DenseIndexWriter(path, mode="append", lock_timeout=60) as w:
            w.add(docnos, vecs)

    else:
        raise SystemExit(f"unknown role {role}")
''')


# ---- helpers of the test process --------------------------------------------------------------------------------

def records(prefix: str, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """What a child writes for (prefix, n, seed): the same seeded vectors."""
    return [f"{prefix}{i}" for i in range(n)], np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(child: subprocess.Popen, timeout: float = 90) -> tuple[int, str, str]:
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = None
    if out is None:   # outside the except block: no chained traceback repeating the whole child script
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"child {child.args[3]} ran more than {timeout} s: {err[-3000:]}")
    return child.returncode, out, err


def wait_for(sync, name: str, children=(), timeout: float = 60) -> None:
    """Wait for a marker file; fail at once (with its stderr) if a child died meanwhile."""
    deadline = time.monotonic() + timeout
    while not (sync / name).exists():
        for c in children:
            if c.poll() is not None and c.returncode != 0:
                pytest.fail(f"a child exited with {c.returncode} before {name} appeared: {c.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"{name} never appeared"
        time.sleep(0.005)


def make_index(path, docnos, vecs) -> None:
    with DenseIndexWriter(path, dim=DIM) as w:
        w.add(docnos, vecs)


def read_index(path) -> dict:
    """The index at ``path``, checksums verified; nothing stays pinned once it returns."""
    index = ptd.DenseIndex(path)
    index.verify()
    snap = index.snapshot()
    state = {"docnos": list(snap.docnos[np.arange(snap.count)]), "vectors": np.array(snap.vectors),
             "generation": snap.reader.generation}
    del index, snap
    gc.collect()
    return state


def generations(path) -> list[str]:
    return sorted(p for p in os.listdir(path) if p.startswith("g") and (path / p).is_dir())


def assert_only_current(path, state) -> None:
    assert sorted(os.listdir(path)) == sorted([LOCK, META, state["generation"]])


def run_two_writers(tmp_path, a: tuple, b: tuple, order_a: str, order_b: str):
    """Start writer children a and b = (mode, prefix, n, seed) on one index, let them go at once, return
    (exit status, stdout, stderr) of each."""
    path, sync = tmp_path / "x.dense", tmp_path / "sync"
    sync.mkdir()
    ca = start("writer", path, *a, sync, "a", "b", order_a)
    cb = start("writer", path, *b, sync, "b", "a", order_b)
    wait_for(sync, "ready-a", [ca, cb])
    wait_for(sync, "ready-b", [ca, cb])
    (sync / "go").touch()
    return finish(ca), finish(cb)


# ---- tests --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("round", range(3))
def test_concurrent_appends_all_land(tmp_path, round):
    path = tmp_path / "x.dense"
    base_docnos, base_vecs = records("base", 1, 1000 + round)
    make_index(path, base_docnos, base_vecs)
    a_docnos, a_vecs = records("a", 3000, 10 * round + 1)
    b_docnos, b_vecs = records("b", 3000, 10 * round + 2)
    ra, rb = run_two_writers(tmp_path, ("append", "a", 3000, 10 * round + 1),
                             ("append", "b", 3000, 10 * round + 2), "race", "race")
    assert ra[0] == 0, ra[2][-3000:]
    assert rb[0] == 0, rb[2][-3000:]
    # they did overlap: exactly one took the lock first, and the other found it held and waited for it
    first = [json.loads(ra[1])["first_in"], json.loads(rb[1])["first_in"]]
    assert sorted(first) == [False, True]
    sync = tmp_path / "sync"
    assert [(sync / "waiting-a").exists(), (sync / "waiting-b").exists()] == [not f for f in first]

    state = read_index(path)
    assert len(state["docnos"]) == 6001 and len(set(state["docnos"])) == 6001
    assert state["docnos"][0] == "base0"   # appends keep what was there first, in order
    order = [a_docnos, b_docnos] if first[0] else [b_docnos, a_docnos]
    assert state["docnos"] == base_docnos + order[0] + order[1]
    snap = ptd.DenseIndex(path).snapshot()
    for docnos, vecs in ((base_docnos, base_vecs), (a_docnos, a_vecs), (b_docnos, b_vecs)):
        rows = snap.docnos.rows_of(docnos)
        assert (rows >= 0).all() and len(set(rows.tolist())) == len(docnos)
        assert np.array_equal(snap.vectors[rows], vecs)
    del snap
    gc.collect()
    assert_only_current(path, read_index(path))


@pytest.mark.parametrize("order", ["race", "append_first", "overwrite_first"])
def test_append_racing_an_overwrite_gives_a_serial_result(tmp_path, order):
    path = tmp_path / "x.dense"
    base_docnos, base_vecs = records("base", 1, 7)
    make_index(path, base_docnos, base_vecs)
    app_docnos, app_vecs = records("app", 3000, 21)
    ow_docnos, ow_vecs = records("ow", 2000, 22)
    orders = {"race": ("race", "race"), "append_first": ("first", "second"), "overwrite_first": ("second", "first")}
    ra, rb = run_two_writers(tmp_path, ("append", "app", 3000, 21), ("overwrite", "ow", 2000, 22), *orders[order])
    assert ra[0] == 0, ra[2][-3000:]
    assert rb[0] == 0, rb[2][-3000:]
    append_was_first = json.loads(ra[1])["first_in"]
    assert append_was_first != json.loads(rb[1])["first_in"]
    if order != "race":
        assert append_was_first == (order == "append_first")

    state = read_index(path)
    if append_was_first:   # append, then overwrite: only the overwrite's documents
        want_docnos, want_vecs = ow_docnos, ow_vecs
    else:                  # overwrite, then append: the append extends the overwrite's index, not the one it saw
        want_docnos, want_vecs = ow_docnos + app_docnos, np.concatenate([ow_vecs, app_vecs])
    assert state["docnos"] == want_docnos
    assert np.array_equal(state["vectors"], want_vecs)
    assert_only_current(path, state)


def test_readers_never_mix_builds_and_a_pinned_generation_survives(tmp_path):
    path, sync = tmp_path / "x.dense", tmp_path / "sync"
    sync.mkdir()
    # build 0, written here with the loop's formula: doc i of build b has b*1000+i in dim 0
    n0 = 300
    vecs0 = np.random.default_rng(0).standard_normal((n0, DIM)).astype(np.float32)
    vecs0[:, 0] = np.arange(n0)
    docnos0 = [f"b0-d{i}" for i in range(n0)]
    make_index(path, docnos0, vecs0)
    gen0 = read_index(path)["generation"]

    reader = start("reader", path, sync)
    writer = start("overwrite_loop", path, sync, 1, 30)
    try:
        wait_for(sync, "pinned", [reader, writer])
        assert (sync / "pinned").read_text() == gen0
        rc, out, err = finish(writer)
        assert rc == 0, err[-3000:]
        # every build of the loop published and removed what no one reads; the pinned build 0 is still there
        assert gen0 in generations(path)
        last = read_index(path)
        assert last["docnos"][0] == "b30-d0" and len(last["docnos"]) == 300 + (30 * 37) % 600
        (sync / "stop").touch()
        wait_for(sync, "released", [reader])
        report = json.loads((sync / "released").read_text())
        # the reader let go of everything (del + gc, still running): the next build removes every old generation
        with DenseIndexWriter(path, dim=DIM, mode="overwrite", lock_timeout=10) as w:
            w.add(docnos0, vecs0)
        state = read_index(path)
        assert state["docnos"] == docnos0
        assert_only_current(path, state)
        (sync / "exit").touch()
        rc, out, err = finish(reader)
        assert rc == 0, err[-3000:]
    finally:
        for c in (reader, writer):
            if c.poll() is None:
                c.kill()
                c.wait()
    assert report["problems"] == []
    assert report["calls"] >= 20
    assert len(report["builds_seen"]) > 1, f"the reader saw only builds {report['builds_seen']}"
    assert set(report["builds_seen"]) <= set(range(31))
    assert report["pinned_count"] == n0 and report["pinned_first_docno"] == "b0-d0"
    assert report["pinned"] == {"directory_exists": True, "same_docnos": True, "same_vectors": True,
                                "same_file": True, "verify": True}


def test_a_writer_that_cannot_get_the_lock_names_its_holder(tmp_path):
    path, sync = tmp_path / "x.dense", tmp_path / "sync"
    sync.mkdir()
    docnos, vecs = records("d", 5, 3)
    make_index(path, docnos, vecs)
    holder, trier = start("hold_lock", path, sync), start("try_lock", path, sync, 0.5)
    try:
        wait_for(sync, "locked", [holder, trier])
        assert int((sync / "locked").read_text()) == holder.pid
        rc, out, err = finish(trier)
        assert rc == 0, err[-3000:]
        result = json.loads(out)
        assert result["error"] == "IndexLockedError"
        assert f"pid {holder.pid}" in result["message"]
        assert socket.gethostname() in result["message"]
        assert str(path) in result["message"]
        assert 0.5 <= result["waited"] < 10
        # so does a writer of this process
        from pyterrier_dense.indexes import IndexLockedError
        with pytest.raises(IndexLockedError, match=f"pid {holder.pid} on host"):
            with DenseIndexWriter(path, mode="append", lock_timeout=0.2):
                pass
    finally:
        (sync / "release").touch()
        if trier.poll() is None:
            trier.kill()
        rc, out, err = finish(holder)
    assert rc == 0, err[-3000:]
    # once released, the lock is free and the index is as it was (the holder appended nothing)
    with DenseIndexWriter(path, mode="append", lock_timeout=0.5):
        pass
    state = read_index(path)
    assert state["docnos"] == docnos and np.array_equal(state["vectors"], vecs)


def test_a_faiss_structure_built_by_two_processes_at_once_is_built_once(tmp_path):
    path, sync = tmp_path / "x.dense", tmp_path / "sync"
    sync.mkdir()
    docnos, vecs = records("d", 2000, 4)
    make_index(path, docnos, vecs)
    generation = read_index(path)["generation"]
    a, b = start("hnsw", path, sync, "a", "b"), start("hnsw", path, sync, "b", "a")
    wait_for(sync, "ready-a", [a, b])
    wait_for(sync, "ready-b", [a, b])
    (sync / "go").touch()
    (rca, outa, erra), (rcb, outb, errb) = finish(a), finish(b)
    assert rca == 0, erra[-3000:]
    assert rcb == 0, errb[-3000:]
    ra, rb = json.loads(outa), json.loads(outb)
    # one built the structure, holding its lock until the other was waiting for it; the other then loaded it
    built = sorted(p.name for p in sync.glob("building-*"))
    assert len(built) == 1
    other = "a" if built == ["building-b"] else "b"
    assert sorted(p.name for p in sync.glob("waiting-*")) == [f"waiting-{other}"]
    assert ra == rb   # same results, and the same build report: one structure, built by one of them
    assert len(ra["docno"]) == 80 and set(ra["qid"]) == {f"q{i}" for i in range(8)}
    faiss_dir = path / generation / "faiss"
    assert len(list(faiss_dir.glob("hnsw-*.faiss"))) == 1
    assert not [p for p in os.listdir(faiss_dir) if ".tmp-" in p]
    ptd.DenseIndex(path).verify()   # the structure's own checksum, and that it was built from these vectors
    # the approximate results agree with exact search on most of the top 10
    exact = ptd.DenseIndex(path).retriever(num_results=10)(pd.DataFrame({
        "qid": [f"q{i}" for i in range(8)],
        "query_vec": list(np.random.default_rng(11).standard_normal((8, DIM)).astype(np.float32))}))
    assert len(set(exact.docno) & set(ra["docno"])) >= 60
    gc.collect()


def test_two_processes_creating_the_same_index_at_once(tmp_path):
    """Two appends to a path where no index is yet: the second waits for the first and extends what it wrote. The
    first is held just before its pointer swap (its new pointer's temporary file is in the directory) while the
    second starts."""
    path, sync = tmp_path / "x.dense", tmp_path / "sync"
    sync.mkdir()
    a_docnos, a_vecs = records("a", 500, 31)
    b_docnos, b_vecs = records("b", 500, 32)
    a = start("append", path, "a", 500, 31, sync, "a", "pause_at_pointer")
    b = None
    try:
        wait_for(sync, "paused-a", [a])
        b = start("append", path, "b", 500, 32, sync, "b", "no_pause")
        while not (sync / "waiting-b").exists() and b.poll() is None:   # b waits for the lock, or has failed
            time.sleep(0.005)
        (sync / "resume-a").touch()
        (rca, _, erra), (rcb, _, errb) = finish(a), finish(b)
    finally:
        (sync / "resume-a").touch()
        for c in (a, b):
            if c is not None and c.poll() is None:
                c.kill()
                c.wait()
    assert rca == 0, erra[-3000:]
    assert rcb == 0, errb[-3000:]
    state = read_index(path)
    assert state["docnos"] == a_docnos + b_docnos
    assert np.array_equal(state["vectors"], np.concatenate([a_vecs, b_vecs]))


def test_two_threads_appending_at_once_both_land(tmp_path):
    """Threads of one process are writers too: the second waits for the first (lock_timeout=None), as a second
    process would."""
    import threading
    path = tmp_path / "x.dense"
    base_docnos, base_vecs = records("base", 1, 41)
    make_index(path, base_docnos, base_vecs)
    inside, errors = threading.Event(), []
    a_docnos, a_vecs = records("a", 100, 42)
    b_docnos, b_vecs = records("b", 100, 43)

    def first():
        try:
            with DenseIndexWriter(path, mode="append") as w:
                inside.set()
                time.sleep(0.3)   # only so the second surely waits: the outcome does not depend on it
                w.add(a_docnos, a_vecs)
        except Exception as e:
            errors.append(e)
            inside.set()

    def second():
        inside.wait(30)
        try:
            with DenseIndexWriter(path, mode="append", lock_timeout=30) as w:
                w.add(b_docnos, b_vecs)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    state = read_index(path)
    assert state["docnos"] == base_docnos + a_docnos + b_docnos
