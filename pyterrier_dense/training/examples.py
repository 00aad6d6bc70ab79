"""Training examples from PyTerrier's own data: topics, qrels, document texts, and hard negatives mined by any
pipeline. Every query or positive that cannot be used is counted and reported, never dropped silently."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

__all__ = ["TrainingSet", "build_training_set", "text_lookup"]

log = logging.getLogger("pyterrier_dense")


def text_lookup(texts) -> Callable[[list[str]], list]:
    """A function from docnos to texts (None where unknown), from a :class:`~pyterrier_dense.Collection` (anything
    with ``texts(docnos)``), a ``{docno: text}`` dict, or a DataFrame with ``docno`` and ``text``."""
    if isinstance(texts, pd.DataFrame):
        missing = [c for c in ("docno", "text") if c not in texts.columns]
        if missing:
            raise ValueError(f"the texts DataFrame needs columns {missing}; got {list(texts.columns)}")
        texts = dict(zip(texts["docno"].astype(str), texts["text"]))
    if isinstance(texts, dict):
        return lambda docnos: [texts.get(d) for d in docnos]
    if hasattr(texts, "texts"):
        def lookup(docnos):
            try:
                return list(texts.texts(list(docnos)))
            except (KeyError, ValueError):   # some docno unknown: find out which, one at a time
                return [_one_text(texts, d) for d in docnos]
        return lookup
    raise TypeError(f"texts must be a Collection, a {{docno: text}} dict or a DataFrame with docno and text, not a "
                    f"{type(texts).__name__}")


def _one_text(texts, docno: str):
    try:
        return texts.texts([docno])[0]
    except (KeyError, ValueError):
        return None


@dataclass
class TrainingSet:
    """What the trainer draws batches from: per query its text, judged positives (all with text) and its pool of mined
    negatives (judged positives removed), and the texts of every document involved."""
    qids: list[str]
    queries: list[str]
    positives: list[list[str]]
    negatives: list[list[str]]
    texts: dict[str, str] = field(repr=False)
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.qids)


def _report(stage: str, skipped: dict[str, int], total: int) -> None:
    for what, n in skipped.items():
        if n:
            log.warning("%s: %d of %d training queries %s", stage, n, total, what)


def build_training_set(topics: pd.DataFrame, qrels: pd.DataFrame, texts, *, negatives=None, skip_top: int = 0,
                       stage: str = "fit") -> TrainingSet:
    """Judged positives (``label`` > 0) of every topic, their texts, and -- with ``negatives``, a PyTerrier
    transformer run once on ``topics`` (``bm25 % 50``) -- each query's ranked pool of negatives, its judged
    positives removed and its first ``skip_top`` results skipped (a guard against unjudged positives).

    Queries with no judged positive, and judged positives whose text is unknown, are skipped and counted (a warning
    says how many); a training set left empty is an error."""
    for name, frame, cols in (("topics", topics, ("qid", "query")), ("qrels", qrels, ("qid", "docno", "label"))):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{stage}: the training {name} need columns {missing}; got {list(frame.columns)}")
    if skip_top < 0:
        raise ValueError(f"skip_top must be >= 0, got {skip_top!r}")
    lookup = text_lookup(texts)
    judged = qrels[qrels["label"] > 0].astype({"qid": str, "docno": str})
    pos_by_qid = judged.groupby("qid")["docno"].apply(list).to_dict()
    topics = topics.astype({"qid": str}).drop_duplicates("qid")
    wanted = sorted({d for q in topics["qid"] for d in pos_by_qid.get(q, [])})
    text_of = {d: t for d, t in zip(wanted, lookup(wanted)) if isinstance(t, str) and t.strip()}
    pools: dict[str, list[str]] = {}
    if negatives is not None:
        run = negatives.transform(topics[["qid", "query"]]) if hasattr(negatives, "transform") else None
        if run is None or "docno" not in run.columns:
            raise ValueError(f"{stage}: negatives must be a PyTerrier transformer that retrieves docnos "
                             "(e.g. bm25 % 50)")
        run = run.astype({"qid": str, "docno": str})
        if "rank" in run.columns:
            run = run.sort_values(["qid", "rank"], kind="stable")
        for qid, docs in run.groupby("qid", sort=False)["docno"]:
            positives = set(pos_by_qid.get(qid, ()))
            pools[qid] = [d for d in docs.tolist()[skip_top:] if d not in positives]
        pool_docs = sorted({d for p in pools.values() for d in p} - set(text_of))
        text_of.update({d: t for d, t in zip(pool_docs, lookup(pool_docs)) if isinstance(t, str) and t.strip()})
    out = TrainingSet([], [], [], [], text_of)
    skipped = {"have no judged positive": 0, "have judged positives none of whose texts are known": 0}
    missing_positives = 0
    for qid, query in zip(topics["qid"], topics["query"]):
        positives = pos_by_qid.get(qid)
        if not positives:
            skipped["have no judged positive"] += 1
            continue
        usable = [d for d in positives if d in text_of]
        missing_positives += len(positives) - len(usable)
        if not usable:
            skipped["have judged positives none of whose texts are known"] += 1
            continue
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"{stage}: the query of qid {qid!r} is empty")
        out.qids.append(qid)
        out.queries.append(query)
        out.positives.append(usable)
        out.negatives.append([d for d in pools.get(qid, []) if d in text_of])
    _report(stage, skipped, len(topics))
    if missing_positives:
        log.warning("%s: %d judged positives have no text in the given texts and are not used", stage,
                    missing_positives)
    skipped["judged positives without text"] = missing_positives
    out.skipped = skipped
    if not out.qids:
        raise ValueError(f"{stage}: no training query has a judged positive with a known text ({skipped})")
    return out


def sample_negatives(pool: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` negatives drawn from ``pool`` without replacement (all of it when it holds fewer)."""
    if len(pool) <= n:
        return list(pool)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]
