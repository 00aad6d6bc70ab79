"""Approximate and compressed retrieval, side by side with exact search and pyterrier-dr's FAISS retrievers.

A measurement script, not a test. Run from the repository root::

    python benchmarks/ann.py --collection ../shared/data/scifact --json ann_scifact.json
    python benchmarks/ann.py --collection ../shared/data/vaswani --synthetic 0 --json ann_vaswani.json

Per method, on the collection's test queries (vectors from our default BiEncoder, shared by every method):
``nDCG@10``; ``recall@100_vs_exact`` (mean overlap of the top 100 with exact search's top 100); ``ms_per_query``
(all queries in one frame, k=1000, median of repeats, after the structure is built); ``bytes_per_doc`` (size on disk
of the searched structure / documents); ``config`` and ``build_s``. ``pq16x`` is the best 96-byte PQ configuration
found, ``pq32x`` the best 48-byte one, ``opq32x`` the best 48-byte one with an OPQ rotation.

``--synthetic N`` (default 1,000,000; 0 skips) also indexes N clustered 384-d vectors and reports exact vs HNSW
latency and recall@10 and the IVF-PQ structure's size against float32.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyterrier as pt

import pyterrier_dense as ptd
from pyterrier_dense.indexes import DenseIndexWriter

K = 1000
NDCG = pt.measures.nDCG @ 10


def log(msg: str) -> None:
    print(f"[ann] {msg}", file=sys.stderr, flush=True)


def default_model() -> str:
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    return resolve_model(DEFAULT_MODEL)


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def top_sets(res: pd.DataFrame, depth: int) -> dict:
    return res[res["rank"] < depth].groupby("qid")["docno"].apply(set).to_dict()


def overlap(res: pd.DataFrame, exact: dict, depth: int) -> float:
    got = top_sets(res, depth)
    return float(np.mean([len(got.get(q, set()) & s) / len(s) for q, s in exact.items()]))


def evaluate(name: str, retriever, frame, qrels, exact_top, nq, repeats, size, config) -> dict:
    started = time.perf_counter()
    res = retriever(frame)                       # first call builds (and caches) the structure
    build_s = time.perf_counter() - started
    seconds = median_seconds(lambda: retriever(frame), repeats)
    entry = {"nDCG@10": float(pt.Evaluate(res, qrels, metrics=[NDCG])[str(NDCG)]),
             "recall@100_vs_exact": overlap(res, exact_top, 100), "ms_per_query": 1000 * seconds / nq,
             "bytes_per_doc": float(size()), "config": config, "build_s": round(build_s, 2)}
    if hasattr(retriever, "size") and "code_bytes_per_doc" in retriever.size():
        entry["code_bytes_per_doc"] = retriever.size()["code_bytes_per_doc"]
    log(f"{name:>20}: {json.dumps(entry)}")
    return entry


def build_collection_index(collection, model: str, index_dir: Path) -> tuple[ptd.DenseIndex, object]:
    enc = ptd.BiEncoder(model, verbose=False)
    index = ptd.DenseIndex(index_dir / f"{collection.name}.dense")
    if not index.exists():
        log(f"encoding {collection.name} into {index.path}")
        (enc >> index.indexer()).index(collection.corpus_iter())
    return index, enc


def pyterrier_dr_methods(index: ptd.DenseIndex, tmp: Path, nlist: int, nprobe: int, ef_search: int):
    """pyterrier-dr's FAISS retrievers over a FlexIndex of the same vectors; sizes from the files each one adds."""
    import pyterrier_dr
    flex = pyterrier_dr.FlexIndex(str(tmp / "flex"))
    vectors = np.asarray(index.vectors)
    docnos = index.docnos[np.arange(index.count)]
    flex.indexer(mode="overwrite").index({"docno": d, "doc_vec": v} for d, v in zip(docnos, vectors))
    folder = Path(flex.index_path)
    files = lambda: {p: p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    methods = {
        "pyterrier_dr_hnsw": (lambda: flex.faiss_hnsw_retriever(32, num_results=K, ef_construction=200,
                                                                ef_search=ef_search),
                              f"HNSW32 efC=200 ef_search={ef_search}"),
        "pyterrier_dr_ivf": (lambda: flex.faiss_ivf_retriever(num_results=K, n_list=nlist, n_probe=nprobe),
                             f"IVF{nlist},Flat nprobe={nprobe}"),
    }
    for name, (make, config) in methods.items():
        before = files()
        added = lambda before=before: sum(v for p, v in files().items() if p not in before) / index.count
        yield name, make(), added, config


def run_collection(args) -> dict:
    collection = ptd.Collection(args.collection)
    tmp = Path(tempfile.mkdtemp(prefix="ann-bench-"))
    index_dir = Path(args.index_dir) if args.index_dir else tmp
    index, enc = build_collection_index(collection, args.model, index_dir)
    topics, qrels = collection.topics(), collection.qrels()
    frame = enc.query_encoder()(topics)
    nq = len(frame)
    exact = index.retriever(num_results=K)
    exact_top = top_sets(exact(frame), 100)
    from pyterrier_dense.indexes.ann_specs import default_nlist
    nlist = default_nlist(index.count)
    methods = {
        "exact": (exact, lambda: index.size()["bytes_per_doc"], "exact float32"),
        "hnsw": (index.hnsw_retriever(K, m=32, ef_construction=200, ef_search=args.ef_search), None,
                 f"HNSW32 efC=200 ef_search={args.ef_search}"),
        "ivf": (index.ivf_retriever(K, nlist=nlist, nprobe=args.nprobe), None, f"IVF{nlist},Flat nprobe={args.nprobe}"),
    }
    candidates = {  # name: (bytes, opq, kwargs)
        "PQ96x8": (96, False, dict(m=96, nbits=8)), "PQ192x4fs": (96, False, dict(m=192, nbits=4)),
        "PQ48x8": (48, False, dict(m=48, nbits=8)), "PQ96x4fs": (48, False, dict(m=96, nbits=4)),
        "OPQ48,PQ48x8": (48, True, dict(m=48, nbits=8, opq=True)),
        "OPQ96,PQ96x4fs": (48, True, dict(m=96, nbits=4, opq=True)),
        "RQ96x4fs": (48, False, dict(m=96, nbits=4, quantizer="rq")),
    }
    results = {}
    for name, (retriever, size, config) in methods.items():
        results[name] = evaluate(name, retriever, frame, qrels, exact_top, nq, args.repeats,
                                 size or (lambda r=retriever: r.size()["bytes_per_doc"]), config)
    pq_results = {}
    for config, (nbytes, opq, kwargs) in candidates.items():
        retriever = index.pq_retriever(K, **kwargs)
        pq_results[config] = (nbytes, opq, evaluate(config, retriever, frame, qrels, exact_top, nq, args.repeats,
                                                    lambda r=retriever: r.size()["bytes_per_doc"], config))
    best = lambda keep: max((r for r in pq_results.values() if keep(r)), key=lambda r: r[2]["nDCG@10"])[2]
    results["pq16x"] = best(lambda r: r[0] == 96)
    results["pq32x"] = best(lambda r: r[0] == 48)
    results["opq32x"] = best(lambda r: r[0] == 48 and r[1])
    ivfpq = index.pq_retriever(K, m=96, nbits=4, nlist=nlist, nprobe=args.nprobe)
    results["ivfpq"] = evaluate("ivfpq", ivfpq, frame, qrels, exact_top, nq, args.repeats,
                                lambda: ivfpq.size()["bytes_per_doc"], f"IVF{nlist},PQ96x4fs nprobe={args.nprobe}")
    for name, retriever, size, config in pyterrier_dr_methods(index, tmp, nlist, args.nprobe, args.ef_search):
        results[name] = evaluate(name, retriever, frame, qrels, exact_top, nq, args.repeats, size, config)
    return {"collection": collection.name, "documents": index.count, "queries": nq, "methods": results,
            "all_pq_configs": {k: v[2] for k, v in pq_results.items()}}


def clustered_chunks(n: int, dim: int, centres: np.ndarray, seed: int, chunk: int = 100_000):
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)] + 0.5 / np.sqrt(dim) * rng.standard_normal((m, dim), dtype=np.float32)
        yield (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def run_synthetic(n: int, dim: int = 384, n_queries: int = 200) -> dict:
    """Clusters like real embeddings: unit-scale centres, noise of norm ~0.5, so neighbours have cosine ~0.8."""
    tmp = Path(tempfile.mkdtemp(prefix="ann-synth-"))
    centres = np.random.default_rng(0).standard_normal((4096, dim)).astype(np.float32) / np.sqrt(dim)
    log(f"writing {n:,} clustered {dim}-d vectors")
    with DenseIndexWriter(tmp / "synth.dense", dim=dim) as w:
        for i, block in enumerate(clustered_chunks(n, dim, centres, seed=1)):
            w.add([f"s{i}_{j}" for j in range(len(block))], block)
    index = ptd.DenseIndex(tmp / "synth.dense")
    queries = next(clustered_chunks(n_queries, dim, centres, seed=2))
    exact_s = median_seconds(lambda: index.search(queries, 10), 3)
    _, truth = index.search(queries, 10)
    out = {"documents": n, "exact_ms_per_query": 1000 * exact_s / n_queries}
    t = time.perf_counter()
    snap = index.snapshot()
    hnsw = index.hnsw_retriever(10, m=32, ef_construction=80).searcher
    hnsw.build_report(snap)   # builds (and caches) the structure
    out["hnsw_build_s"] = round(time.perf_counter() - t, 1)
    for ef in (16, 32, 64, 128, 256):
        searcher = index.hnsw_retriever(10, m=32, ef_construction=80, ef_search=ef).searcher
        seconds = median_seconds(lambda: searcher.search(snap, queries, 10), 3)
        _, rows = searcher.search(snap, queries, 10)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)]))
        log(f"hnsw ef_search={ef}: recall@10 {recall:.3f}, {1000 * seconds / n_queries:.3f} ms/query")
        out[f"hnsw_ef{ef}"] = {"recall@10": recall, "ms_per_query": 1000 * seconds / n_queries}
        if recall >= 0.95 and "hnsw_recall@10" not in out:
            out.update({"hnsw_recall@10": recall, "hnsw_ef_search": ef,
                        "hnsw_speedup_vs_exact": exact_s / seconds})
    t = time.perf_counter()
    ivfpq = index.pq_retriever(10, m=48, nbits=8, nlist=4096, nprobe=32, train_size=200_000).searcher
    ivfpq.build_report(snap)
    _, rows = ivfpq.search(snap, queries, 10)
    out.update({"ivfpq_build_s": round(time.perf_counter() - t, 1), "ivfpq_config": "IVF4096,PQ48x8 nprobe=32",
                "ivfpq_recall@10": float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)])),
                "ivfpq_memory_ratio_vs_float32": ivfpq.size(snap)["bytes"] / (n * dim * 4)})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--index-dir", default=None, help="reuse/cache the encoded collection here")
    p.add_argument("--synthetic", type=int, default=1_000_000)
    p.add_argument("--synthetic-only", action="store_true", help="skip the collection part")
    p.add_argument("--ef-search", type=int, default=256)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    args.model = args.model or default_model()
    if not args.synthetic_only and not args.collection:
        p.error("--collection is needed unless --synthetic-only")
    out = {} if args.synthetic_only else run_collection(args)
    if args.synthetic:
        out["synthetic_1m"] = run_synthetic(args.synthetic)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
