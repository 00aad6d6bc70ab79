"""Fine-tuning a bi-encoder on a collection's training split, evaluated on its test split beside the zero-shot model.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``). From the repository
root::

    python benchmarks/train.py --collection ../shared/data/scifact --json out.json

``--only`` picks the runs (comma-separated; all by default):

- ``zero_shot``: all-MiniLM-L6-v2 untrained, the test split retrieved exactly from a dense index;
- ``biencoder``: the model trained with ``BiEncoder.fit`` (InfoNCE over in-batch documents and ``--negatives``
  BM25 hard negatives a query, sampled from BM25's top 50 after skipping its first ``--skip-top``);
- ``biencoder_distilled``: the same student distilled (listwise KL + in-batch InfoNCE) from a teacher pipeline, the
  min-max fusion of BM25 and the zero-shot dense retriever (its own figure reported as ``teacher``), its top 100
  the pool of negatives;
- ``crossencoder_rerank``: a cross-encoder trained from MiniLM's weights (new head, LCE over BM25 negatives)
  re-ranking BM25's top ``--rerank-depth``;
- ``crossencoder_distilled``: the same cross-encoder distilled (listwise KL + LCE) from zero-shot MaxSim re-ranking
  BM25's top 100 (``bm25 % 100 >> colbert.query_encoder() >> index.scorer()``, the token index of
  ``--colbert-index`` or one built in the work directory; its own figure reported as ``colbert_teacher``), whose
  ranking is also the pool of negatives.

Figures: nDCG@10, R@100, train_minutes, and the CPU kind.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, evaluate, publish  # noqa: E402


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
    only = set(args.only.split(",")) if args.only else set(RUNS)
    unknown = only - set(RUNS)
    if unknown:
        raise SystemExit(f"--only: unknown runs {sorted(unknown)}; choose from {RUNS}")
    coll = ptd.Collection(args.collection)
    train_topics, train_qrels = coll.topics(args.train_split), coll.qrels(args.train_split)
    topics, qrels = coll.topics(args.split), coll.qrels(args.split)
    bm25 = build_bm25(coll, os.path.join(work, "bm25"), verbose=False)
    out = {"cpu": cpu_kind(), "threads": os.cpu_count()}
    model = args.model or resolve_model(DEFAULT_MODEL)
    common = dict(texts=coll, batch_size=args.batch_size, lr=args.lr, epochs=args.epochs)

    def trained(name, enc, minutes, **extra):
        fit = enc.last_fit
        return {**evaluate(dense_run(enc, coll, topics, os.path.join(work, f"{name}.dense")), qrels),
                "train_minutes": round(minutes, 1), "epochs": args.epochs, "batch_size": args.batch_size,
                "lr": args.lr, "history": fit["epochs"], "skipped": fit["skipped"], "precision": fit["precision"],
                **extra}
    with quiet(not args.progress):
        if {"zero_shot", "biencoder_distilled"} & only:
            zero = ptd.BiEncoder(model, precision="fp32", verbose=False)
            zero_index = os.path.join(work, "zero.dense")
            zero_run = dense_run(zero, coll, topics, zero_index)
            out["zero_shot"] = evaluate(zero_run, qrels)
        if "biencoder" in only:
            enc = ptd.BiEncoder(model, precision="fp32", verbose=args.progress)
            t = time.perf_counter()
            enc.fit(train_topics, train_qrels, negatives=bm25 % 50, n_negatives=args.negatives,
                    skip_top=args.skip_top, out=os.path.join(work, "trained"), **common)
            out["biencoder"] = trained("trained", enc, (time.perf_counter() - t) / 60, negatives=args.negatives)
        if "biencoder_distilled" in only:
            teacher = ptd.ScoreFusion(bm25 % 100, zero >> ptd.DenseIndex(zero_index).retriever(num_results=100),
                                      num_results=100)
            out["teacher"] = evaluate(teacher(topics), qrels)
            enc = ptd.BiEncoder(model, precision="fp32", verbose=args.progress)
            t = time.perf_counter()
            enc.fit(train_topics, train_qrels, teacher=teacher, n_negatives=args.negatives,
                    teacher_temperature=args.teacher_temperature, teacher_cache=os.path.join(work, "teacher"),
                    out=os.path.join(work, "distilled"), **common)
            out["biencoder_distilled"] = trained("distilled", enc, (time.perf_counter() - t) / 60,
                                                 negatives=args.negatives, teacher_temperature=args.teacher_temperature)
        first = bm25 % args.rerank_depth
        ce_common = {**common, "batch_size": args.ce_batch_size, "lr": args.ce_lr or args.lr,
                     "epochs": args.ce_epochs or args.epochs}

        def cross_encoder(name, **fit_args):
            ce = ptd.CrossEncoder(model, new_head=True, precision="fp32", max_length=args.ce_max_length,
                                  verbose=args.progress)
            t = time.perf_counter()
            ce.fit(train_topics, train_qrels, n_negatives=args.ce_negatives, skip_top=args.skip_top,
                   out=os.path.join(work, name), **ce_common, **fit_args)
            minutes = (time.perf_counter() - t) / 60
            if "bm25" not in out:   # (setdefault would run BM25 again for the second cross-encoder)
                out["bm25"] = evaluate(first(topics), qrels)
            return {**evaluate((first >> coll.text_loader() >> ce)(topics), qrels),
                    "train_minutes": round(minutes, 1), "depth": args.rerank_depth, "max_length": ce.model.max_length,
                    "negatives": args.ce_negatives, "lr": ce_common["lr"], "batch_size": args.ce_batch_size,
                    "history": ce.last_fit["epochs"], "skipped": ce.last_fit["skipped"]}
        if "crossencoder_rerank" in only:
            out["crossencoder_rerank"] = cross_encoder("ce", negatives=bm25 % 50)
        if "crossencoder_distilled" in only:
            colbert = ptd.ColBERT(model, verbose=False)
            index = ptd.ColBERTIndex(args.colbert_index or os.path.join(work, "teacher.colbert"))
            if not index.exists():
                (colbert >> index.indexer()).index(coll.corpus_iter())
            teacher = bm25 % 100 >> colbert.query_encoder() >> index.scorer()
            out["colbert_teacher"] = evaluate(teacher(topics), qrels)
            out["crossencoder_distilled"] = {
                **cross_encoder("ce_distilled", teacher=teacher, teacher_cache=os.path.join(work, "ce_teacher"),
                                teacher_temperature=args.ce_teacher_temperature),
                "teacher_temperature": args.ce_teacher_temperature}
    return out


RUNS = ("zero_shot", "biencoder", "biencoder_distilled", "crossencoder_rerank", "crossencoder_distilled")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--train-split", default="train")
    p.add_argument("--model")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--negatives", type=int, default=4)
    p.add_argument("--skip-top", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--workdir")
    p.add_argument("--only", help=f"comma-separated runs out of {','.join(RUNS)} (default: all)")
    p.add_argument("--teacher-temperature", type=float, default=0.1)
    p.add_argument("--ce-negatives", type=int, default=7)
    p.add_argument("--ce-epochs", type=int, help="the cross-encoder's epochs (default: --epochs)")
    p.add_argument("--ce-lr", type=float, help="the cross-encoder's learning rate (default: --lr)")
    p.add_argument("--ce-batch-size", type=int, default=8, help="queries a cross-encoder batch (each with its "
                   "positive and --ce-negatives negatives)")
    p.add_argument("--ce-max-length", type=int, help="the cross-encoder's pair length (default: the checkpoint's)")
    p.add_argument("--rerank-depth", type=int, default=100)
    p.add_argument("--ce-teacher-temperature", type=float, default=1.0,
                   help="the MaxSim teacher's temperature (its scores are sums of cosines, one per query token)")
    p.add_argument("--colbert-index", help="the zero-shot model's ColBERTIndex for the cross-encoder's teacher "
                   "(default: built in the work directory)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    publish(run(args), args.json)


if __name__ == "__main__":
    main()
