"""A process killed at any moment of indexing leaves either no index or the previous one, never a broken one."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyterrier_dense as ptd
from pyterrier_dense.indexes import DenseIndexWriter
from conftest import random_vectors

CHILD = textwrap.dedent("""
    import sys, time, numpy as np, pyterrier_dense as ptd
    path, n = sys.argv[1], int(sys.argv[2])
    def docs():
        rng = np.random.default_rng(1)
        for i in range(n):
            if i % 500 == 0:
                time.sleep(0.02)
            yield {"docno": f"new{i}", "doc_vec": rng.standard_normal(16).astype(np.float32)}
    print("started", flush=True)
    ptd.DenseIndex(path).indexer(mode="overwrite").index(docs())
    print("done", flush=True)
""")


def check_state(path, previous_count):
    """The index at ``path`` is absent (only when there was none before), the previous one, or the complete new one."""
    index = ptd.DenseIndex(path)
    if previous_count is None and not os.path.exists(path):
        return "none"
    assert index.count in (previous_count, 20_000), f"index with {index.count} documents"
    index.verify()
    return "previous" if index.count == previous_count else "new"


@pytest.mark.parametrize("with_previous", [False, True])
def test_kill_during_indexing(tmp_path, with_previous):
    path = tmp_path / "victim.dense"
    previous = None
    if with_previous:
        with DenseIndexWriter(path, dim=16) as w:
            w.add([f"old{i}" for i in range(10)], random_vectors(10, 16))
        previous = 10
    seen = set()
    for delay in (0.0, 0.3, 0.6, 1.0, 1.5, 2.5, 4.0, 8.0):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "20000"], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "started"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        state = check_state(path, previous)
        seen.add(state)
        if state == "new":  # it finished before the kill: start again from the previous state
            if previous is None:
                import shutil
                shutil.rmtree(path)
            else:
                with DenseIndexWriter(path, dim=16, mode="overwrite") as w:
                    w.add([f"old{i}" for i in range(10)], random_vectors(10, 16))
    assert seen & {"none", "previous"}, "no kill landed while indexing was under way"
    # a leftover temporary directory from a killed build is removed by the next build
    with DenseIndexWriter(path, dim=16, mode="overwrite") as w:
        w.add(["fresh"], random_vectors(1, 16))
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_ctrl_c_removes_the_temporary_directory(tmp_path):
    def docs():
        yield {"docno": "a", "doc_vec": random_vectors(1, 4)[0]}
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        ptd.DenseIndex(tmp_path / "x.dense").indexer().index(docs())
    assert os.listdir(tmp_path) == []
