"""Past one machine: resumable indexing, and serving from Qdrant.

Resume: a dense build of a real collection is killed (SIGKILL) halfway through, run again, and compared with an
uninterrupted build: how much of the corpus the re-run encoded again, its time, and whether the two indexes are the
same. Engine: the uninterrupted build's vectors loaded into a ``QdrantIndex`` (qdrant-client's local mode, in
memory: brute force in Python, not the production engine) and searched exactly through the same stages: top-100
agreement with our exact ``DenseIndex``, and the time per query of each, all queries in one frame.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``)::

    python benchmarks/scale.py --collection ../shared/data/scifact --json out.json

What each figure means
----------------------
- ``uninterrupted_s``: one build, start to publish (``(enc >> index.indexer()).index(corpus)``).
- ``killed_at_s`` / ``killed_at_fraction``: when the second build's process was killed (SIGKILL, no cleanup): as
  soon as its encoder had returned ``--kill-at`` of the corpus (0.5), in seconds from its start and as the share of
  the corpus it had encoded; ``done_at_kill``: documents in its completed shards.
- ``rerun_s`` and ``reencoded_fraction``: the re-run's time and the share of the corpus it encoded again;
  ``same_index``: whether the resumed index's files equal the uninterrupted build's byte for byte (``max_abs_diff``
  of the vectors otherwise: a document batched with others than before encodes within float rounding).
- ``ray``: the collection (or its first ``--ray-docs`` documents) encoded into a dense index by the single-process pipeline and by
  ``ptd.ray.encode`` with 1 actor (all CPUs) and 2 actors (half each), on a local Ray started here: documents a
  second for each (actor start-up and model loading included), ``overhead_1_actor`` (1 - ray/single throughput)
  and ``max_abs_diff`` of the vectors against the single-process index (``--skip-ray`` leaves it out).
- ``qdrant``: ``build_s`` (loading the vectors), ``agree_at_100`` (mean share of our exact top 100 it returns),
  ``ndcg10`` of both, ``ms_per_query`` of both (``--skip-engine`` leaves it out).
An interrupted build loses at most the batch PyTerrier was encoding (the encoder's ``chunk_size`` documents) and
the shard being filled (``shard_size``): both are set per run (``--chunk-size``, ``--shard-size``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, publish  # noqa: E402

BUILD = textwrap.dedent("""
    import json, sys, time
    import pyterrier_dense as ptd
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    collection, path, chunk, shard, model = sys.argv[1:6]
    enc = ptd.BiEncoder(model or resolve_model(DEFAULT_MODEL), verbose=False)
    enc.model.chunk_size = int(chunk)
    seen = []
    encode = enc.model.encode
    def counting(texts, role="doc", **kw):
        out = encode(texts, role=role, **kw)
        if role == "doc":
            seen.extend(texts)
            print(json.dumps({"encoded_so_far": len(seen)}), flush=True)
        return out
    enc.model.encode = counting
    t = time.perf_counter()
    (enc >> ptd.DenseIndex(path).indexer(shard_size=int(shard))).index(ptd.Collection(collection).corpus_iter())
    print(json.dumps({"seconds": time.perf_counter() - t, "encoded": len(seen)}), flush=True)
""")


def build(args, path: str, kill_after: int | None = None) -> dict:
    """One build in a child process; with ``kill_after``, SIGKILL it as soon as it has encoded that many
    documents (its own count, printed after each encoder call)."""
    cmd = [sys.executable, "-c", BUILD, args.collection, path, str(args.chunk_size), str(args.shard_size),
           args.model or ""]
    t = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if kill_after is None:
        out, _ = child.communicate()
        return json.loads(out.strip().splitlines()[-1])
    encoded = 0
    for line in child.stdout:
        encoded = json.loads(line).get("encoded_so_far", encoded)
        if encoded >= kill_after:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    return {"seconds": time.perf_counter() - t, "encoded": encoded}


def done_in_partial(path: str) -> int:
    partials = [p for p in os.listdir(path) if p.startswith("partial-")] if os.path.isdir(path) else []
    if not partials:
        return 0
    shards = [f for f in os.listdir(os.path.join(path, partials[0])) if f.endswith(".json") and f.startswith("shard")]
    return sum(json.load(open(os.path.join(path, partials[0], f)))["count"] for f in shards)


def same_files(a: str, b: str) -> tuple[bool, float]:
    import pyterrier_dense as ptd
    sa, sb = ptd.DenseIndex(a).snapshot(), ptd.DenseIndex(b).snapshot()
    same_docnos = list(sa.docnos[np.arange(sa.count)]) == list(sb.docnos[np.arange(sb.count)])
    diff = float(np.abs(np.asarray(sa.vectors, np.float32) - np.asarray(sb.vectors, np.float32)).max())
    return same_docnos and diff == 0.0, diff


def run(args) -> dict:
    work = args.workdir or tempfile.mkdtemp(prefix="scale-bench-")
    out = {"cpu": cpu_kind(), "threads": os.cpu_count(), "chunk_size": args.chunk_size, "shard_size": args.shard_size}
    if not args.skip_ray:
        out["ray"] = ray_encoding(args, work)
    if args.skip_resume:
        return out
    whole = build(args, os.path.join(work, "whole.dense"))
    total = whole["encoded"]
    out["documents"], out["uninterrupted_s"] = total, round(whole["seconds"], 1)
    path = os.path.join(work, "resumed.dense")
    killed = build(args, path, kill_after=int(np.ceil(args.kill_at * total)))
    out["killed_at_s"] = round(killed["seconds"], 1)
    out["killed_at_fraction"] = round(killed["encoded"] / total, 3)
    out["done_at_kill"] = done_in_partial(path)
    rerun = build(args, path)
    out["rerun_s"] = round(rerun["seconds"], 1)
    out["reencoded_fraction"] = round(rerun["encoded"] / total, 3)
    same, diff = same_files(os.path.join(work, "whole.dense"), path)
    out["resume"] = {"same_index": same, "max_abs_diff": diff}
    if not args.skip_engine:
        out["qdrant"] = engine(args, os.path.join(work, "whole.dense"))
    return out


def ray_encoding(args, work: str) -> dict:
    """The single-process pipeline against ptd.ray.encode with 1 and 2 actors, on the same documents and CPUs."""
    import itertools
    import ray
    import pyterrier_dense as ptd
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    docs = list(itertools.islice(ptd.Collection(args.collection).corpus_iter(), args.ray_docs))
    enc = ptd.BiEncoder(args.model or resolve_model(DEFAULT_MODEL), precision=args.precision, verbose=False)
    t = time.perf_counter()
    single = (enc >> ptd.DenseIndex(os.path.join(work, "single.dense")).indexer(mode="overwrite")).index(docs)
    single_s = time.perf_counter() - t
    ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    out = {"documents": len(docs), "precision": enc.model.precision,
           "single_docs_per_s": round(len(docs) / single_s, 1)}
    ref = np.asarray(single.snapshot().vectors)
    try:
        for actors in (1, 2):
            t = time.perf_counter()
            index = ptd.ray.encode(docs, enc, ptd.DenseIndex(os.path.join(work, f"ray{actors}.dense")).indexer(
                mode="overwrite"), actors=actors)   # batches: the encoder's own sorting window, as single-process
            seconds = time.perf_counter() - t
            snap = index.snapshot()
            same_docnos = list(snap.docnos) == list(single.snapshot().docnos)
            out[f"actors_{actors}"] = {"docs_per_s": round(len(docs) / seconds, 1), "seconds": round(seconds, 1),
                                       "same_docnos": same_docnos,
                                       "max_abs_diff": float(np.abs(np.asarray(snap.vectors) - ref).max())}
    finally:
        ray.shutdown()
    out["overhead_1_actor"] = round(1 - out["actors_1"]["docs_per_s"] / out["single_docs_per_s"], 3)
    out["speedup_2_actors_vs_1"] = round(out["actors_2"]["docs_per_s"] / out["actors_1"]["docs_per_s"], 3)
    return out


def engine(args, dense_path: str) -> dict:
    """Our exact DenseIndex against the same vectors in Qdrant (local mode), through the same stages."""
    import pyterrier_dense as ptd
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    from measures import evaluate, overlap, timed
    coll = ptd.Collection(args.collection)
    topics, qrels = coll.topics(args.split), coll.qrels(args.split)
    ours = ptd.DenseIndex(dense_path)
    snap = ours.snapshot()
    records = [{"docno": d, "doc_vec": v, "pyterrier_dense.encoder": ours.encoder_settings}
               for d, v in zip(snap.docnos[np.arange(snap.count)], np.asarray(snap.vectors))]
    qdrant = ptd.QdrantIndex(":memory:", "bench")
    _, build_s = timed(qdrant.indexer(resume=False).index, records)
    q = ptd.BiEncoder(args.model or resolve_model(DEFAULT_MODEL), verbose=False).query_encoder()(topics)
    exact, ours_s = timed(ours.retriever(num_results=100), q)
    run, engine_s = timed(qdrant.retriever(num_results=100), q)
    return {"build_s": round(build_s, 2), "agree_at_100": overlap(run, exact), "ndcg10_ours": evaluate(exact, qrels)["ndcg10"],
            "ndcg10_qdrant": evaluate(run, qrels)["ndcg10"], "ms_per_query_ours": round(1000 * ours_s / len(q), 2),
            "ms_per_query_qdrant": round(1000 * engine_s / len(q), 2), "mode": "qdrant-client local (:memory:)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--collection", required=True)
    p.add_argument("--model", default=None, help="a bi-encoder (default: the local all-MiniLM-L6-v2)")
    p.add_argument("--chunk-size", type=int, default=256, help="documents PyTerrier hands the encoder at once")
    p.add_argument("--shard-size", type=int, default=256, help="documents a shard of the resumable build")
    p.add_argument("--kill-at", type=float, default=0.5, help="kill the second build once it has encoded this share of the corpus")
    p.add_argument("--split", default="test")
    p.add_argument("--ray-docs", type=int, default=None, help="documents the Ray comparison encodes (default: all)")
    p.add_argument("--precision", default="auto", help="the encoder's precision in the Ray comparison")
    p.add_argument("--skip-ray", action="store_true", help="leave out the Ray comparison")
    p.add_argument("--skip-resume", action="store_true", help="leave out the resume and engine figures")
    p.add_argument("--skip-engine", action="store_true", help="leave out the Qdrant comparison")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    publish(run(args), args.json)


if __name__ == "__main__":
    main()
