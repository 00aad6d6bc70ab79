"""``fit()`` of the encoder stages: build the training set, train, refresh the model's fingerprint, save."""
from __future__ import annotations

import os

import pandas as pd

from .examples import build_training_set
from .trainer import ContrastiveTrainer

__all__ = ["fit_contrastive"]


def fit_contrastive(model, train_topics: pd.DataFrame, train_qrels: pd.DataFrame,
                    valid_topics: pd.DataFrame | None = None, valid_qrels: pd.DataFrame | None = None, *, texts,
                    negatives=None, skip_top: int = 0, out: str | os.PathLike | None = None, **trainer_args) -> dict:
    """Train ``model`` (a family with ``towers``, ``embed``, ``refresh_fingerprint`` and ``save``) in place by
    InfoNCE over in-batch documents and ``negatives`` mined by a PyTerrier pipeline; returns the training report."""
    if (valid_topics is None) != (valid_qrels is None):
        raise ValueError("give both valid_topics and valid_qrels, or neither")
    data = build_training_set(train_topics, train_qrels, texts, negatives=negatives, skip_top=skip_top)
    valid = None if valid_topics is None else build_training_set(valid_topics, valid_qrels, texts, negatives=negatives,
                                                                 skip_top=skip_top, stage="fit (validation)")
    trainer = ContrastiveTrainer(model, **trainer_args)
    history = trainer.train(data, valid)
    report = {"queries": len(data), "skipped": data.skipped, "epochs": history, "precision": trainer.precision,
              "fingerprint": model.refresh_fingerprint()}
    if out is not None:
        report["saved"] = model.save(out)
    return report
