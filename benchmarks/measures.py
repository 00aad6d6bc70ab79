"""What the benchmarks share: the CPU kind, nDCG@10 / R@100 of a run, top-k overlap between runs, timing."""
from __future__ import annotations

import os
import platform
import time

import numpy as np

__all__ = ["cpu_kind", "evaluate", "paired", "tops", "overlap", "timed"]


def cpu_kind() -> str:
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    name = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "")
    return f"{name or platform.processor()} ({'avx512_bf16' if 'avx512_bf16' in flags else 'AVX2 only'})"


def evaluate(run, qrels) -> dict:
    import ir_measures
    from ir_measures import R, nDCG
    m = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"}),
                                   run.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]])
    return {"ndcg10": round(m[nDCG @ 10], 4), "r100": round(m[R @ 100], 4)}


def _per_query_ndcg10(run, qrels) -> dict:
    import ir_measures
    from ir_measures import nDCG
    judged = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    ranked = run.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]]
    found = {m.query_id: m.value for m in ir_measures.iter_calc([nDCG @ 10], judged, ranked)}
    return {q: found.get(q, 0.0) for q in judged.query_id.unique()}   # a query with no results scores 0


def paired(run, baseline, qrels) -> dict:
    """nDCG@10 of ``run`` against ``baseline`` query by query: the mean difference, the queries better and worse,
    and the two-sided paired t-test's p-value."""
    from scipy.stats import ttest_rel
    ours, theirs = _per_query_ndcg10(run, qrels), _per_query_ndcg10(baseline, qrels)
    a = np.array([ours[q] for q in theirs])
    b = np.array([theirs[q] for q in theirs])
    p = float(ttest_rel(a, b).pvalue) if np.any(a != b) else 1.0
    return {"delta": round(float(np.mean(a - b)), 4), "better": int(np.sum(a > b)), "worse": int(np.sum(a < b)),
            "p": round(p, 3)}


def tops(run, depth: int = 100) -> dict:
    run = run.sort_values(["qid", "rank"])
    return {q: list(g.docno[:depth]) for q, g in run.groupby("qid")}


def overlap(run, reference, depth: int = 100) -> float:
    a, b = tops(run, depth), tops(reference, depth)
    return round(float(np.mean([len(set(a.get(q, [])) & set(b[q])) / max(1, len(b[q])) for q in b])), 4)


def timed(fn, *args):
    """(result, seconds) of one call."""
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def publish(result: dict, path: str | None) -> None:
    """Print a benchmark's result as JSON, and write it to ``path`` (``--json``) when one is given."""
    import json
    print(json.dumps(result, indent=1))
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
