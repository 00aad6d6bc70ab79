"""CrossEncoder: the PyTerrier re-ranking stage around a cross-encoder (query + text in, score and rank out)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyterrier as pt

from ..models.cross_encoder_model import CrossEncoderModel
from .bi_encoder import _loading_bars
from .columns import require_columns, texts_of
from .progress import show_progress
from .ranking import sort_and_rank

__all__ = ["CrossEncoder"]

_TEXT_HINT = ("Load document texts first, e.g. bm25 % 100 >> collection.text_loader() >> cross_encoder, "
              "or bm25 % 100 >> pt.text.get_text(index, 'text') >> cross_encoder")


class CrossEncoder(pt.Transformer):
    """Re-ranks a result frame by scoring each (query, document text) pair with a cross-encoder.

    Takes ``qid``, ``query``, ``docno`` and the text column (``text_field``), keeps every other column, and sets
    ``score`` and ``rank`` (each query's rows sorted by score, best first). All rows of all queries are scored in
    one call, so the pairs of many queries share length-sorted batches. Example::

        import pyterrier as pt, pyterrier_dense as ptd
        collection = ptd.Collection("../shared/data/scifact")
        rerank = bm25 % 100 >> collection.text_loader() >> ptd.CrossEncoder("cross-encoder/ms-marco-MiniLM-L-6-v2")
        pt.Experiment([bm25, rerank], collection.topics(), collection.qrels(), ["nDCG@10"])

    Arguments after ``model`` (a name, a local path or a :class:`~pyterrier_dense.models.CrossEncoderModel`) go to
    :class:`~pyterrier_dense.models.CrossEncoderModel` (activation, label, max_length, batch_size, device,
    precision, verbose).
    """

    def __init__(self, model, *, text_field: str = "text", **model_args):
        if isinstance(model, CrossEncoderModel):
            if model_args:
                raise TypeError(f"model arguments {sorted(model_args)} cannot be applied to an already loaded "
                                "CrossEncoderModel; pass them when making it")
            self.model = model
        elif isinstance(model, str) or hasattr(model, "__fspath__"):
            with _loading_bars(show_progress(model_args.get("verbose", True))):
                self.model = CrossEncoderModel(str(model), **model_args)
        else:
            raise TypeError(f"model must be a model name, a local path or a CrossEncoderModel, "
                            f"got {type(model).__name__}")
        self.text_field = text_field

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        hint = _TEXT_HINT if self.text_field not in inp.columns else ""
        require_columns(inp, ["qid", "query", "docno", self.text_field], "CrossEncoder", hint)
        out = inp.drop(columns=[c for c in ("score", "rank") if c in inp.columns])
        if not len(inp):
            return out.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        queries = texts_of(inp, "query", ("qid",), "CrossEncoder")
        texts = texts_of(inp, self.text_field, ("qid", "docno"), "CrossEncoder")
        scores = self.model.score(list(zip(queries, texts)), progress=None if show_progress() else False)
        return sort_and_rank(out.assign(score=scores.astype(np.float64)))

    def fit(self, train_topics: pd.DataFrame, train_qrels: pd.DataFrame, valid_topics: pd.DataFrame | None = None,
            valid_qrels: pd.DataFrame | None = None, *, texts, negatives=None, n_negatives: int = 7,
            skip_top: int = 0, teacher=None, epochs: int = 1, batch_size: int = 16, lr: float = 2e-5, seed: int = 0,
            out=None, **train_args) -> "CrossEncoder":
        """Fine-tune the cross-encoder in place (PyTerrier's Estimator interface) and return this stage.

        Each query's positive and ``n_negatives`` hard negatives from ``negatives`` (a pipeline such as
        ``bm25 % 100``, or a run DataFrame) are scored together, and the loss is the cross-entropy of the positive
        among them (Localized Contrastive Estimation). ``teacher`` adds distillation from its scores
        (``distill="kl"`` by default, or ``"margin_mse"``; ``teacher_temperature``, ``label_weight``). Validation,
        checkpoints and resuming, ``accumulation``, ``chunk_size`` (queries a forward pass), ``precision``,
        ``attention_dropout`` and ``interpolate`` (a new head keeps its trained weights) are as in
        :meth:`~pyterrier_dense.BiEncoder.fit`; ``out`` saves a Hugging Face directory that this class and
        sentence-transformers' ``CrossEncoder`` load. To start from a plain encoder, load it with ``new_head=True``::

            ce = ptd.CrossEncoder("sentence-transformers/all-MiniLM-L6-v2", new_head=True, precision="fp32")
            ce.fit(coll.topics("train"), coll.qrels("train"), texts=coll, negatives=bm25 % 100, epochs=2,
                   out="minilm-ce-scifact")
            rerank = bm25 % 100 >> coll.text_loader() >> ce
        """
        from ..training import fit_model
        self.last_fit = fit_model(self.model, "cross_encoder", train_topics, train_qrels, valid_topics, valid_qrels,
                                  texts=texts, negatives=negatives, skip_top=skip_top, teacher=teacher, out=out,
                                  valid_scorer=self, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                  n_negatives=n_negatives, verbose=self.model.verbose, **train_args)
        return self

    def transform_inputs(self):
        return [["qid", "query", "docno", self.text_field]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        return [c for c in input_columns if c not in ("score", "rank")] + ["score", "rank"]

    def __eq__(self, other) -> bool:
        return isinstance(other, CrossEncoder) and other.model is self.model and other.text_field == self.text_field

    def __hash__(self) -> int:
        return hash((id(self.model), self.text_field))

    def __repr__(self) -> str:
        return f"CrossEncoder({self.model.model_id!r})"
