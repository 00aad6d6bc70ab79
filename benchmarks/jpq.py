"""JPQ on a collection: how much of product quantisation's effectiveness loss against the exact index it recovers.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``). From the repository
root::

    python benchmarks/jpq.py --collection ../shared/data/scifact --json out.json

all-MiniLM-L6-v2 (zero-shot) over the exact dense index (``exact``) and over a PQ index of ``--m`` codes of
``--nbits`` bits (``pq``, 48 bytes a document by default); then ``train_jpq`` on the training split (query tower and
centroids, the codes fixed) and the trained query encoder over the JPQ index (``jpq``). Figures: nDCG@10 and R@100
on the test split, train_minutes, ``recovered_fraction`` = (jpq - pq) / (exact - pq) of nDCG@10, and the CPU kind.
``jpq_encoder_over_exact`` is the trained query encoder over the exact vectors (the share of the gain that supervised
training of the query tower gives without any compression); ``--lr 0`` trains the centroids alone.
``--dense`` reuses a dense index of the same encoder (copied into the workdir) instead of encoding the corpus.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, evaluate, publish  # noqa: E402


def dense_index(enc, coll, work: str, reuse: str | None):
    """The exact dense index in ``work``: already there, copied from ``reuse``, or encoded now."""
    import pyterrier_dense as ptd
    path = os.path.join(work, "corpus.dense")
    index = ptd.DenseIndex(path)
    if index.exists():
        return index
    if reuse:
        shutil.copytree(reuse, path)
        return index
    (enc >> index.indexer()).index(coll.corpus_iter())
    return index


def run(args) -> dict:
    import pyterrier_dense as ptd
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    from pyterrier_dense.stages.progress import quiet
    from pyterrier_dense.training.jpq import train_jpq
    work = args.workdir or tempfile.mkdtemp(prefix="jpq-bench-")
    os.makedirs(work, exist_ok=True)
    coll = ptd.Collection(args.collection)
    topics, qrels = coll.topics(args.split), coll.qrels(args.split)
    import torch
    out = {"cpu": cpu_kind(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    with quiet(not args.progress):
        enc = ptd.BiEncoder(args.model or resolve_model(DEFAULT_MODEL), precision="fp32", verbose=args.progress)
        dense = dense_index(enc, coll, work, args.dense)
        out["exact"] = evaluate((enc >> dense.retriever(num_results=100))(topics), qrels)
        pq_index = dense.compress(os.path.join(work, "corpus.pq"), m=args.m, nbits=args.nbits, opq=args.opq,
                                  mode="overwrite")
        out["pq"] = {**evaluate((enc >> pq_index.retriever(num_results=100))(topics), qrels),
                     "code_bytes_per_doc": pq_index.size()["code_bytes_per_doc"], "opq": args.opq}
        started = time.perf_counter()
        jpq_enc, jpq_index = train_jpq(enc, pq_index, coll.topics(args.train_split), coll.qrels(args.train_split),
                                       out_index=os.path.join(work, "corpus.jpq"), mode="overwrite",
                                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                       centroid_lr=args.centroid_lr, n_negatives=args.negatives,
                                       temperature=args.temperature, seed=args.seed, verbose=args.progress)
        minutes = (time.perf_counter() - started) / 60
        report = jpq_index.manifest["report"]["jpq"]
        out["jpq"] = {**evaluate((jpq_enc >> jpq_index.retriever(num_results=100))(topics), qrels),
                      "train_minutes": round(minutes, 1), "epochs": args.epochs, "batch_size": args.batch_size,
                      "lr": args.lr, "centroid_lr": args.centroid_lr, "negatives": args.negatives,
                      "temperature": args.temperature, "queries": report["queries"], "history": report["history"],
                      "precision": report["precision"]}
        # how much of that is the query tower's supervised training alone: the trained queries over exact vectors
        out["jpq_encoder_over_exact"] = evaluate(
            (jpq_enc >> dense.retriever(num_results=100, check_encoder=False))(topics), qrels)
    gap = out["exact"]["ndcg10"] - out["pq"]["ndcg10"]
    out["recovered_fraction"] = round((out["jpq"]["ndcg10"] - out["pq"]["ndcg10"]) / gap, 3) if gap else None
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--train-split", default="train")
    p.add_argument("--model")
    p.add_argument("--dense", help="an existing dense index of the same encoder to copy instead of encoding")
    p.add_argument("--m", type=int, default=48)
    p.add_argument("--nbits", type=int, default=8)
    p.add_argument("--opq", action="store_true")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--centroid-lr", type=float, default=1e-4)
    p.add_argument("--negatives", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    publish(run(args), args.json)


if __name__ == "__main__":
    main()
