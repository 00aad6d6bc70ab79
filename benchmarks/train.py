"""Fine-tuning a bi-encoder on a collection's training split, evaluated on its test split beside the zero-shot model.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``). From the repository
root::

    python benchmarks/train.py --collection ../shared/data/scifact --json out.json

``biencoder``: all-MiniLM-L6-v2 trained with ``BiEncoder.fit`` (InfoNCE over in-batch documents and
``--negatives`` BM25 hard negatives a query, sampled from BM25's top 50 after skipping its first ``--skip-top``), then
the test split retrieved exactly from a dense index of the trained model. ``zero_shot``: the same without training.
Figures: nDCG@10, R@100, train_minutes, and the CPU kind.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, evaluate  # noqa: E402


def dense_run(enc, coll, topics, path: str):
    import pyterrier_dense as ptd
    index = ptd.DenseIndex(path)
    (enc >> index.indexer(mode="overwrite")).index(coll.corpus_iter())
    return (enc >> index.retriever(num_results=100))(topics)


def run(args) -> dict:
    import pyterrier_dense as ptd
    from pyterrier_dense.experiment import build_bm25
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    from pyterrier_dense.stages.progress import quiet
    work = args.workdir or tempfile.mkdtemp(prefix="train-bench-")
    coll = ptd.Collection(args.collection)
    train_topics, train_qrels = coll.topics(args.train_split), coll.qrels(args.train_split)
    topics, qrels = coll.topics(args.split), coll.qrels(args.split)
    bm25 = build_bm25(coll, os.path.join(work, "bm25"), verbose=False)
    out = {"cpu": cpu_kind(), "threads": os.cpu_count()}
    model = args.model or resolve_model(DEFAULT_MODEL)
    with quiet(not args.progress):
        if not args.skip_zero_shot:
            enc = ptd.BiEncoder(model, precision="fp32", verbose=False)
            out["zero_shot"] = evaluate(dense_run(enc, coll, topics, os.path.join(work, "zero.dense")), qrels)
        enc = ptd.BiEncoder(model, precision="fp32", verbose=args.progress)
        t = time.perf_counter()
        enc.fit(train_topics, train_qrels, texts=coll, negatives=bm25 % 50, n_negatives=args.negatives,
                skip_top=args.skip_top, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                out=os.path.join(work, "trained"))
        minutes = (time.perf_counter() - t) / 60
        out["biencoder"] = {**evaluate(dense_run(enc, coll, topics, os.path.join(work, "trained.dense")), qrels),
                            "train_minutes": round(minutes, 1), "epochs": args.epochs, "negatives": args.negatives,
                            "batch_size": args.batch_size, "lr": args.lr, "history": enc.last_fit["epochs"],
                            "skipped": enc.last_fit["skipped"], "precision": enc.last_fit["precision"]}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--train-split", default="train")
    p.add_argument("--model")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--negatives", type=int, default=3)
    p.add_argument("--skip-top", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--workdir")
    p.add_argument("--skip-zero-shot", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
