"""Indexes: storage and search (numpy + FAISS). Nothing here imports torch."""
from .dense_index import DenseIndex, DenseIndexWriter
from .exact_search import exact_top_k
from .storage import CorruptIndexError, IndexBuild

__all__ = ["DenseIndex", "DenseIndexWriter", "exact_top_k", "IndexBuild", "CorruptIndexError"]
