"""``pyterrier-dense`` command line: argument parsing and printing; the work is done by the public API."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from .models.default_model import DEFAULT_MODEL
    p = argparse.ArgumentParser(prog="pyterrier-dense", description="Dense retrieval experiments with PyTerrier.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("experiment", help="BM25 vs dense vs BM25>>dense re-ranking vs hybrid, with significance")
    e.add_argument("--collection", required=True, help="collection directory, BEIR dir/zip, or irds:<id>")
    e.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face model name or local path")
    e.add_argument("--split", default="test")
    e.add_argument("--index-dir", default="indexes", help="where indexes are built and cached")
    e.add_argument("--out", default=None, help="write the results (significance and per-query values included) "
                                                "as JSON here")
    e.add_argument("--plot", default=None, metavar="PNG",
                   help="draw per-query nDCG@10 differences against BM25 into this image (needs matplotlib)")

    i = sub.add_parser("index", help="encode a collection into a dense index")
    i.add_argument("--collection", required=True)
    i.add_argument("--model", default=DEFAULT_MODEL)
    i.add_argument("--index", required=True, help="index directory to create")
    how = i.add_mutually_exclusive_group()
    how.add_argument("--overwrite", action="store_true", help="replace an existing index (atomically)")
    how.add_argument("--append", action="store_true", help="add the collection's documents to an existing index")
    i.add_argument("--dtype", default=None, choices=["float32", "float16"], help="default float32")

    s = sub.add_parser("search", help="search a dense index for one query")
    s.add_argument("--index", required=True)
    s.add_argument("--model", default=DEFAULT_MODEL)
    s.add_argument("--query", required=True)
    s.add_argument("-k", "--num-results", type=int, default=10)
    s.add_argument("--collection", default=None, help="show document texts from this collection")
    s.add_argument("--no-check-encoder", action="store_true",
                   help="search even if the index was built with another encoder configuration")
    t = sub.add_parser("train", help="fine-tune a bi-encoder or a cross-encoder on a collection's training split")
    t.add_argument("--collection", required=True)
    t.add_argument("--model", default=DEFAULT_MODEL, help="the model to start from (name or path)")
    t.add_argument("--family", default="bi-encoder", choices=["bi-encoder", "cross-encoder"])
    t.add_argument("--split", default="train", help="the training split (default train)")
    t.add_argument("--valid-split", default=None, help="a dev split: the best epoch by nDCG@10 is kept")
    t.add_argument("--negatives", default="bm25", choices=["bm25", "none"],
                   help="hard negatives from BM25's top 50 (default), or in-batch negatives only")
    t.add_argument("--triples", default=None, metavar="JSONL",
                   help="take queries, positives and negatives from a triples file instead of the split")
    t.add_argument("--n-negatives", type=int, default=None, help="hard negatives a query (default 3; 7 for "
                                                                 "cross-encoders)")
    t.add_argument("--skip-top", type=int, default=None,
                   help="results skipped before negatives are drawn (default 3 for BM25, 0 for a triples file)")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=None, help="queries a step (default 32; 8 for cross-encoders)")
    t.add_argument("--lr", type=float, default=2e-5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--interpolate", type=float, default=1.0, metavar="W",
                   help="keep W of the trained weights and 1 - W of the starting ones (WiSE-FT; default 1: the "
                        "trained weights)")
    t.add_argument("--out", required=True, help="directory for the trained model (and its checkpoints while "
                                                "training: re-run the same command to resume)")
    t.add_argument("--index-dir", default="indexes", help="where the BM25 index is built and cached")
    for command in (e, i, s, t):
        command.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notices")
    return p


def _check_writable(path: str, flag: str = "--out") -> None:
    """Fail now, not after the run, when ``path`` cannot be written; its directory is created if missing."""
    p = Path(path)
    existed = p.exists()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a"):
            pass
    except OSError as e:
        raise OSError(f"cannot write {flag} {path}: {e.strerror or e}") from None
    if not existed:
        p.unlink()


def _check_plot(path: str) -> None:
    """Fail now, not after the run, when ``--plot`` cannot be drawn or written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'pyterrier-dense[demo]' (or pip install matplotlib)") \
            from None
    _check_writable(path, "--plot")


def _experiment(args) -> None:
    from .collection import Collection
    from .experiment import format_table, plot_per_query, run_experiment
    if args.out:
        _check_writable(args.out)
    if args.plot:
        _check_plot(args.plot)
    table, summary = run_experiment(Collection(args.collection), args.model, args.split, args.index_dir,
                                    verbose=not args.quiet)
    print(format_table(summary))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)
        print(f"wrote {args.out}")
    if args.plot:
        plot_per_query(summary, args.plot)
        print(f"wrote {args.plot}")


def _index(args) -> None:
    from . import BiEncoder, Collection, DenseIndex
    from .models.default_model import resolve_model
    index = DenseIndex(args.index)
    enc = BiEncoder(resolve_model(args.model))
    mode = "overwrite" if args.overwrite else "append" if args.append else "error"
    try:
        (enc >> index.indexer(mode=mode, dtype=args.dtype)).index(Collection(args.collection).corpus_iter())
    except FileExistsError:
        raise FileExistsError(f"{args.index} already exists: pass --overwrite to replace it, or --append to add "
                              "the collection's documents to it") from None
    print(f"indexed {index.count} documents ({index.dim} dimensions) into {args.index}")


def _search(args) -> None:
    import pandas as pd
    from . import BiEncoder, Collection, DenseIndex
    from .models.default_model import resolve_model
    index = DenseIndex(args.index)
    index.manifest  # a missing or corrupt index fails here, before the model loads
    retriever = index.retriever(num_results=args.num_results, check_encoder=not args.no_check_encoder)
    try:
        pipeline = BiEncoder(resolve_model(args.model)) >> retriever
        if args.collection:
            pipeline = pipeline >> Collection(args.collection).text_loader()
        res = pipeline.search(args.query)
    except ValueError as e:   # the index's hint names the API argument; here it is a flag
        if "check_encoder=False" not in str(e):
            raise
        raise ValueError(str(e).replace("check_encoder=False", "--no-check-encoder")) from None
    with pd.option_context("display.max_colwidth", 100, "display.width", 200):
        print(res[[c for c in ("rank", "docno", "score", "text") if c in res.columns]].to_string(index=False))


def _train(args) -> None:
    from . import BiEncoder, Collection, CrossEncoder
    from .experiment import build_bm25
    from .models.default_model import resolve_model
    from .training import read_triples
    coll = Collection(args.collection)
    if args.triples:
        topics, qrels, negatives = read_triples(args.triples)
    else:
        topics, qrels, negatives = coll.topics(args.split), coll.qrels(args.split), None
    valid = (coll.topics(args.valid_split), coll.qrels(args.valid_split)) if args.valid_split else (None, None)
    if args.negatives == "bm25" and negatives is None:
        negatives = build_bm25(coll, args.index_dir, verbose=not args.quiet) % 50
    cross = args.family == "cross-encoder"
    stage = CrossEncoder(resolve_model(args.model), new_head=True, precision="fp32") if cross else \
        BiEncoder(resolve_model(args.model), precision="fp32")
    skip_top = args.skip_top if args.skip_top is not None else 0 if args.triples else 3
    stage.fit(topics, qrels, *valid, texts=coll, negatives=negatives, skip_top=skip_top,
              n_negatives=args.n_negatives if args.n_negatives is not None else 7 if cross else 3,
              batch_size=args.batch_size or (8 if cross else 32), epochs=args.epochs, lr=args.lr, seed=args.seed,
              interpolate=args.interpolate, out=args.out)
    report = stage.last_fit
    if report["resumed_from_batch"] is not None:
        print(f"resumed from batch {report['resumed_from_batch']}")
    for epoch in report["epochs"]:
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in epoch.items()))
    skipped = {k: v for k, v in report["skipped"].items() if v}
    print(f"trained on {report['queries']} queries{f' (skipped: {skipped})' if skipped else ''}; saved {args.out}")
    if "interpolated" in report:
        print(f"saved weights: {args.interpolate:g} trained + {1 - args.interpolate:g} starting (WiSE-FT)")
    if not cross:
        print(f"evaluate it: pyterrier-dense experiment --collection {args.collection} --model {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .stages.progress import log, quiet
    level = log.level
    if args.quiet:
        log.setLevel(logging.ERROR)   # notices and bars alike (see pyterrier_dense.stages.progress)
    try:
        with quiet(args.quiet):
            {"experiment": _experiment, "index": _index, "search": _search, "train": _train}[args.command](args)
    except (OSError, ValueError, ImportError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"pyterrier-dense: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "train":
            print("pyterrier-dense: interrupted; run the same command again to resume from the last checkpoint",
                  file=sys.stderr)
            return 130
        print("pyterrier-dense: interrupted (no index was left half-written)", file=sys.stderr)
        return 130
    finally:
        log.setLevel(level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
