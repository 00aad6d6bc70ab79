"""Synthetic learned-sparse collections at scale: our SparseIndex against PISA on the same integer weights.

Documents get SPLADE-like term statistics: a 30,522-term vocabulary whose document frequencies follow a Zipf law
(the frequent terms carry small weights, the rare ones large), about ``terms_per_doc`` terms a document (lognormal),
weights quantised x100 as for an impact index. Queries draw ``terms_per_query`` terms the same way. Each engine is
built in a child process, so its peak RSS and build time are its own::

    python benchmarks/sparse_synthetic.py --docs 1000000 --json synthetic.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

VOCAB = 30522
CHUNK = 20000


def _term_probs() -> np.ndarray:
    p = 1.0 / np.arange(1, VOCAB + 1) ** 1.1
    return p / p.sum()


def synthetic_docs(n: int, terms_per_doc: int = 250, seed: int = 0):
    """Records ``{"docno", "toks"}`` with integer weights, generated in chunks (memory stays flat)."""
    rng = np.random.default_rng(seed)
    p, names = _term_probs(), [f"w{t}" for t in range(VOCAB)]
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        lengths = np.clip(rng.lognormal(np.log(terms_per_doc), 0.4, m).astype(np.int64), 1, 2000)
        terms = rng.choice(VOCAB, size=int(lengths.sum()), p=p)
        doc = np.repeat(np.arange(m), lengths)
        keys = np.unique(doc * VOCAB + terms)
        doc, terms = keys // VOCAB, keys % VOCAB
        # rare terms weigh more (as SPLADE's idf-like weights), with noise
        w = np.maximum(1, np.round(100 * rng.gamma(2.0, 0.25, len(terms)) * (1 + np.log1p(terms) / 4))).astype(np.int64)
        bounds = np.searchsorted(doc, np.arange(m + 1))
        tl, wl = terms.tolist(), w.tolist()
        for j in range(m):
            a, b = bounds[j], bounds[j + 1]
            yield {"docno": f"s{start + j}", "toks": {names[t]: x for t, x in zip(tl[a:b], wl[a:b])}}


def synthetic_queries(n: int, terms_per_query: int = 30, seed: int = 1):
    import pandas as pd
    rng = np.random.default_rng(seed)
    p = _term_probs()
    rows = []
    for i in range(n):
        terms = np.unique(rng.choice(VOCAB, size=terms_per_query, p=p))
        w = np.maximum(1, np.round(100 * rng.gamma(2.0, 0.25, len(terms)))).astype(int)
        rows.append({"qid": str(i), "query": f"q{i}", "query_toks": {f"w{t}": int(x) for t, x in zip(terms, w)}})
    return pd.DataFrame(rows)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_child(engine: str, path: str, n: int, terms_per_doc: int) -> None:
    """Build one engine's index in this (child) process; print its build time and peak RSS as JSON."""
    t = time.perf_counter()
    docs = synthetic_docs(n, terms_per_doc)
    if engine == "ours":
        import pyterrier_dense as ptd
        ptd.SparseIndex(path).indexer(mode="overwrite").index(docs)
    else:
        import pyterrier_pisa
        pyterrier_pisa.PisaIndex(path, stemmer="none", threads=1, overwrite=True).toks_indexer(scale=1.0).index(docs)
    print(json.dumps({"build_s": round(time.perf_counter() - t, 1), "peak_rss_mb": round(_peak_mb())}))


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def search_pair(ours_path: str, pisa_path: str, queries, k: int = 100, repeats: int = 2) -> dict:
    """Per-query latency of each engine (one query per call, best of ``repeats``), and top-k agreement."""
    import pyterrier_dense as ptd
    import pyterrier_pisa
    ours = ptd.SparseIndex(ours_path).retriever(num_results=k)
    pisa = pyterrier_pisa.PisaIndex(pisa_path, stemmer="none", threads=1).quantized(num_results=k, toks_scale=1.0)
    ours(queries.iloc[:2]), pisa(queries.iloc[:2])   # open files, warm caches
    times = {"ours": [], "pisa": []}
    runs = {}
    for name, stage in (("ours", ours), ("pisa", pisa)):
        for _ in range(repeats):
            t, parts = time.perf_counter(), []
            for i in range(len(queries)):
                parts.append(stage(queries.iloc[i:i + 1]))
            times[name].append((time.perf_counter() - t) / len(queries))
        runs[name] = parts
    batched = {}
    for name, stage in (("ours", ours), ("pisa", pisa)):
        t = time.perf_counter()
        stage(queries)
        batched[name] = (time.perf_counter() - t) / len(queries)
    return {"batched_ms_per_query": round(1000 * batched["ours"], 3),
            "pisa_batched_ms_per_query": round(1000 * batched["pisa"], 3),
            "ms_per_query": round(1000 * min(times["ours"]), 3),
            "pisa_ms_per_query": round(1000 * min(times["pisa"]), 3),
            "latency_ratio_vs_pisa": round(min(times["ours"]) / min(times["pisa"]), 2),
            "top_agreement_vs_pisa": agreement(runs["ours"], runs["pisa"])}


def agreement(ours: list, pisa: list) -> float:
    """Fraction of queries whose top-k equals PISA's up to ties: the same scores rank by rank, and the same documents
    above the last score (documents tied at the cut-off may differ)."""
    same = 0
    for a, b in zip(ours, pisa):
        sa, sb = a.score.to_numpy(), b.score.to_numpy()
        if len(sa) == len(sb) and np.allclose(sa, sb):
            cut = sa[-1] if len(sa) else 0
            same += set(a.docno[sa > cut]) == set(b.docno[sb > cut])
    return round(same / max(1, len(ours)), 4)


def run(docs: int, terms_per_doc: int, queries: int, workdir: str | None) -> dict:
    tmp = workdir or tempfile.mkdtemp(prefix="sparse-synth-")
    out = {"docs": docs, "terms_per_doc": terms_per_doc}
    paths = {"ours": os.path.join(tmp, f"ours-{docs}.splade"), "pisa": os.path.join(tmp, f"pisa-{docs}.pisa")}
    for engine, path in paths.items():
        proc = subprocess.run([sys.executable, __file__, "--child", engine, path, str(docs), str(terms_per_doc)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{engine} build failed: {proc.stderr[-2000:]}")
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        out[f"{engine}_build_s"], out[f"{engine}_peak_rss_mb"] = stats["build_s"], stats["peak_rss_mb"]
        out[f"{engine}_bytes_per_doc"] = round(_dir_bytes(path) / docs, 1)
    out.update(search_pair(paths["ours"], paths["pisa"], synthetic_queries(queries)))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--terms-per-doc", type=int, default=250)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.child:
        engine, path, n, terms = args.child
        return build_child(engine, path, int(n), int(terms))
    result = run(args.docs, args.terms_per_doc, args.queries, args.workdir)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
