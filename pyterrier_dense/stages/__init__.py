"""PyTerrier stages: thin transformers that validate columns, call a model or an index, and build frames.

``BiEncoder``, ``ColBERT``, ``CrossEncoder`` and ``Splade`` load torch, so it is imported lazily: index stages work in a process that never loads a model.
"""
from .colbert_indexer import ColBERTIndexer
from .colbert_retriever import ColBERTRetriever, ColBERTScorer
from .dense_indexer import DenseIndexer
from .dense_retriever import DenseRetriever
from .dense_scorer import DenseScorer
from .fusion import RRFusion, ScoreFusion
from .sparse_indexer import SparseIndexer
from .sparse_retriever import SparseRetriever, SparseScorer
from .text_loader import TextLoader

__all__ = ["BiEncoder", "ColBERT", "CrossEncoder", "Splade", "ColBERTIndexer", "ColBERTRetriever", "ColBERTScorer", "DenseIndexer", "DenseRetriever", "DenseScorer", "SparseIndexer", "SparseRetriever", "SparseScorer", "ScoreFusion", "RRFusion", "TextLoader"]


def __getattr__(name):
    if name == "BiEncoder":
        from .bi_encoder import BiEncoder
        return BiEncoder
    if name == "ColBERT":
        from .colbert import ColBERT
        return ColBERT
    if name == "CrossEncoder":
        from .cross_encoder import CrossEncoder
        return CrossEncoder
    if name == "Splade":
        from .splade import Splade
        return Splade
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
