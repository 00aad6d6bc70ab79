"""ANCE-style hard negatives (Xiong et al. 2021): the model being trained retrieves its own negatives from a dense
index of the corpus, rebuilt with the current weights every ``every`` optimiser steps."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile

import pandas as pd

from .trainer import check_int

__all__ = ["SelfNegatives"]

log = logging.getLogger("pyterrier_dense")


class SelfNegatives:
    """Negatives the bi-encoder in training mines for itself: give it as ``negatives=`` to
    :meth:`~pyterrier_dense.BiEncoder.fit`::

        enc.fit(coll.topics("train"), coll.qrels("train"), texts=coll,
                negatives=ptd.training.SelfNegatives(coll, every=200, depth=50), n_negatives=4)

    Before training and then every ``every`` optimiser steps, the corpus (a
    :class:`~pyterrier_dense.Collection`, a function returning an iterable of ``{"docno", "text"}``, or a list of
    them) is encoded with the current weights into a dense index at ``path`` (a temporary directory by default,
    removed afterwards), and each training query's top ``depth`` results become its pool (judged positives removed,
    ``skip_top`` of ``fit`` applied). The batches left in the epoch are drawn again from the new pools. A resumed run
    mines afresh with the weights it resumes from."""

    def __init__(self, corpus, *, every: int = 500, depth: int = 50, path: str | os.PathLike | None = None):
        check_int("every", every)
        check_int("depth", depth)
        self.corpus, self.every, self.depth, self.path = corpus, every, depth, path
        self.refreshes = 0

    def _docs(self):
        if hasattr(self.corpus, "corpus_iter"):
            return self.corpus.corpus_iter()
        return self.corpus() if callable(self.corpus) else self.corpus

    def mine(self, model, topics: pd.DataFrame) -> pd.DataFrame:
        """The run of ``topics`` on a dense index of the corpus encoded with ``model``'s current weights."""
        from ..artifacts.dense_index import DenseIndex
        from ..stages.bi_encoder import BiEncoder
        from ..stages.progress import quiet
        towers = model.towers()
        modes = [t.training for t in towers]
        for t in towers:
            t.eval()
        own = self.path is None
        root = tempfile.mkdtemp(prefix="self-negatives-") if own else None
        path = os.path.join(root, "corpus.dense") if own else str(self.path)
        try:
            enc = BiEncoder(model)
            index = DenseIndex(path)
            with quiet(not model.verbose):
                (enc >> index.indexer(mode="overwrite")).index(self._docs())
                run = (enc >> index.retriever(num_results=self.depth)).transform(topics[["qid", "query"]])
        finally:
            for t, mode in zip(towers, modes):
                t.train(mode)
            if own:
                shutil.rmtree(root, ignore_errors=True)
        self.refreshes += 1
        log.info("self-negatives: mined the top %d of the model's own index (refresh %d)", self.depth, self.refreshes)
        return run

    def __repr__(self) -> str:
        return f"SelfNegatives(every={self.every}, depth={self.depth})"
