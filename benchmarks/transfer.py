"""Trained models on other collections: each model's exact dense retrieval on each collection's test split, beside
the zero-shot model's, with no further tuning.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``). From the repository
root, with models trained by ``benchmarks/train.py`` (its ``--workdir`` holds ``trained/`` and ``distilled/``)::

    python benchmarks/transfer.py --model biencoder=WORK/trained --model biencoder_distilled=WORK/distilled \\
        --json out.json

``--interpolate W`` (repeatable) adds each model blended with the zero-shot model it started from, W of its
trained weights (WiSE-FT, ``ptd.training.interpolate``), as ``NAME_wiseW``; add ``scifact`` to ``--collections`` to
see what the blend keeps on the training collection's test split.

``--collections`` defaults to every shared collection but SciFact (the training collection). Trained
cross-encoders (``--cross-encoder crossencoder_rerank=WORK/ce``) re-rank BM25's top ``--rerank-depth`` on each
collection, beside BM25 itself (PISA, built in the work directory).

Figures: nDCG@10 and R@100 per collection and model (``zero_shot`` is all-MiniLM-L6-v2), the seconds each took
(encoding the collection included), and each model's nDCG@10 against the zero-shot model query by query
(``vs_zero_shot``: mean difference, queries better and worse, paired t-test p-value).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, evaluate, paired, publish  # noqa: E402


def _built_by(index, enc) -> bool:
    """Whether ``index`` exists, complete, from ``enc``'s settings (weights' fingerprint included)."""
    if not index.exists():
        return False
    try:
        index.check_encoder(enc.model.settings())
    except ValueError:
        return False
    return True


def run(args) -> dict:
    import pyterrier_dense as ptd
    from pyterrier_dense.experiment import build_bm25
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    from pyterrier_dense.stages.progress import quiet
    work = args.workdir or tempfile.mkdtemp(prefix="transfer-bench-")
    models = {} if args.skip_zero_shot else {"zero_shot": resolve_model(DEFAULT_MODEL)}
    models.update(m.split("=", 1) for m in args.model)
    start = args.start or resolve_model(DEFAULT_MODEL)
    runs = {label: (path, None) for label, path in models.items()}
    runs.update({f"{label}_wise{w:g}": (path, w) for label, path in models.items() if label != "zero_shot"
                 for w in args.interpolate})
    cross_encoders = dict(m.split("=", 1) for m in args.cross_encoder)
    out = {"cpu": cpu_kind()}
    for name in args.collections.split(","):
        coll = ptd.Collection(os.path.join(args.data, name))
        topics, qrels = coll.topics(args.split), coll.qrels(args.split)
        out[name], zero_run = {}, None
        if cross_encoders:
            first = build_bm25(coll, os.path.join(work, "bm25"), verbose=False) % args.rerank_depth
            out[name]["bm25"] = evaluate(first(topics), qrels)
        for label, path in cross_encoders.items():
            t = time.perf_counter()
            ce = ptd.CrossEncoder(path, precision="fp32", verbose=False)
            out[name][label] = {**evaluate((first >> coll.text_loader() >> ce)(topics), qrels),
                                "seconds": round(time.perf_counter() - t)}
        for label, (path, weight) in runs.items():
            t = time.perf_counter()
            enc = ptd.BiEncoder(path, precision="fp32", verbose=False)
            if weight is not None:
                ptd.training.interpolate(enc, ptd.BiEncoder(start, precision="fp32", verbose=False), weight)
            index = ptd.DenseIndex(os.path.join(work, f"{name}.{label}.dense"))
            with quiet(True):
                if not _built_by(index, enc):   # (a work directory's index of the same weights is used again)
                    (enc >> index.indexer(mode="overwrite")).index(coll.corpus_iter())
                ranked = (enc >> index.retriever(num_results=100))(topics)
            out[name][label] = {**evaluate(ranked, qrels), "seconds": round(time.perf_counter() - t)}
            if label == "zero_shot":
                zero_run = ranked
            elif zero_run is not None:
                out[name][label]["vs_zero_shot"] = paired(ranked, zero_run, qrels)
        print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)   # each collection as it is done
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="a trained model (repeatable)")
    p.add_argument("--collections", default="adi,cacm,cranfield,vaswani,msmarco-dl19-subset,dbpedia-entity-subset")
    p.add_argument("--cross-encoder", action="append", default=[], metavar="NAME=PATH",
                   help="a trained cross-encoder (repeatable), re-ranking BM25's top --rerank-depth")
    p.add_argument("--rerank-depth", type=int, default=100)
    p.add_argument("--skip-zero-shot", action="store_true", help="no zero-shot dense run")
    p.add_argument("--interpolate", action="append", type=float, default=[], metavar="W",
                   help="also each model blended with --start: W trained + (1 - W) starting weights (repeatable)")
    p.add_argument("--start", help="the model the trained ones started from (default all-MiniLM-L6-v2)")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--split", default="test")
    p.add_argument("--workdir")
    p.add_argument("--json")
    args = p.parse_args(argv)
    publish(run(args), args.json)


if __name__ == "__main__":
    main()
