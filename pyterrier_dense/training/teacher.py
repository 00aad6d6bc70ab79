"""Teacher scores for distillation: any PyTerrier pipeline run once on the training topics, its (qid, docno, score)
rows cached on disk under a key made of the teacher's repr and the topics, so a second fit (or a resumed one) never
runs the teacher again."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["teacher_scores", "default_cache_dir"]

log = logging.getLogger("pyterrier_dense")


def default_cache_dir() -> Path:
    """``$PYTERRIER_DENSE_CACHE/teacher`` or ``~/.cache/pyterrier_dense/teacher``."""
    root = os.environ.get("PYTERRIER_DENSE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pyterrier_dense")
    return Path(root) / "teacher"


def _key(teacher, topics: pd.DataFrame) -> str:
    h = hashlib.sha256(repr(teacher).encode())
    for qid, query in zip(topics["qid"], topics["query"]):
        h.update(f"\0{qid}\t{query}".encode())
    return h.hexdigest()[:24]


def _check(run, who: str, stage: str) -> pd.DataFrame:
    if not isinstance(run, pd.DataFrame) or not {"qid", "docno", "score"} <= set(run.columns):
        cols = list(run.columns) if isinstance(run, pd.DataFrame) else type(run).__name__
        raise ValueError(f"{stage}: {who} must give qid, docno and score columns (a retrieval or re-ranking "
                         f"pipeline such as bm25 % 100 >> cross_encoder, or its run); it gave {cols}")
    run = run[["qid", "docno", "score"]].astype({"qid": str, "docno": str})
    scores = pd.to_numeric(run["score"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(scores)
    if bad.any():
        row = run.iloc[int(np.argmax(bad))]
        raise ValueError(f"{stage}: {who} gave {int(bad.sum())} non-finite scores, e.g. "
                         f"{row['score']!r} for qid {row['qid']!r}, docno {row['docno']!r}")
    run = run.assign(score=scores)
    dup = run.duplicated(["qid", "docno"])
    if dup.any():
        row = run[dup].iloc[0]
        raise ValueError(f"{stage}: {who} scored qid {row['qid']!r}, docno {row['docno']!r} more "
                         "than once")
    return run


def teacher_scores(teacher, topics: pd.DataFrame, *, cache_dir: str | os.PathLike | None = None,
                   stage: str = "fit") -> pd.DataFrame:
    """The teacher's (qid, docno, score) rows for ``topics`` (qid, query): read from the cache when this teacher
    (by its repr) already scored these topics, else computed by ``teacher.transform(topics)`` and cached.

    ``cache_dir=False`` disables the cache; None uses :func:`default_cache_dir`. A teacher whose repr does not
    describe it (a lambda in ``pt.apply``) shares a key with any other of the same repr: give such a teacher its own
    ``cache_dir``. A run DataFrame (qid, docno, score: scores computed beforehand) is used as it is, its rows for
    ``topics``' qids kept."""
    topics = topics[["qid", "query"]].astype({"qid": str}).drop_duplicates("qid")
    if isinstance(teacher, pd.DataFrame):   # (before the transformer test: a DataFrame has a .transform too)
        if "qid" in teacher.columns:
            teacher = teacher[teacher["qid"].astype(str).isin(set(topics["qid"]))]
        return _check(teacher, "the teacher run", stage).reset_index(drop=True)
    if not hasattr(teacher, "transform"):
        raise TypeError(f"{stage}: teacher must be a PyTerrier transformer or a run DataFrame (qid, docno, score), "
                        f"got {type(teacher).__name__}")
    path = None
    if cache_dir is not False:
        path = Path(cache_dir or default_cache_dir()) / f"scores-{_key(teacher, topics)}.parquet"
        if path.exists():
            log.info("%s: teacher scores read from %s", stage, path)
            return pd.read_parquet(path)
    run = _check(teacher.transform(topics), f"the teacher {teacher!r}", stage)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        run.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return run
