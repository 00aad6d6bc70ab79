"""Encoding on Ray: the documents' representations computed by a pool of Ray actors (one model each, on this machine
or a cluster), written by one of our indexers in input order, so the index equals a single-process build and an
interrupted build resumes.

The driver reads the documents a window at a time (``window`` documents, or a Ray Dataset's batches, read on the
cluster), drops those an interrupted build being resumed already holds
(:func:`~pyterrier_dense.stages.resume.skip_resumed`, before anything is encoded), and hands the rest in batches to
the actors, which stay up for the whole build (a model loads once per actor). Results come back in input order and go
to the indexer, which keeps completed shards as usual (:mod:`~pyterrier_dense.indexes.shards`). Ray restarts an
actor that dies and runs its batch again; a batch's records reach the indexer once, in order, so nothing is
duplicated.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import pandas as pd
import pyterrier as pt

from .columns import ENCODER_ATTR, ENCODERS_ATTR
from .progress import log
from .resume import skip_resumed

__all__ = ["encode"]

WINDOW = 50_000   # documents the driver holds at a time
STAMPS = (ENCODER_ATTR, ENCODERS_ATTR)   # the encoders' settings each record carries


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ImportError("encoding on Ray needs Ray Data: pip install 'pyterrier-dense[ray]'") from e
    return ray


class _EncodeBatch:
    """One Ray actor: loads the encoder once (a stage shipped to it, or a factory called on its node, which picks
    that node's device and precision) and encodes batches of documents into records."""

    def __init__(self, encoder, threads: int | None, keep: tuple | None):
        if threads:
            import torch
            torch.set_num_threads(threads)
        self.stage = encoder() if _is_factory(encoder) else encoder
        self.keep = keep

    def encode(self, docs: list[dict]) -> list[dict]:
        # the indexing path of our encoders: records in, records out with the encoder's settings, truncations
        # counted rather than reported per batch
        rows = self.stage.transform_iter(docs)
        if self.keep is None:
            return list(rows)
        return [{k: v for k, v in r.items() if k in self.keep or k in STAMPS} for r in rows]

    def chunk(self) -> int:
        """The encoder's length-sorting window (documents it tokenises and sorts together)."""
        return int(getattr(self.stage, "batch_size", 0) or 1024)

    def truncations(self) -> list[str]:
        """The truncation warnings this actor's encoder deferred, as text (for the driver to log once)."""
        import logging
        from ..models.encoder_base import report_pending_truncation
        messages = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: messages.append(record.getMessage())
        logger = logging.getLogger("pyterrier_dense")
        logger.addHandler(handler)
        try:
            report_pending_truncation()
        finally:
            logger.removeHandler(handler)
        return messages


def _is_factory(encoder) -> bool:
    return callable(encoder) and not isinstance(encoder, pt.Transformer)


def encode(docs, encoder, indexer, *, actors: int = 2, cpus_per_actor: float | None = None,
           gpus_per_actor: float = 0, batch_size: int | None = None, window: int = WINDOW, address: str | None = None):
    """Encode ``docs`` on a pool of Ray actors and write them with ``indexer``; returns what ``indexer.index``
    returns (the index). The same index as ``(encoder >> indexer).index(docs)``: the same docnos, and in fp32 the
    same vectors bit for bit where the actors' batches are the encoder's whole sorting windows (the default, when a
    window of documents has enough of them for every actor; else within float rounding, 1e-7). Resumable the same
    way: a build interrupted (Ctrl-C, a crash, the driver killed) and run again with
    the same documents and indexer options encodes only what comes after its last completed shard::

        import pyterrier_dense as ptd
        from pyterrier_dense.ray import encode
        index = ptd.DenseIndex("msmarco.dense")
        encode(coll.corpus_iter(), lambda: ptd.BiEncoder("sentence-transformers/all-MiniLM-L6-v2"),
               index.indexer(shard_size=100_000), actors=8, gpus_per_actor=1, address="auto")

    ``docs``: an iterable of ``{"docno", "text", ...}`` dicts (``Collection.corpus_iter()``), a DataFrame, or a
    ``ray.data.Dataset`` (read on the cluster, e.g. ``ray.data.read_parquet``; streamed to the driver in order).
    ``encoder``: a document encoder stage (``ptd.BiEncoder``, ``ptd.ColBERT``, ``ptd.Splade`` or their
    ``doc_encoder()``; shipped to each actor), or a function of no arguments that builds one in each actor (the model
    then loads on that node, on its GPU where it has one). ``indexer``: any of our indexers
    (``DenseIndex/ColBERTIndex/SparseIndex/QdrantIndex(...).indexer(...)``). ``actors`` models run at once, each with
    ``cpus_per_actor`` CPUs (default: this machine's CPUs shared out) and ``gpus_per_actor`` GPUs; ``batch_size``
    documents go to an actor at a time (default: the encoder's length-sorting window, as in a single-process build,
    smaller where a window of documents would otherwise leave an actor idle). ``address``: a running Ray cluster (``"auto"``, ``"ray://head:10001"``); by
    default a Ray already initialised in this process, or a local one started here.
    """
    ray = _ray()
    for name, value, low in (("actors", actors, 1), ("batch_size", batch_size, 1), ("window", window, 1)):
        if name == "batch_size" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not (isinstance(encoder, pt.Transformer) or callable(encoder)):
        raise TypeError(f"encoder must be a document encoder stage or a function that builds one, not "
                        f"{type(encoder).__name__}")
    if not isinstance(indexer, pt.Indexer):
        raise TypeError(f"indexer must be an indexer stage (index.indexer()), not {type(indexer).__name__}")
    if not ray.is_initialized():
        ray.init(address=address, logging_level="WARNING", include_dashboard=False, log_to_driver=False)
    elif address is not None:
        raise ValueError(f"Ray is already initialised in this process; not connecting to {address!r}")
    if cpus_per_actor is None:
        cpus_per_actor = max(1.0, float(int(ray.available_resources().get("CPU", os.cpu_count() or 1)) // actors))
    keep = ("docno", *indexer.VALUES, *indexer.EXTRA) if hasattr(indexer, "VALUES") else None
    actor = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor, max_restarts=-1,
                       max_task_retries=-1)(_EncodeBatch)
    shipped = encoder if _is_factory(encoder) else ray.put(encoder)   # one copy in the object store for all actors
    pool = [actor.remote(shipped, max(1, int(cpus_per_actor)), keep) for _ in range(actors)]
    try:
        chunk = ray.get(pool[0].chunk.remote())
        if batch_size is None and window > chunk:   # windows of whole sorting windows: batches then cut the stream
            window -= window % chunk                # where a single-process build does, and encode the same
        batches = _batches(_windows(ray, docs, window), batch_size, chunk, actors)
        records, total = _encoded(ray, batches, pool), _size(ray, docs)
        index = indexer.index(records if total is None else _Sized(records, total))
        for i, messages in enumerate(ray.get([a.truncations.remote() for a in pool])):
            for message in messages:
                log.warning("Ray actor %d: %s", i, message)
        return index
    finally:
        for a in pool:
            ray.kill(a)


class _Sized:
    """The encoded records as the indexer pulls them, with the documents' count for its progress bar."""

    def __init__(self, records: Iterator[dict], total: int):
        self._records, self._total = records, total

    def __iter__(self):
        return self._records

    def __len__(self):
        return self._total


def _size(ray, docs) -> int | None:
    if isinstance(docs, ray.data.Dataset):
        return None   # counting a Ray Dataset reads it
    try:
        return len(docs)
    except TypeError:
        return None


def _windows(ray, docs, window: int) -> Iterator[list[dict]]:
    """The documents as lists of dicts, ``window`` at a time, in order."""
    if isinstance(docs, ray.data.Dataset):
        for batch in docs.iter_batches(batch_size=window, batch_format="pandas"):
            yield batch.to_dict(orient="records")
        return
    if isinstance(docs, pd.DataFrame):
        for start in range(0, len(docs), window):
            yield docs.iloc[start:start + window].to_dict(orient="records")
        return
    if hasattr(docs, "corpus_iter") and not isinstance(docs, Iterable):
        docs = docs.corpus_iter()
    chunk = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise TypeError(f"document {i} is a {type(doc).__name__}; encode() takes dicts with docno and text, a "
                            "DataFrame or a Ray Dataset")
        chunk.append(doc)
        if len(chunk) == window:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_MARK = object()   # who skips resumed documents (skip_resumed: only the first stage that asks does)
QUEUED = 2         # batches queued on each actor, so it starts the next while the driver writes the last


def _batches(windows: Iterator[list[dict]], batch_size: int | None, chunk: int, actors: int) -> Iterator[list[dict]]:
    """Each window's documents (resumed documents dropped first) cut into batches for the actors: ``batch_size``,
    or by default the encoder's length-sorting window, made smaller where that leaves an actor without work."""
    for docs in windows:
        docs = skip_resumed(docs, _MARK)
        size = batch_size or max(1, min(chunk, -(-len(docs) // (actors * QUEUED))))
        for i in range(0, len(docs), size):
            yield docs[i:i + size]


def _encoded(ray, batches: Iterator[list[dict]], pool: list) -> Iterator[dict]:
    """The batches encoded on the actors, yielded in input order. Each actor has up to ``QUEUED`` batches queued
    and gets the next as soon as one of its own finishes; finished batches wait for those before them (at most a
    few per actor, so memory stays bounded)."""
    queued = {i: 0 for i in range(len(pool))}
    running: dict = {}                     # ObjectRef -> (batch number, actor)
    done: dict[int, list[dict]] = {}
    submitted = emitted = 0
    limit = len(pool) * QUEUED * 2         # batches in flight or finished but not yet yielded
    batches = iter(batches)
    exhausted = False
    while True:
        while not exhausted and submitted - emitted < limit:
            actor = min(queued, key=queued.get)
            if queued[actor] >= QUEUED:
                break
            batch = next(batches, None)
            if batch is None:
                exhausted = True
                break
            running[pool[actor].encode.remote(batch)] = (submitted, actor)
            queued[actor] += 1
            submitted += 1
        if emitted in done:
            rows = done.pop(emitted)
            emitted += 1
            yield from rows
            continue
        if not running:
            return
        ready, _ = ray.wait(list(running), num_returns=1)
        number, actor = running.pop(ready[0])
        queued[actor] -= 1
        try:
            done[number] = ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:   # the encoder's own error (bad input names its row), not Ray's
            raise (e.cause if isinstance(e.cause, Exception) else e) from None
