"""Training examples from PyTerrier's own data: topics, qrels, document texts, and hard negatives mined by any
pipeline. Every query or positive that cannot be used is counted and reported, never dropped silently."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

__all__ = ["TrainingSet", "build_training_set", "text_lookup", "read_triples"]

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
    teacher: list[dict[str, float]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.qids)


def _report(stage: str, skipped: dict[str, int], total: int) -> None:
    for what, n in skipped.items():
        if n:
            log.warning("%s: %d of %d training queries %s", stage, n, total, what)


def _ranked_run(negatives, topics: pd.DataFrame, stage: str) -> pd.DataFrame:
    """The negatives pipeline's run on ``topics`` (or the given run), qid/docno as str, each query's rows by rank."""
    if isinstance(negatives, pd.DataFrame):
        run = negatives
    elif hasattr(negatives, "transform"):
        run = negatives.transform(topics[["qid", "query"]])
    else:
        raise TypeError(f"{stage}: negatives must be a PyTerrier transformer that retrieves docnos (e.g. bm25 % 50) "
                        f"or a run DataFrame (qid, docno, rank or score), not a {type(negatives).__name__}")
    if not isinstance(run, pd.DataFrame) or not {"qid", "docno"} <= set(run.columns):
        raise ValueError(f"{stage}: negatives must give qid and docno columns (e.g. bm25 % 50)")
    run = run.astype({"qid": str, "docno": str})
    if "rank" in run.columns:
        return run.sort_values(["qid", "rank"], kind="stable")
    if "score" in run.columns:
        return run.sort_values(["qid", "score"], ascending=[True, False], kind="stable")
    return run


def build_training_set(topics: pd.DataFrame, qrels: pd.DataFrame, texts, *, negatives=None, skip_top: int = 0,
                       teacher: pd.DataFrame | None = None, stage: str = "fit") -> TrainingSet:
    """Judged positives (``label`` > 0) of every topic, their texts, and -- with ``negatives``, a PyTerrier
    transformer run once on ``topics`` (``bm25 % 50``) or a run DataFrame -- each query's ranked pool of negatives,
    its judged positives removed and its first ``skip_top`` results skipped (a guard against unjudged positives).

    With ``teacher`` (a (qid, docno, score) run, see :func:`~pyterrier_dense.training.teacher.teacher_scores`), only
    pairs the teacher scored are used, and without ``negatives`` the teacher's own ranking is the pool.

    Queries with no usable positive, judged positives whose text is unknown and pairs the teacher did not score are
    skipped and counted (a warning says how many); a training set left empty is an error."""
    for name, frame, cols in (("topics", topics, ("qid", "query")), ("qrels", qrels, ("qid", "docno", "label"))):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{stage}: the training {name} need columns {missing}; got {list(frame.columns)}")
    if skip_top < 0:
        raise ValueError(f"skip_top must be >= 0, got {skip_top!r}")
    for name, frame in (("topics", topics), ("qrels", qrels)):
        if frame.empty:
            raise ValueError(f"{stage}: the training {name} are empty")
    lookup = text_lookup(texts)
    judged = qrels[qrels["label"] > 0].astype({"qid": str, "docno": str})
    pos_by_qid = judged.groupby("qid")["docno"].apply(list).to_dict()
    topics = topics.astype({"qid": str}).drop_duplicates("qid")
    wanted = sorted({d for q in topics["qid"] for d in pos_by_qid.get(q, [])})
    text_of = {d: t for d, t in zip(wanted, lookup(wanted)) if isinstance(t, str) and t.strip()}
    scored: dict[str, dict[str, float]] | None = None
    if teacher is not None:
        scored = {q: dict(zip(g["docno"], g["score"])) for q, g in teacher.groupby("qid", sort=False)}
        if negatives is None:
            negatives = teacher
    pools: dict[str, list[str]] = {}
    if negatives is not None:
        for qid, docs in _ranked_run(negatives, topics, stage).groupby("qid", sort=False)["docno"]:
            positives = set(pos_by_qid.get(qid, ()))
            pools[qid] = [d for d in docs.tolist()[skip_top:] if d not in positives]
        pool_docs = sorted({d for p in pools.values() for d in p} - set(text_of))
        text_of.update({d: t for d, t in zip(pool_docs, lookup(pool_docs)) if isinstance(t, str) and t.strip()})
    out = TrainingSet([], [], [], [], text_of, teacher=None if scored is None else [])
    skipped = {"have no judged positive": 0, "have judged positives none of whose texts are known": 0}
    if scored is not None:
        skipped["have no judged positive the teacher scored"] = 0
    missing_positives = unscored_positives = unscored_negatives = textless_negatives = 0
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
        pool = [d for d in pools.get(qid, []) if d in text_of]
        textless_negatives += len(pools.get(qid, ())) - len(pool)
        if scored is not None:
            mine = scored.get(qid, {})
            kept = [d for d in usable if d in mine]
            unscored_positives += len(usable) - len(kept)
            if not kept:
                skipped["have no judged positive the teacher scored"] += 1
                continue
            usable, before = kept, len(pool)
            pool = [d for d in pool if d in mine]
            unscored_negatives += before - len(pool)
            out.teacher.append({d: float(mine[d]) for d in usable + pool})
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"{stage}: the query of qid {qid!r} is empty")
        out.qids.append(qid)
        out.queries.append(query)
        out.positives.append(usable)
        out.negatives.append(pool)
    _report(stage, skipped, len(topics))
    for n, what in ((missing_positives, "judged positives have no text in the given texts"),
                    (textless_negatives, "mined negatives have no text in the given texts"),
                    (unscored_positives, "judged positives have no teacher score"),
                    (unscored_negatives, "mined negatives have no teacher score")):
        if n:
            log.warning("%s: %d %s and are not used", stage, n, what)
    skipped["judged positives without text"] = missing_positives
    skipped["negatives without text"] = textless_negatives
    if scored is not None:
        skipped["judged positives without teacher score"] = unscored_positives
        skipped["negatives without teacher score"] = unscored_negatives
    out.skipped = skipped
    if not out.qids:
        raise ValueError(f"{stage}: no training query has a judged positive with a known text"
                         f"{' and a teacher score' if scored is not None else ''} ({skipped})")
    return out


def sample_negatives(pool: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` negatives drawn from ``pool`` without replacement (all of it when it holds fewer)."""
    if len(pool) <= n:
        return list(pool)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]


def read_triples(path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A triples file -- JSON lines ``{"qid", "query", "pos": [docno, ...], "neg": [docno, ...]}`` -- as what
    ``fit`` takes: ``(topics, qrels, negatives)``, the negatives a run in the file's order::

        topics, qrels, negatives = read_triples("train_triples.train.bm25negs.jsonl")
        enc.fit(topics, qrels, texts=collection, negatives=negatives, n_negatives=4)

    Lines of the same qid (one line per (query, positive, negative) triple, as MS MARCO's) are merged: its
    positives and negatives each once, the negatives in the order they first appear. A line that is not such an
    object, or a qid given two query texts, is an error naming the line."""
    topics, qrels, negs = {}, {}, {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid, query, pos, neg = str(row["qid"]), row["query"], row["pos"], row.get("neg", [])
                if not isinstance(pos, list) or not isinstance(neg, list):
                    raise TypeError("pos and neg must be lists of docnos")
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}, line {n}: not a triples record with qid, query, pos and neg ({e})") from None
            if topics.setdefault(qid, query) != query:
                raise ValueError(f"{path}, line {n}: qid {qid!r} has the query {query!r} here and "
                                 f"{topics[qid]!r} on an earlier line")
            qrels.setdefault(qid, {}).update(dict.fromkeys(map(str, pos)))
            negs.setdefault(qid, {}).update(dict.fromkeys(map(str, neg)))
    if not topics:
        raise ValueError(f"{path}: no triples records")
    return (pd.DataFrame(list(topics.items()), columns=["qid", "query"]),
            pd.DataFrame([(q, d, 1) for q, ds in qrels.items() for d in ds], columns=["qid", "docno", "label"]),
            pd.DataFrame([(q, d, r) for q, ds in negs.items() for r, d in enumerate(ds)],
                         columns=["qid", "docno", "rank"]))
