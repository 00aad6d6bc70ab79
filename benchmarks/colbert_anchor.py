"""Anchors for ``benchmarks/colbert.py``: MaxSim re-ranking against PyLate, and the memory of indexing.

Each measurement runs in child processes of its own and returns a JSON-able dict; ``python
benchmarks/colbert_anchor.py`` runs both and prints them.

- :func:`maxsim_vs_pylate`: re-ranking throughput (query-document pairs scored per second) of our
  ``maxsim_pairs`` against PyLate's ``colbert_scores`` and a plain padded torch einsum, on the same inputs and
  thread count. PyLate is never a dependency of this project: it lives in a venv this module makes, ``VENV``.
- :func:`indexing_rss` / :func:`rss_10k_vs_100k`: peak resident memory of ``ColBERTIndex.indexer().index()`` over
  synthetic token matrices; it should not grow with the collection.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.expanduser("~/.cache/pyterrier-dense/pylate-venv")
PYLATE_VERSION = "1.6.0"
# besides torch and sentence-transformers (which bring transformers, tqdm, numpy), pylate.scores needs only
# datasets: it imports pylate.utils, whose processing module imports datasets. No fast-plaid, no CUDA packages.
VENV_PACKAGES = (["torch==2.13.0", "sentence-transformers"], ["--no-deps", f"pylate=={PYLATE_VERSION}"], ["datasets"])
QUERY_TOKENS, DIM, DOC_TOKENS = 32, 128, (60, 300)
REPEATS = 3               # timings are the best of this many runs
TOLERANCE = 1e-3          # largest |PyLate - ours| score difference that counts as the same answer
CHUNK_DOCS = 1000         # synthetic documents generated at once while indexing


# ---- shared -------------------------------------------------------------------------------------------------------
def _unit(x):
    """Rows of ``x`` (float32) scaled to unit length, in place."""
    import numpy as np
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def _child(python: str, args: list, threads: int | None = None, timeout: float | None = None) -> dict:
    """Run this file as ``python HERE args`` (BLAS/OpenMP limited to ``threads``); its last stdout line is JSON."""
    env = dict(os.environ)
    if threads:
        env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    proc = subprocess.run([python, HERE, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{args[0]} child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best_of(fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM``, which exec resets. Linux's ``ru_maxrss`` is carried over from the parent
    through fork + exec (a child of a parent that once held 1 GB reports >= 1 GB), so it is only the fallback."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- MaxSim against PyLate ----------------------------------------------------------------------------------------
def pylate_python() -> str:
    """The Python of the PyLate venv at ``VENV``, made (or remade) when it does not import ``pylate.scores``."""
    python, pip = os.path.join(VENV, "bin", "python"), os.path.join(VENV, "bin", "pip")
    check = [python, "-c", f"import pylate, pylate.scores; assert pylate.__version__ == {PYLATE_VERSION!r}"]
    if os.path.exists(python) and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"making the PyLate venv at {VENV} ...", file=sys.stderr)
    for cmd in [[sys.executable, "-m", "venv", "--clear", VENV]] + [[pip, "install", "-q", *p] for p in VENV_PACKAGES]:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-1000:]}")
    proc = subprocess.run(check, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"PyLate {PYLATE_VERSION} does not import in {VENV}: {proc.stderr.strip()[-1000:]}")
    return python


def maxsim_vs_pylate(n_queries: int = 100, docs_per_query: int = 100, threads: int | None = None,
                     seed: int = 0) -> dict:
    """Re-ranking throughput, pairs per second, on the same inputs and the same number of threads.

    Inputs: ``n_queries`` random unit 32 x 128 float32 query matrices, each with its own ``docs_per_query``
    documents of 60-300 (uniform) unit 128-d tokens. Ours: one ``maxsim_pairs`` call over all pairs (documents laid
    end to end, as an index stores them). PyLate: per query, ``colbert_scores`` of that query against its documents
    padded into a (docs, max_len, 128) tensor with a documents mask; the padding is done beforehand (the most
    favourable case for PyLate), and ``pylate_with_padding_pairs_per_s`` also times the ``pad_sequence`` that
    ``pylate.rank.rerank`` does on each call. ``einsum``: the same padded tensors through
    ``einsum('qh,dth->dqt')``, masked to -inf, max over t, sum over q. Each side runs in its own process with
    ``threads`` BLAS/OpenMP/torch threads (default ``os.cpu_count()``); times are the best of 3. ``max_abs_diff``
    (PyLate vs ours) must be below 1e-3, or the speedup is withheld.
    """
    import numpy as np
    threads = threads or os.cpu_count()
    rng = np.random.default_rng(seed)
    lengths = rng.integers(DOC_TOKENS[0], DOC_TOKENS[1] + 1, n_queries * docs_per_query)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    result: dict = {"threads": threads, "pairs": len(lengths), "tokens": int(offsets[-1]),
                    "load_average_1min": os.getloadavg()[0]}   # other work on the machine skews every timing
    with tempfile.TemporaryDirectory(prefix="colbert-anchor-") as tmp:
        npz, ours_scores = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "ours.npy")
        np.savez(npz, queries=_unit(rng.standard_normal((n_queries, QUERY_TOKENS, DIM), dtype=np.float32)),
                 tokens=_unit(rng.standard_normal((int(offsets[-1]), DIM), dtype=np.float32)), offsets=offsets,
                 pair_query=np.repeat(np.arange(n_queries), docs_per_query))
        del lengths, offsets
        ours = _child(sys.executable, ["--maxsim-ours", npz, ours_scores, threads], threads)
        result["ours_pairs_per_s"] = result["pairs"] / ours["seconds"]
        result["ours_blas_threads"] = ours["blas_threads"]
        try:
            python = pylate_python()
        except Exception as e:
            print(f"PyLate skipped: {e}", file=sys.stderr)
            return {**result, "skipped": str(e)}
        try:
            theirs = _child(python, ["--maxsim-pylate", npz, ours_scores, threads], threads)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return {**result, "error": str(e)}
    pairs = result["pairs"]
    result.update(pylate_pairs_per_s=pairs / theirs["pylate_seconds"],
                  pylate_with_padding_pairs_per_s=pairs / theirs["pylate_padding_seconds"],
                  einsum_pairs_per_s=pairs / theirs["einsum_seconds"],
                  maxsim_speedup_vs_pylate=theirs["pylate_seconds"] / ours["seconds"],
                  max_abs_diff=theirs["max_abs_diff"], einsum_max_abs_diff=theirs["einsum_max_abs_diff"],
                  pylate_version=theirs["versions"]["pylate"], pylate_venv=theirs["versions"],
                  pylate_venv_pins=[])   # none needed: PyLate 1.6.0's scores import with transformers 5 / ST 6
    if not theirs["max_abs_diff"] < TOLERANCE:
        result["maxsim_speedup_vs_pylate"] = None
        result["error"] = f"PyLate's scores differ from ours by {theirs['max_abs_diff']:.3g} (>= {TOLERANCE})"
    return result


def _maxsim_ours_child(npz: str, scores_path: str, threads: str) -> dict:
    import numpy as np
    sys.path.insert(0, ROOT)
    from pyterrier_dense.indexes.maxsim import maxsim_pairs
    d = np.load(npz)
    queries, pair_query, tokens, offsets = list(d["queries"]), d["pair_query"], d["tokens"], d["offsets"]
    seconds, scores = _best_of(lambda: maxsim_pairs(queries, pair_query, tokens, offsets))
    np.save(scores_path, scores)
    try:
        from threadpoolctl import threadpool_info
        blas = max((i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"), default=None)
    except ImportError:
        blas = None
    return {"seconds": seconds, "blas_threads": blas}


def _maxsim_pylate_child(npz: str, scores_path: str, threads: str) -> dict:
    from importlib.metadata import version

    import numpy as np
    import torch
    from pylate.scores import colbert_scores
    torch.set_num_threads(int(threads))
    d = np.load(npz)
    queries, tokens = torch.from_numpy(d["queries"]), torch.from_numpy(d["tokens"])
    offsets, n_queries = d["offsets"], len(d["queries"])
    per_query = len(d["pair_query"]) // n_queries      # pairs are grouped by query, docs_per_query each
    docs = [tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

    def padded(q):
        group = docs[q * per_query:(q + 1) * per_query]
        lengths = torch.tensor([len(x) for x in group])
        batch = torch.nn.utils.rnn.pad_sequence(group, batch_first=True, padding_value=0)
        return batch, (torch.arange(batch.shape[1])[None, :] < lengths[:, None]).float()

    def pylate(batches):
        return torch.cat([colbert_scores(queries[q:q + 1], b, documents_mask=m)[0] for q, (b, m) in enumerate(batches)])

    def einsum(batches):
        out = []
        for q, (b, m) in enumerate(batches):
            s = torch.einsum("qh,dth->dqt", queries[q], b).masked_fill_(m[:, None, :] == 0, float("-inf"))
            out.append(s.max(dim=-1).values.sum(dim=-1))
        return torch.cat(out)

    with torch.inference_mode():
        batches = [padded(q) for q in range(n_queries)]
        pylate_s, theirs = _best_of(lambda: pylate(batches))
        einsum_s, plain = _best_of(lambda: einsum(batches))
        batches.clear()                                  # frees the padded copies before the next timing
        padding_s, _ = _best_of(lambda: pylate(padded(q) for q in range(n_queries)))
    ours = np.load(scores_path)
    return {"pylate_seconds": pylate_s, "pylate_padding_seconds": padding_s, "einsum_seconds": einsum_s,
            "max_abs_diff": float(np.abs(theirs.numpy() - ours).max()),
            "einsum_max_abs_diff": float(np.abs(plain.numpy() - ours).max()),
            "versions": {p: version(p) for p in ("pylate", "torch", "transformers", "sentence-transformers",
                                                 "datasets")}}


# ---- indexing memory ----------------------------------------------------------------------------------------------
def indexing_rss(n_docs: int, dim: int = 128, tokens_per_doc: tuple = (20, 80), storage: str = "residual",
                 nbits: int = 2, ncentroids: int | None = None) -> dict:
    """Peak RSS of indexing ``n_docs`` synthetic documents in a fresh process.

    The child streams records ``{"docno", "doc_embs"}`` (random unit ``dim``-d float32 token matrices, lengths
    uniform in ``tokens_per_doc``, generated 1,000 documents at a time) from a generator through
    ``ColBERTIndex(path).indexer(storage=..., nbits=..., ncentroids=...).index(records)``. Returns ``peak_rss_mb``
    (the child's ``VmHWM``: interpreter, imports and indexing), ``ru_maxrss_mb`` (for reference: on Linux it is at
    least the parent's peak), ``seconds`` (the ``index`` call), ``tokens`` and the index's ``size()``. The index is
    removed afterwards.
    """
    tmp = tempfile.mkdtemp(prefix="colbert-anchor-index-")
    try:
        return _child(sys.executable, ["--index", n_docs, dim, *tokens_per_doc, storage, nbits, ncentroids or 0,
                                       os.path.join(tmp, "index.colbert")])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rss_10k_vs_100k(**kwargs) -> dict:
    """Peak RSS indexing 10,000 vs 100,000 documents (defaults of :func:`indexing_rss`); the difference should stay
    within 100 MB, as indexing memory is meant not to grow with the collection."""
    small, large = indexing_rss(10_000, **kwargs), indexing_rss(100_000, **kwargs)
    return {"rss_10k_mb": small["peak_rss_mb"], "rss_100k_mb": large["peak_rss_mb"],
            "rss_difference_mb": large["peak_rss_mb"] - small["peak_rss_mb"],
            "seconds_10k": small["seconds"], "seconds_100k": large["seconds"], "run_10k": small, "run_100k": large}


def _index_child(n_docs, dim, lo, hi, storage, nbits, ncentroids, path) -> dict:
    import numpy as np
    sys.path.insert(0, ROOT)
    import pyterrier_dense as ptd
    n_docs, dim, lo, hi, nbits, ncentroids = map(int, (n_docs, dim, lo, hi, nbits, ncentroids))

    def records():
        rng = np.random.default_rng(0)
        for first in range(0, n_docs, CHUNK_DOCS):
            lengths = rng.integers(lo, hi + 1, min(CHUNK_DOCS, n_docs - first))
            ends = np.cumsum(lengths)
            block = _unit(rng.standard_normal((int(ends[-1]), dim), dtype=np.float32))
            for i, (a, b) in enumerate(zip(ends - lengths, ends)):
                yield {"docno": f"d{first + i}", "doc_embs": block[a:b]}

    index = ptd.ColBERTIndex(path)
    start = time.perf_counter()
    index.indexer(storage=storage, nbits=nbits, ncentroids=ncentroids or None).index(records())
    seconds = time.perf_counter() - start
    size = index.size()
    return {"n_docs": n_docs, "tokens": size["tokens"], "seconds": seconds, "peak_rss_mb": _peak_rss_mb(),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "size": size}


CHILDREN = {"--maxsim-ours": _maxsim_ours_child, "--maxsim-pylate": _maxsim_pylate_child, "--index": _index_child}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in CHILDREN:
        print(json.dumps(CHILDREN[sys.argv[1]](*sys.argv[2:])))
    else:
        print(json.dumps({"maxsim": maxsim_vs_pylate(), "indexing_rss": rss_10k_vs_100k()}, indent=2))
