"""User-facing indexes: PyTerrier artifacts that open storage from ``indexes/`` and hand out the stages of
``stages/`` (``indexer()``, ``retriever()``, ``scorer()``). Imports go one way: artifacts -> stages -> indexes."""
from .colbert_index import ColBERTIndex
from .dense_index import DenseIndex
from .pq_index import PQIndex
from .sparse_index import SparseIndex

__all__ = ["ColBERTIndex", "DenseIndex", "PQIndex", "SparseIndex"]
