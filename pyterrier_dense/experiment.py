"""The main job: BM25, dense retrieval, BM25 re-ranked by dense scores, and their hybrid, in one pt.Experiment.

Each system runs once over the topics (the dense systems share one encoder with a query cache, so every topic is
encoded once); the table, significance against BM25 and per-query values come from those runs.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np
import pandas as pd
import pyterrier as pt

from .collection import Collection
from .artifacts.dense_index import DenseIndex
from .models.default_model import DEFAULT_MODEL, resolve_model
from .stages.fusion import ScoreFusion
from .stages.progress import progress_bar, quiet

__all__ = ["DEFAULT_MODEL", "resolve_model", "build_bm25", "build_systems", "run_experiment", "format_table",
           "plot_per_query", "MEASURES", "ALPHA"]

MEASURES = [pt.measures.nDCG @ 10, pt.measures.R @ 100, pt.measures.AP]
ALPHA = 0.05   # family-wise error rate of the Holm-corrected paired t-tests against the baseline
UNDEFINED = "\u2013"   # an en dash: no p-value (a system whose per-query values equal the baseline's)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.rstrip("/").split("/")[-1] if os.path.isdir(text) else text)


# ---- BM25 from pyterrier-pisa, with its native log kept out of the terminal -------------------------------------

@contextlib.contextmanager
def _native_log_captured(what: str) -> Iterator[TextIO]:
    """Send what native code writes to the process's stdout and stderr (file descriptors 1 and 2) to a temporary
    file for the block; if the block fails, print it after all, then re-raise. Yields a stream on the real stderr for
    our own progress.

    pyterrier-pisa logs ``[info]`` lines to stdout and ``Create index: N%`` counters to stderr (~300 lines on a
    terminal), and the log-level switch it documents is missing from its compiled module; hence file descriptors."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        on_fd2 = sys.stderr.fileno() == 2   # a terminal; in a notebook or under pytest's capsys stderr is elsewhere
    except (AttributeError, OSError, ValueError):
        on_fd2 = False
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile(mode="w+b") as log:
        for fd in saved:
            os.dup2(log.fileno(), fd)
        ours = os.fdopen(os.dup(saved[2]), "w", buffering=1) if on_fd2 else sys.stderr
        failed = False
        try:
            yield ours
        except BaseException:
            failed = True
            raise
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            if ours is not sys.stderr:
                ours.close()
            if failed:
                log.seek(0)
                text = log.read().decode("utf-8", "replace").replace("\r", "\n")
                if text.strip():
                    print(f"{what} failed; its log:\n{text.strip()}", file=sys.stderr, flush=True)


def build_bm25(collection: Collection, index_dir: str | os.PathLike = "indexes", num_results: int = 1000, *,
               verbose: bool = True) -> pt.Transformer:
    """pyterrier-pisa BM25 over ``collection``, its index built once into ``index_dir/<name>.pisa`` and reused.

    PISA's native log (hundreds of lines while it builds and prepares BM25) is captured and shown only if the
    build fails; one progress bar of our own (``BM25 index``: documents read, n/total) shows instead."""
    try:
        import pyterrier_pisa
    except ImportError:
        raise ImportError("the experiment's BM25 needs pyterrier-pisa: pip install 'pyterrier-dense[pisa]'") from None
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    pisa = pyterrier_pisa.PisaIndex(str(index_dir / f"{collection.name}.pisa"), text_field="text")
    with _native_log_captured("building the PISA index") as stream:
        if pisa.built():
            return pisa.bm25(num_results=num_results)   # prepares its BM25 structures: native log too
        with progress_bar(desc="BM25 index (PISA)", unit="doc", total=collection.num_docs(), verbose=verbose,
                          file=stream) as bar:
            pisa.index(_counted(collection.corpus_iter(), bar))
            bar.set_postfix_str("preparing BM25")
            return pisa.bm25(num_results=num_results)


def _counted(docs, bar) -> Iterator[dict]:
    for doc in docs:
        yield doc
        bar.update()


# ---- the four systems ------------------------------------------------------------------------------------------

def build_systems(collection: Collection, model: str = DEFAULT_MODEL, index_dir: str | os.PathLike = "indexes",
                  num_results: int = 1000, *, verbose: bool = True,
                  query_cache: int = 10_000) -> dict[str, pt.Transformer]:
    """Build (or reuse, from ``index_dir``) a PISA BM25 index and a dense index; return the four systems.

    The three dense systems share one encoder that keeps the vectors of up to ``query_cache`` queries, so an
    experiment encodes each topic once. ``verbose=False``: no progress bars."""
    from .stages.bi_encoder import BiEncoder
    with quiet(not verbose):
        bm25 = build_bm25(collection, index_dir, num_results, verbose=verbose)
        with quiet():   # no transformers "Loading weights" bar; encoding bars are decided when they are drawn
            enc = BiEncoder(resolve_model(model), query_cache=query_cache, verbose=verbose)
        index = DenseIndex(Path(index_dir) / f"{collection.name}.{_slug(model)}.dense")
        if not index.exists():
            (enc >> index.indexer()).index(collection.corpus_iter())
    dense = enc >> index.retriever(num_results=num_results)
    return {
        "bm25": bm25,
        "dense": dense,
        "bm25_dense_rerank": bm25 >> enc >> index.scorer(),
        "hybrid": ScoreFusion(bm25, dense, norm="minmax", num_results=num_results),
    }


# ---- the run and its significance ------------------------------------------------------------------------------

def _number(x) -> float | None:
    """A JSON-able float: NaN (an undefined p-value) becomes None."""
    x = float(x)
    return None if math.isnan(x) else x


def _holm(p_values: list[float | None]) -> list[tuple[float | None, bool]]:
    """(Holm-corrected p-value, reject at ALPHA) for each test of one family; an undefined p-value stays undefined,
    is not rejected, and does not count in the family."""
    defined = [i for i, p in enumerate(p_values) if p is not None]
    out: list[tuple[float | None, bool]] = [(None, False)] * len(p_values)
    if defined:
        from statsmodels.stats.multitest import multipletests
        reject, adjusted, _, _ = multipletests([p_values[i] for i in defined], alpha=ALPHA, method="holm")
        for i, r, p in zip(defined, reject, adjusted):
            out[i] = (float(p), bool(r))
    return out


def run_experiment(collection: Collection, model: str = DEFAULT_MODEL, split: str | None = "test",
                   index_dir: str | os.PathLike = "indexes", *, verbose: bool = True) -> tuple[pd.DataFrame, dict]:
    """Run the four systems on ``split`` and compare them with BM25.

    Returns a table (one row per system: the means, then per measure the queries improved (``+``) and degraded
    (``-``) against BM25, the t-test ``p-value``, the Holm-``corrected`` one and ``reject``; measures in the order of
    :data:`MEASURES`) and a JSON-able summary::

        {"collection", "model", "split", "num_queries", "measures", "baseline", "test", "correction", "alpha",
         "systems": {name: {measure: mean}},
         "significance": {name: {measure: {"improved", "degraded", "p_value", "p_value_corrected", "reject"}}},
         "per_query": {name: {measure: {qid: value}}}}

    Significance: paired t-test against BM25 (as ``pt.Experiment(baseline=0)`` computes it), Holm-corrected over the
    systems for each measure; a system whose per-query values equal BM25's has no p-value (``None``), is not
    rejected and does not count in the correction. Each system runs once and the runs are evaluated once.
    The split's topics and qrels are read first, so a missing or empty split fails before any index is built.
    ``verbose=False``: no progress bars (notices go through the ``"pyterrier_dense"`` logger)."""
    topics, qrels = collection.topics(split), collection.qrels(split)
    if not len(topics) or not len(qrels):
        raise ValueError(f"{collection.source} has no {'queries' if not len(topics) else 'qrels'} for split {split!r}")
    with quiet(not verbose):
        systems = build_systems(collection, model, index_dir, verbose=verbose, query_cache=len(topics))
        # ir_measures reads qid/docno element by element: plain object arrays read faster than pandas strings
        runs = {name: system(topics).astype({"qid": object, "docno": object}) for name, system in systems.items()}
    names, measures = list(runs), [str(m) for m in MEASURES]
    means, per_query = pt.Experiment(list(runs.values()), topics, qrels, MEASURES, names=names, perquery="both")
    values = {name: {m: dict(zip(g["qid"], g["value"])) for m, g in frame.groupby("measure", sort=False)}
              for name, frame in per_query.groupby("name", sort=False)}
    significance = _significance(values, names, measures)
    summary = {
        "collection": collection.source, "model": model, "split": split, "num_queries": int(len(topics)),
        "measures": measures, "baseline": names[0], "test": "paired t-test", "correction": "holm", "alpha": ALPHA,
        "systems": {row["name"]: {m: float(row[m]) for m in measures} for _, row in means.iterrows()},
        "significance": significance,
        "per_query": {name: {m: {str(q): float(v) for q, v in values[name][m].items()} for m in measures}
                      for name in names},
    }
    table = pd.DataFrame([{"name": name, **summary["systems"][name],
                           **{f"{m} {column}": significance.get(name, {}).get(m, {}).get(key)
                              for m in measures for column, key in _TABLE_COLUMNS}} for name in names])
    return table, summary


_TABLE_COLUMNS = [("+", "improved"), ("-", "degraded"), ("p-value", "p_value"), ("corrected", "p_value_corrected"),
                  ("reject", "reject")]


def _significance(values: dict, names: list[str], measures: list[str]) -> dict:
    """Each system against ``names[0]``, per measure, over the baseline's queries (as pt.Experiment pairs them)."""
    from scipy import stats
    baseline, others = names[0], names[1:]
    out: dict[str, dict] = {name: {} for name in others}
    for m in measures:
        qids = list(values[baseline][m])
        base = np.array([values[baseline][m][q] for q in qids])
        raw = {}
        for name in others:
            run = np.array([values[name][m].get(q, 0.0) for q in qids])
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")   # identical values: scipy warns and returns NaN
                raw[name] = _number(stats.ttest_rel(run, base)[1])
            out[name][m] = {"improved": int((run > base).sum()), "degraded": int((run < base).sum()),
                            "p_value": raw[name]}
        for name, (corrected, reject) in zip(others, _holm([raw[n] for n in others])):
            out[name][m].update(p_value_corrected=corrected, reject=reject)
    return out


# ---- presentation ----------------------------------------------------------------------------------------------

def _p_text(p: float | None) -> str:
    return UNDEFINED if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def format_table(summary: dict, digits: int = 4) -> str:
    """The summary as a compact text table: one column per measure, in the order asked, ``*`` on a value that
    differs significantly from the baseline, and the corrected p-value in one column per measure; a legend follows.

    >>> print(format_table({"measures": ["AP"], "baseline": "a", "alpha": 0.05,
    ...                     "systems": {"a": {"AP": 0.5}, "b": {"AP": 0.75}, "c": {"AP": 0.5}},
    ...                     "significance": {"b": {"AP": {"p_value_corrected": 0.01, "reject": True}},
    ...                                      "c": {"AP": {"p_value_corrected": None, "reject": False}}}}))
    system      AP    p AP
    a       0.5000       –
    b       0.7500*  0.010
    c       0.5000       –
    * differs from a: paired t-test, Holm-corrected p < 0.05 (p columns: corrected p-values; – : not testable, the same per-query values as a)
    """
    measures, baseline = summary["measures"], summary["baseline"]
    rows = []
    for name, means in summary["systems"].items():
        tests = summary.get("significance", {}).get(name, {})
        row = {"system": name}
        for m in measures:
            mark = "*" if tests.get(m, {}).get("reject") else " "
            row[m] = f"{means[m]:.{digits}f}{mark}"
        for m in measures:
            row[f"p {m}"] = _p_text(tests.get(m, {}).get("p_value_corrected"))
        rows.append(row)
    header = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in header}
    lines = ["  ".join(c.ljust(widths[c]) if c == "system" else c.rjust(widths[c] - (c in measures))
                       + " " * (c in measures) for c in header)]
    lines += ["  ".join(r[c].ljust(widths[c]) if c == "system" else r[c].rjust(widths[c]) for c in header)
              for r in rows]
    legend = (f"* differs from {baseline}: paired t-test, Holm-corrected p < {summary.get('alpha', ALPHA):g} "
              f"(p columns: corrected p-values; {UNDEFINED} : not testable, the same per-query values as {baseline})")
    return "\n".join(line.rstrip() for line in lines) + "\n" + legend


def plot_per_query(summary: dict, path: str | os.PathLike, measure: str = "nDCG@10") -> None:
    """Draw, for each system, its per-query ``measure`` minus the baseline's, sorted, and save it as an image.

    Needs matplotlib (the ``demo`` extra); draws on a bare ``Figure``, so no pyplot state or display is touched."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'pyterrier-dense[demo]' (or pip install matplotlib)") \
            from None
    baseline = summary["baseline"]
    base = summary["per_query"][baseline][measure]
    others = [n for n in summary["per_query"] if n != baseline]
    fig = Figure(figsize=(9, 2.2 * len(others) + 0.6), layout="constrained")
    axes = fig.subplots(len(others), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, others):
        values = summary["per_query"][name][measure]
        delta = np.sort(np.array([values[q] - b for q, b in base.items()]))[::-1]
        better, worse = int((delta > 0).sum()), int((delta < 0).sum())
        ax.bar(np.arange(len(delta)), delta, width=1.0, color=np.where(delta > 0, "tab:green", "tab:red"))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlim(-0.5, len(delta) - 0.5)
        ax.set_ylabel(f"{measure} \u0394")
        ax.set_title(f"{name} \u2212 {baseline}: better on {better} queries, worse on {worse}, "
                     f"tied on {len(delta) - better - worse}", fontsize=10, loc="left")
    axes[-1].set_xlabel("queries, sorted by difference")
    fig.suptitle(f"{summary.get('collection', '')}: per-query {measure} against {baseline}", fontsize=11)
    fig.savefig(path, dpi=110)
