"""PyTerrier stages: thin transformers that validate columns, call a model or an index, and build frames.

``BiEncoder`` and ``ColBERT`` load torch, so it is imported lazily: index stages work in a process that never loads a model.
"""
from .colbert_indexer import ColBERTIndexer
from .colbert_retriever import ColBERTRetriever, ColBERTScorer
from .dense_indexer import DenseIndexer
from .dense_retriever import DenseRetriever
from .dense_scorer import DenseScorer
from .fusion import RRFusion, ScoreFusion
from .text_loader import TextLoader

__all__ = ["BiEncoder", "ColBERT", "ColBERTIndexer", "ColBERTRetriever", "ColBERTScorer", "DenseIndexer", "DenseRetriever", "DenseScorer", "ScoreFusion", "RRFusion", "TextLoader"]


def __getattr__(name):
    if name == "BiEncoder":
        from .bi_encoder import BiEncoder
        return BiEncoder
    if name == "ColBERT":
        from .colbert import ColBERT
        return ColBERT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
