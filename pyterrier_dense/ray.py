"""Encoding on Ray (``pip install 'pyterrier-dense[ray]'``): :func:`encode` runs a document encoder on a pool of
Ray actors, on this machine or a cluster, and writes one of our indexes (see
:mod:`pyterrier_dense.stages.ray_encoding`)::

    from pyterrier_dense.ray import encode
    encode(coll.corpus_iter(), ptd.BiEncoder(), ptd.DenseIndex("scifact.dense").indexer(), actors=2)
"""
from .stages.ray_encoding import encode

__all__ = ["encode"]
