"""``fit()`` of the model stages: the training set (mined negatives, teacher scores), the family's objective, the
shared loop, validation, and the trained model refreshed and saved."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .examples import build_training_set
from .interpolation import blend_into, check_weight, snapshot
from .self_negatives import SelfNegatives
from .objectives import BiEncoderObjective, CrossEncoderObjective
from .teacher import teacher_scores
from .trainer import Trainer, training_precision
from .validation import rerank_validation

__all__ = ["fit_model", "OBJECTIVES"]

OBJECTIVES = {"bi_encoder": BiEncoderObjective, "cross_encoder": CrossEncoderObjective}
_TRAINER_ARGS = ("epochs", "lr", "batch_size", "n_negatives", "accumulation", "warmup", "weight_decay", "seed",
                 "patience", "checkpoint_every", "gradient_checkpointing", "attention_dropout", "verbose")


def fit_model(model, family: str, train_topics: pd.DataFrame, train_qrels: pd.DataFrame,
              valid_topics: pd.DataFrame | None = None, valid_qrels: pd.DataFrame | None = None, *, texts,
              negatives=None, skip_top: int = 0, teacher=None, teacher_cache=None, valid_scorer=None,
              valid_metric: str = "nDCG@10", out: str | os.PathLike | None = None, precision: str = "auto",
              interpolate: float = 1.0, **args) -> dict:
    """Train ``model`` in place with the ``family``'s objective; returns the training report.

    ``args`` are the trainer's (:class:`~pyterrier_dense.training.trainer.Trainer`) and the objective's
    (:mod:`~pyterrier_dense.training.objectives`). With ``out``, checkpoints go to ``out/.trainer`` while training
    (a killed run given the same ``out`` resumes) and the best weights are saved to ``out`` at the end.
    ``interpolate`` below 1 blends the trained weights with the starting ones at the end (WiSE-FT, see
    :func:`~pyterrier_dense.training.interpolate`); validation picks the best epoch before the blend."""
    if (valid_topics is None) != (valid_qrels is None):
        raise ValueError("give both valid_topics and valid_qrels, or neither")
    trainer_args = {k: args.pop(k) for k in _TRAINER_ARGS if k in args}
    # the weights the run started from, taken before any checkpoint is resumed
    start = None if check_weight(interpolate) == 1.0 else snapshot(model)
    if teacher is None and args.get("distill"):
        raise ValueError(f"distill={args['distill']!r} needs a teacher= pipeline")
    if teacher is not None:
        args.setdefault("distill", "kl")
    scores = None if teacher is None else teacher_scores(teacher, train_topics, cache_dir=teacher_cache)
    miner = None
    if isinstance(negatives, SelfNegatives):
        if family != "bi_encoder":
            raise ValueError("SelfNegatives are mined by a bi-encoder's own index; a cross-encoder takes negatives= "
                             "from a retrieval pipeline")
        both = train_topics if valid_topics is None else pd.concat([train_topics, valid_topics], ignore_index=True)
        miner, negatives = negatives, negatives.mine(model, both)   # the dev topics' run: validation candidates

        def refresh_pools(step: int):
            if step % miner.every:
                return None
            new = build_training_set(train_topics, train_qrels, texts, negatives=miner.mine(model, train_topics),
                                     skip_top=skip_top, teacher=scores, stage="fit (self-negatives)")
            objective.texts.update(new.texts)   # the texts of documents newly mined
            return new
    data = build_training_set(train_topics, train_qrels, texts, negatives=negatives, skip_top=skip_top, teacher=scores)
    if family == "cross_encoder" and not any(data.negatives):
        raise ValueError("a cross-encoder learns from each query's hard negatives, and no training query has one: "
                         "give negatives= (e.g. bm25 % 100) or lower skip_top")
    valid, validate = None, None
    candidates = negatives if negatives is not None else teacher   # (a mined run DataFrame for self-negatives)
    if valid_topics is not None and candidates is not None and valid_scorer is not None:
        validate = rerank_validation(valid_scorer, candidates, valid_topics, valid_qrels, texts, metric=valid_metric)
    elif valid_topics is not None:
        valid_scores = None if teacher is None else teacher_scores(teacher, valid_topics, cache_dir=teacher_cache,
                                                                   stage="fit (validation)")
        valid = build_training_set(valid_topics, valid_qrels, texts, negatives=negatives, skip_top=skip_top,
                                   teacher=valid_scores, stage="fit (validation)")
    precision = training_precision(model.device, precision)
    all_texts = data.texts if valid is None else {**valid.texts, **data.texts}
    objective = OBJECTIVES[family](model, precision=precision, texts=all_texts, **args)
    checkpoint = None if out is None else Path(out) / ".trainer"
    trainer = Trainer(model, objective, checkpoint_dir=checkpoint, **trainer_args)
    history = trainer.train(data, valid, validate, refresh=None if miner is None else refresh_pools)
    if start is not None:
        blend_into(model, start, interpolate, keep=getattr(model, "new_parameters", ()))   # refreshes the fingerprint
    else:
        model.refresh_fingerprint()
    report = {"queries": len(data), "skipped": data.skipped, "epochs": history, "precision": precision,
              "resumed_from_batch": trainer.resumed_from, "fingerprint": model.fingerprint}
    if start is not None:
        report["interpolated"] = interpolate
    if miner is not None:
        report["self_negative_refreshes"] = miner.refreshes
    if out is not None:
        report["saved"] = model.save(out)
    return report
