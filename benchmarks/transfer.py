"""Trained models on other collections: each model's exact dense retrieval on each collection's test split, beside
the zero-shot model's, with no further tuning.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``). From the repository
root, with models trained by ``benchmarks/train.py`` (its ``--workdir`` holds ``trained/`` and ``distilled/``)::

    python benchmarks/transfer.py --model biencoder=WORK/trained --model biencoder_distilled=WORK/distilled \\
        --collections adi,cacm,vaswani --json out.json

Figures: nDCG@10 and R@100 per collection and model (``zero_shot`` is all-MiniLM-L6-v2), and the seconds each took
(encoding the collection included).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, evaluate, publish  # noqa: E402


def run(args) -> dict:
    import pyterrier_dense as ptd
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    from pyterrier_dense.stages.progress import quiet
    work = args.workdir or tempfile.mkdtemp(prefix="transfer-bench-")
    models = {"zero_shot": resolve_model(DEFAULT_MODEL), **dict(m.split("=", 1) for m in args.model)}
    out = {"cpu": cpu_kind()}
    for name in args.collections.split(","):
        coll = ptd.Collection(os.path.join(args.data, name))
        topics, qrels = coll.topics(args.split), coll.qrels(args.split)
        out[name] = {}
        for label, path in models.items():
            t = time.perf_counter()
            enc = ptd.BiEncoder(path, precision="fp32", verbose=False)
            index = ptd.DenseIndex(os.path.join(work, f"{name}.{label}.dense"))
            with quiet(True):
                (enc >> index.indexer(mode="overwrite")).index(coll.corpus_iter())
                out[name][label] = evaluate((enc >> index.retriever(num_results=100))(topics), qrels)
            out[name][label]["seconds"] = round(time.perf_counter() - t)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="a trained model (repeatable)")
    p.add_argument("--collections", default="adi,cacm,vaswani")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--split", default="test")
    p.add_argument("--workdir")
    p.add_argument("--json")
    args = p.parse_args(argv)
    publish(run(args), args.json)


if __name__ == "__main__":
    main()
