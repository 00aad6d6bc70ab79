"""Indexes: storage and search (numpy + FAISS). Nothing here imports torch."""
from .ann_specs import HnswSpec, IvfSpec, PqSpec
from .dense_index import DenseIndex, DenseIndexWriter
from .pq_index import PQIndex
from .exact_search import exact_top_k
from .storage import CorruptIndexError, IndexBuild

__all__ = ["DenseIndex", "DenseIndexWriter", "PQIndex", "HnswSpec", "IvfSpec", "PqSpec", "exact_top_k", "IndexBuild", "CorruptIndexError"]
