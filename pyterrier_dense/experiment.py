"""The main job: BM25, dense retrieval, BM25 re-ranked by dense scores, and their hybrid, in one pt.Experiment."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pyterrier as pt

from .collection import Collection
from .artifacts.dense_index import DenseIndex
from .models.default_model import DEFAULT_MODEL, resolve_model
from .stages.fusion import ScoreFusion

__all__ = ["DEFAULT_MODEL", "resolve_model", "build_systems", "run_experiment", "MEASURES"]

MEASURES = [pt.measures.nDCG @ 10, pt.measures.R @ 100, pt.measures.AP]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.rstrip("/").split("/")[-1] if os.path.isdir(text) else text)


def build_systems(collection: Collection, model: str = DEFAULT_MODEL, index_dir: str | os.PathLike = "indexes",
                  num_results: int = 1000) -> dict[str, pt.Transformer]:
    """Build (or reuse, from ``index_dir``) a PISA BM25 index and a dense index; return the four systems."""
    try:
        import pyterrier_pisa
    except ImportError:
        raise ImportError("the experiment's BM25 needs pyterrier-pisa: pip install 'pyterrier-dense[pisa]'") from None
    from .stages.bi_encoder import BiEncoder
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    pisa = pyterrier_pisa.PisaIndex(str(index_dir / f"{collection.name}.pisa"), text_field="text")
    if not pisa.built():
        pisa.index(collection.corpus_iter())
    bm25 = pisa.bm25(num_results=num_results)
    enc = BiEncoder(resolve_model(model))
    index = DenseIndex(index_dir / f"{collection.name}.{_slug(model)}.dense")
    if not index.exists():
        (enc >> index.indexer()).index(collection.corpus_iter())
    dense = enc >> index.retriever(num_results=num_results)
    return {
        "bm25": bm25,
        "dense": dense,
        "bm25_dense_rerank": bm25 >> enc >> index.scorer(),
        "hybrid": ScoreFusion(bm25, dense, norm="minmax", num_results=num_results),
    }


def run_experiment(collection: Collection, model: str = DEFAULT_MODEL, split: str | None = "test",
                   index_dir: str | os.PathLike = "indexes") -> tuple[pd.DataFrame, dict]:
    """Run the four systems on ``split``; returns the pt.Experiment table (significance vs BM25) and a JSON-able
    ``{"systems": {name: {"nDCG@10": ..., "R@100": ..., "AP": ...}}}``.

    The split's topics and qrels are read first, so a missing or empty split fails before any index is built."""
    topics, qrels = collection.topics(split), collection.qrels(split)
    if not len(topics) or not len(qrels):
        raise ValueError(f"{collection.source} has no {'queries' if not len(topics) else 'qrels'} for split {split!r}")
    systems = build_systems(collection, model, index_dir)
    table = pt.Experiment(list(systems.values()), topics, qrels, MEASURES,
                          names=list(systems), baseline=0, correction="holm")
    measures = [str(m) for m in MEASURES]
    summary = {"collection": collection.source, "model": model, "split": split,
               "systems": {row["name"]: {m: float(row[m]) for m in measures} for _, row in table.iterrows()}}
    return table, summary
