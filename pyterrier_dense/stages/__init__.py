"""PyTerrier stages: thin transformers that validate columns, call a model or an index, and build frames."""
from .bi_encoder import BiEncoder
from .dense_indexer import DenseIndexer
from .dense_retriever import DenseRetriever
from .dense_scorer import DenseScorer
from .fusion import RRFusion, ScoreFusion
from .text_loader import TextLoader

__all__ = ["BiEncoder", "DenseIndexer", "DenseRetriever", "DenseScorer", "ScoreFusion", "RRFusion", "TextLoader"]
