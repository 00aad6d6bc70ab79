"""JPQ (Zhan et al., 2021, "Jointly Optimizing Query Encoder and Product Quantization to Improve Retrieval
Performance"): keep a PQ index's document codes fixed and train the query encoder and the PQ centroids with a
ranking loss computed over the compressed index itself.

A document's score is what FAISS computes by asymmetric distance: the inner product of the (OPQ-rotated) query with
the document's reconstruction ``sum_m C_m[code_m]`` (plus the query's inner product with the document's IVF list
centroid for IVF-PQ). :class:`TrainablePQ` holds that computation in torch, with the centroids as a parameter; the
codes, the rotation and the IVF lists stay as they were built. Each training step takes a batch of training queries
and, for each, one judged positive and the top ``n_negatives`` non-positive documents of the *current* index
(JPQ's dynamic hard negatives, scored exactly over every code), and minimises InfoNCE over that query's positive, its
hard negatives and the other queries' positives.

Documents keep the vectors the original encoder gave them, so only a query tower is trained: the result has its own
query tower (a copy) beside the original document tower, and a new index that records the trained encoder's
settings, so that the trained encoder passes the retriever's encoder check and the original one is refused.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch

from ..artifacts.pq_index import PQIndex
from ..indexes.pq_store import write_pq_index
from ..indexes.storage import IndexExistsError
from ..models.bi_encoder_model import BiEncoderModel
from ..models.precision import autocast
from ..stages.bi_encoder import BiEncoder
from .batches import Batch
from .examples import TrainingSet
from .losses import info_nce
from .trainer import Trainer, check_int, training_precision

__all__ = ["train_jpq", "TrainablePQ", "JPQObjective", "jpq_loss", "SUPPORTED_STRUCTURES"]

log = logging.getLogger("pyterrier_dense")

SUPPORTED_STRUCTURES = ("PQ or IVF-PQ with 8-bit codes (nbits=8), optionally after an OPQ rotation, scored by inner "
                        "product: e.g. dense_index.compress(path, m=48, nbits=8, opq=True)")
_SCORE_BLOCK = 1 << 16   # documents scored at a time when mining negatives: (batch, block) floats per step


def _describe(index: faiss.Index) -> str:
    name = type(index).__name__
    if "FastScan" in name:
        return f"4-bit fast-scan PQ ({name})"
    if "ResidualQuantizer" in name:
        return f"residual quantiser, RQ ({name})"
    return name


def _unwrap(structure: faiss.Index, where: str) -> tuple[np.ndarray | None, np.ndarray | None, faiss.Index]:
    """The rotation matrix (``d_out x d_in``) and bias of an OPQ pre-transform (None without one) and the inner
    PQ / IVF-PQ index; a ValueError naming the kind for every structure JPQ does not train."""
    rotation = bias = None
    index = structure
    if isinstance(index, faiss.IndexPreTransform):
        transforms = [faiss.downcast_VectorTransform(index.chain.at(i)) for i in range(index.chain.size())]
        if len(transforms) != 1 or not isinstance(transforms[0], faiss.LinearTransform):
            names = [type(t).__name__ for t in transforms]
            raise ValueError(f"train_jpq: {where} applies the transforms {names} before its quantiser; supported: "
                             f"{SUPPORTED_STRUCTURES}")
        t = transforms[0]
        rotation = faiss.vector_to_array(t.A).reshape(t.d_out, t.d_in).astype(np.float32)
        bias = faiss.vector_to_array(t.b).astype(np.float32) if t.have_bias else None
        index = faiss.downcast_index(index.index)
    if type(index) not in (faiss.IndexPQ, faiss.IndexIVFPQ):
        raise ValueError(f"train_jpq: {where} is a {_describe(index)}, which JPQ cannot train; supported: "
                         f"{SUPPORTED_STRUCTURES}")
    if index.pq.nbits != 8:
        raise ValueError(f"train_jpq: {where} has {index.pq.nbits}-bit codes; supported: {SUPPORTED_STRUCTURES}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"train_jpq: {where} ranks by metric {index.metric_type} (not inner product); supported: "
                         f"{SUPPORTED_STRUCTURES}")
    return rotation, bias, index


def _ivf_codes(index: faiss.IndexIVFPQ, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Codes (in document order) and each document's list, read from the inverted lists."""
    n, size = index.ntotal, index.code_size
    codes, lists = np.zeros((n, size), np.uint8), np.full(n, -1, np.int64)
    invlists = index.invlists
    for lst in range(index.nlist):
        count = invlists.list_size(lst)
        if not count:
            continue
        ids_ptr, codes_ptr = invlists.get_ids(lst), invlists.get_codes(lst)
        try:
            ids = faiss.rev_swig_ptr(ids_ptr, count).copy()
            list_codes = faiss.rev_swig_ptr(codes_ptr, count * size).copy().reshape(count, size)
        finally:
            invlists.release_ids(lst, ids_ptr)
            invlists.release_codes(lst, codes_ptr)
        if ids.min() < 0 or ids.max() >= n:
            raise ValueError(f"train_jpq: {where} has document ids outside 0..{n - 1}; was it built by this package?")
        codes[ids], lists[ids] = list_codes, lst
    if (lists < 0).any():
        raise ValueError(f"train_jpq: {where} leaves {(lists < 0).sum()} documents out of its lists")
    return codes, lists


class TrainablePQ(torch.nn.Module):
    """A FAISS PQ / IVF-PQ structure (optionally OPQ-rotated) in torch: fixed codes, trainable ``centroids``.

    ``score_all(q)`` is what FAISS's search computes for every document (exactly; no IVF probing), by per
    sub-quantiser look-up tables; ``score(q, rows)`` gives the same scores for chosen documents with gradients to
    the queries and the centroids; ``to_faiss(structure)`` returns a copy of the structure holding these centroids.

    >>> x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    >>> index = faiss.index_factory(8, "PQ2x8", faiss.METRIC_INNER_PRODUCT); index.train(x); index.add(x)
    >>> pq = TrainablePQ.from_faiss(index)
    >>> faiss_scores, rows = index.search(x[:2], 3)
    >>> bool(np.allclose(pq.score_all(torch.from_numpy(x[:2])).gather(1, torch.from_numpy(rows)).numpy(),
    ...                  faiss_scores, atol=1e-4))
    True
    """

    def __init__(self, centroids: np.ndarray, codes: np.ndarray, *, rotation: np.ndarray | None = None,
                 bias: np.ndarray | None = None, coarse: np.ndarray | None = None, lists: np.ndarray | None = None):
        super().__init__()
        m, ksub, dsub = centroids.shape
        if codes.ndim != 2 or codes.shape[1] != m or codes.dtype != np.uint8:
            raise ValueError(f"codes must be a (documents, {m}) uint8 array, got {codes.dtype} {codes.shape}")
        if (coarse is None) != (lists is None):
            raise ValueError("coarse centroids and the documents' lists go together (IVF-PQ) or not at all")
        self.m, self.ksub, self.dsub, self.count = m, ksub, dsub, len(codes)
        self.dim = rotation.shape[1] if rotation is not None else m * dsub
        self.centroids = torch.nn.Parameter(torch.from_numpy(np.array(centroids, dtype=np.float32)))
        self.register_buffer("codes", torch.from_numpy(np.ascontiguousarray(codes)))        # (N, M)
        self.register_buffer("codes_by_m", torch.from_numpy(np.ascontiguousarray(codes.T)))  # (M, N)
        self.register_buffer("rotation", None if rotation is None else torch.from_numpy(np.array(rotation, np.float32)))
        self.register_buffer("bias", None if bias is None else torch.from_numpy(np.array(bias, np.float32)))
        self.register_buffer("coarse", None if coarse is None else torch.from_numpy(np.array(coarse, np.float32)))
        self.register_buffer("lists", None if lists is None else torch.from_numpy(np.asarray(lists, np.int64)))

    @classmethod
    def from_faiss(cls, structure: faiss.Index, where: str = "the index") -> "TrainablePQ":
        """Read the codes, centroids (and OPQ rotation, IVF lists) of a FAISS structure; ``where`` names it in
        errors. Supported: :data:`SUPPORTED_STRUCTURES`."""
        rotation, bias, index = _unwrap(structure, where)
        pq = index.pq
        centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
        if isinstance(index, faiss.IndexIVFPQ):
            codes, lists = _ivf_codes(index, where)
            coarse = faiss.downcast_index(index.quantizer).reconstruct_n(0, index.nlist) if index.by_residual else None
            return cls(centroids, codes, rotation=rotation, bias=bias, coarse=coarse,
                       lists=lists if index.by_residual else None)
        codes = faiss.vector_to_array(index.codes).reshape(index.ntotal, index.code_size)
        return cls(centroids, codes, rotation=rotation, bias=bias)

    def to_faiss(self, structure: faiss.Index) -> faiss.Index:
        """A copy of ``structure`` (the one this was read from) holding the current centroids; the original is
        left alone (a loaded structure is shared by every retriever of the process)."""
        clone = faiss.clone_index(structure)
        inner = _unwrap(clone, "the structure")[2]
        if (inner.pq.M, inner.pq.ksub, inner.pq.dsub) != tuple(self.centroids.shape) or inner.ntotal != self.count:
            raise ValueError("to_faiss needs the structure this TrainablePQ was read from")
        faiss.copy_array_to_vector(self.centroids.detach().cpu().numpy().astype(np.float32).ravel(),
                                   inner.pq.centroids)
        if inner.pq.transposed_centroids.size():   # a layout some FAISS search paths read instead
            inner.pq.sync_transposed_centroids()
        return clone

    def rotate(self, queries: torch.Tensor) -> torch.Tensor:
        """The queries as the quantiser sees them: after the OPQ rotation (if any)."""
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (batch, {self.dim}), got {tuple(queries.shape)}")
        queries = queries.to(self.centroids.dtype)
        if self.rotation is not None:
            queries = queries @ self.rotation.T
        return queries + self.bias if self.bias is not None else queries

    @torch.no_grad()
    def score_all(self, queries: torch.Tensor) -> torch.Tensor:
        """``(batch, documents)`` scores of every document, as FAISS computes them (exhaustively), without
        gradients: per query, one ``(M, 256)`` table of sub-vector inner products, summed along each document's
        codes, block-wise over the documents."""
        q = self.rotate(queries)
        tables = torch.einsum("bmd,mkd->bmk", q.reshape(len(q), self.m, self.dsub), self.centroids)
        out = torch.empty(len(q), self.count, dtype=tables.dtype, device=tables.device)
        coarse = q @ self.coarse.T if self.coarse is not None else None
        for start in range(0, self.count, _SCORE_BLOCK):
            stop = min(start + _SCORE_BLOCK, self.count)
            block = coarse[:, self.lists[start:stop]] if coarse is not None else \
                torch.zeros(len(q), stop - start, dtype=tables.dtype, device=tables.device)
            for m in range(self.m):
                block += tables[:, m, :].index_select(1, self.codes_by_m[m, start:stop].long())
            out[:, start:stop] = block
        return out

    def reconstruct(self, rows: torch.Tensor) -> torch.Tensor:
        """``(*rows.shape, dim)`` reconstructions ``sum_m C_m[code_m]`` (in the rotated space), differentiable in
        the centroids."""
        codes = self.codes[rows.reshape(-1)].long()                                   # (R, M)
        parts = self.centroids[torch.arange(self.m, device=codes.device), codes]      # (R, M, dsub)
        return parts.reshape(*rows.shape, self.m * self.dsub)

    def score(self, queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Scores of chosen documents, with gradients: ``rows`` of shape ``(R,)`` gives every query against every
        row, ``(batch, R)``; shape ``(batch, R)`` gives each query against its own rows."""
        q = self.rotate(queries)
        rows = rows.to(self.codes.device)
        recon = self.reconstruct(rows)
        if rows.dim() == 1:
            scores = q @ recon.T
            if self.coarse is not None:
                scores = scores + (q @ self.coarse.T)[:, self.lists[rows]]
            return scores
        if rows.dim() != 2 or rows.shape[0] != len(q):
            raise ValueError(f"rows must have shape (R,) or (batch={len(q)}, R), got {tuple(rows.shape)}")
        scores = torch.einsum("bd,brd->br", q, recon)
        if self.coarse is not None:
            scores = scores + (q @ self.coarse.T).gather(1, self.lists[rows])
        return scores


def jpq_loss(model: BiEncoderModel, pq: TrainablePQ, queries: list[str], positives: list[np.ndarray],
             chosen: list[int], *, n_negatives: int, temperature: float, precision: str = "fp32") -> torch.Tensor:
    """The JPQ loss of one batch: InfoNCE of each query's positive (the index row ``chosen[i]``, one of
    ``positives[i]``, the rows of its judged positives) against its top ``n_negatives`` non-positive documents of the
    current index (found exhaustively, without gradients) and the other queries' positives (those that are also its
    own judged positives masked out)."""
    with autocast(model.device, precision):
        q = model.embed(queries, "query")
    q = q.float()
    batch = len(queries)
    chosen = torch.tensor([int(c) for c in chosen], dtype=torch.long, device=pq.codes.device)
    k = min(n_negatives, pq.count - max(len(p) for p in positives))
    scores = pq.score(q, chosen)                                                   # (B, B): in-batch positives
    if k > 0:
        with torch.no_grad():
            ranked = pq.score_all(q.detach())
            for i, p in enumerate(positives):
                ranked[i, torch.as_tensor(p, device=ranked.device)] = float("-inf")
            negatives = ranked.topk(k, dim=1).indices                             # (B, k)
        scores = torch.cat([scores, pq.score(q, negatives)], dim=1)
    own = [set(p.tolist()) for p in positives]
    picked = chosen.tolist()
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    for i in range(batch):
        for j in range(batch):
            if j != i and picked[j] in own[i]:
                mask[i, j] = True
    return info_nce(scores, torch.arange(batch, device=scores.device), mask, temperature=temperature)


class JPQObjective:
    """JPQ for the shared :class:`~pyterrier_dense.training.trainer.Trainer`: :func:`jpq_loss` over a batch's
    queries and their drawn positives (docnos of ``pq``'s index, at the index rows ``rows``; ``positives`` holds
    each qid's judged rows). It trains the model's query tower and, as an AdamW group of its own (``centroid_lr``, no
    weight decay), ``pq``'s centroids, which checkpoints and the best epoch keep with the tower."""

    def __init__(self, model: BiEncoderModel, pq: TrainablePQ, positives: dict[str, np.ndarray],
                 rows: dict[str, int], *, n_negatives: int, temperature: float, centroid_lr: float,
                 precision: str = "fp32", source: str = ""):
        self.model, self.pq, self.positives, self.rows = model, pq, positives, rows
        self.n_negatives, self.temperature, self.centroid_lr = n_negatives, temperature, centroid_lr
        self.precision, self.source = precision, source

    def towers(self) -> list[torch.nn.Module]:
        return [self.model.query_model]

    def parameter_groups(self) -> list[dict]:
        return [{"params": [self.pq.centroids], "lr": self.centroid_lr, "weight_decay": 0.0}]

    def state_dict(self) -> dict:
        return {"centroids": self.pq.centroids.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.pq.centroids.copy_(state["centroids"])

    def loss(self, batch: Batch) -> torch.Tensor:
        chosen = [self.rows[batch.docnos[c]] for c in batch.positives]
        return jpq_loss(self.model, self.pq, batch.queries, [self.positives[q] for q in batch.qids], chosen,
                        n_negatives=self.n_negatives, temperature=self.temperature, precision=self.precision)

    def backward(self, batch: Batch, scale: float = 1.0) -> float:
        loss = self.loss(batch)
        (loss * scale).backward()
        return float(loss.detach())


def _training_set(topics: pd.DataFrame, qrels: pd.DataFrame, snap) -> tuple[TrainingSet, dict, dict]:
    """The training queries with their judged positives in the index (docnos), each qid's judged rows, and the row
    of each of those docnos."""
    for name, frame, cols in (("topics", topics, ("qid", "query")), ("qrels", qrels, ("qid", "docno", "label"))):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"train_jpq: the training {name} need columns {missing}; got {list(frame.columns)}")
    judged = qrels[qrels["label"] > 0].astype({"qid": str, "docno": str})
    rows = snap.docnos.rows_of(judged["docno"].to_numpy())
    judged = judged.assign(row=rows)
    found = judged[judged["row"] >= 0]
    by_qid = found.groupby("qid")["row"].apply(lambda r: np.unique(r.to_numpy())).to_dict()
    docnos_of = found.groupby("qid")["docno"].apply(lambda d: sorted(set(d))).to_dict()
    topics = topics.astype({"qid": str}).drop_duplicates("qid")
    qids, queries, positives = [], [], []
    skipped = {"no judged positive": 0, "no judged positive in the index": 0}
    judged_qids = set(judged["qid"])
    for qid, query in zip(topics["qid"], topics["query"]):
        if qid not in judged_qids:
            skipped["no judged positive"] += 1
            continue
        if qid not in by_qid:
            skipped["no judged positive in the index"] += 1
            continue
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"train_jpq: the query of qid {qid!r} is empty")
        qids.append(qid)
        queries.append(query)
        positives.append(docnos_of[qid])
    wanted = judged[judged["qid"].isin(set(topics["qid"]))]
    skipped["judged positives not in the index"] = int((wanted["row"] < 0).sum())
    for what in ("no judged positive", "no judged positive in the index"):
        if skipped[what]:
            log.warning("train_jpq: %d of %d training queries have %s", skipped[what], len(topics), what)
    if skipped["judged positives not in the index"]:
        log.warning("train_jpq: %d judged positives are not in %s and are not used",
                    skipped["judged positives not in the index"], snap.path)
    if not queries:
        raise ValueError(f"train_jpq: none of the {len(topics)} training queries has a judged positive (label > 0) "
                         f"among the {snap.count} documents of {snap.path} ({skipped}); are these the qrels of this "
                         "collection?")
    data = TrainingSet(qids, queries, positives, [[] for _ in qids], texts={}, skipped=skipped)
    return data, {q: by_qid[q] for q in qids}, dict(zip(found["docno"], found["row"].astype(int)))


def _check_args(**values) -> None:
    """JPQ's own settings; the loop's (epochs, batch_size, lr, warmup) are checked by the Trainer."""
    check_int("n_negatives", values["n_negatives"], 0)
    for name in ("centroid_lr", "temperature"):
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or \
                (name == "temperature" and v == 0):
            raise ValueError(f"{name} must be a finite number {'> 0' if name == 'temperature' else '>= 0'}, got {v!r}")


def _query_trainable_copy(model: BiEncoderModel, out_model) -> BiEncoderModel:
    """A model object sharing ``model``'s document tower and tokenizers, with a copy of its query tower of its own
    (float32, whatever ``model`` stores) to train; ``model`` is left as it was."""
    for tower in model.towers():
        if any(p.dtype != torch.float32 for p in tower.parameters()):
            raise ValueError("train_jpq: the encoder's weights are stored in reduced precision for inference; load it "
                             "with precision='fp32' to train it (training still runs under bf16 autocast where the "
                             "CPU or GPU has it)")
    trained = copy.copy(model)
    trained._unreported = {}
    trained.query_model = copy.deepcopy(model.query_model)
    trained.query_model_id = os.path.join(str(out_model), "query_model") if out_model is not None \
        else f"jpq({model.query_model_id or model.model_id})"
    return trained


def _checkpoints(out_index: str | os.PathLike) -> Path:
    """Where a JPQ run keeps its training checkpoints: beside the index it will write."""
    return Path(f"{os.fspath(out_index)}.training")


def train_jpq(encoder: BiEncoder | BiEncoderModel, pq_index: PQIndex | str | os.PathLike, train_topics: pd.DataFrame,
              train_qrels: pd.DataFrame, *, out_index: str | os.PathLike, out_model: str | os.PathLike | None = None,
              epochs: int = 2, batch_size: int = 32, lr: float = 5e-6, centroid_lr: float = 1e-4,
              n_negatives: int = 8, temperature: float = 0.05, weight_decay: float = 0.01, warmup: float = 0.1,
              precision: str = "auto", mode: str = "error", seed: int = 0, attention_dropout: float | None = 0.0,
              checkpoint_every: int = 50, verbose: bool = True) -> tuple[BiEncoder, PQIndex]:
    """JPQ: train a query encoder and the centroids of ``pq_index`` together, its document codes fixed.

    Returns ``(query encoder, PQIndex at out_index)`` to use together; the original encoder and index are left
    unchanged::

        enc = ptd.BiEncoder(minilm_path, precision="fp32")
        pq_index = dense_index.compress("scifact.pq", m=48, nbits=8, opq=True)
        jpq_enc, jpq_index = train_jpq(enc, pq_index, coll.topics("train"), coll.qrels("train"),
                                       out_index="scifact.jpq", out_model="minilm-jpq", epochs=2)
        jpq = jpq_enc >> jpq_index.retriever(num_results=1000)

    Each step embeds ``batch_size`` training queries (with gradients), scores them against every document of the
    current index (the query's look-up tables over the fixed codes), takes each query's top ``n_negatives``
    non-positive documents as its negatives, and minimises InfoNCE (``temperature``) of one judged positive against
    those and the batch's other positives. AdamW updates the query tower (``lr``, ``weight_decay``) and the PQ
    centroids (``centroid_lr``, no decay), with ``warmup`` (a fraction of the steps) of linear warm-up and a linear
    decay after. ``precision="auto"`` embeds under bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere
    (weights stay float32). Negatives are scored exhaustively: a ``(batch, documents)`` matrix a step, meant for
    collections up to a few hundred thousand documents.

    The loop is the one ``fit()`` uses (:class:`~pyterrier_dense.training.trainer.Trainer`, ``attention_dropout``
    as there). Its checkpoints go to ``<out_index>.training`` every ``checkpoint_every`` steps and after each epoch:
    a killed run called again with the same arguments resumes from there and ends with the weights an uninterrupted
    run gives; the directory is removed once training ends.

    The trained encoder has a query tower of its own (a copy of the original's, trained) beside the original
    document tower, which still encodes documents as the index's codes were made. The new index records its
    settings, whose fingerprint digests both towers: the retriever accepts the trained encoder and refuses the
    original one (and the original index refuses the trained one). ``out_model`` saves the trained model as a
    sentence-transformers directory with the query tower in ``query_model/``, which ``ptd.BiEncoder(out_model)``
    loads back with it.

    Supported indexes: :data:`SUPPORTED_STRUCTURES` (IVF lists and the OPQ rotation stay fixed); others (4-bit
    fast-scan, RQ) raise ValueError. ``mode`` is the write mode of ``out_index`` (``"error"`` refuses an existing
    index, ``"overwrite"`` replaces it). ``seed`` fixes the order of the queries, the positives drawn and dropout.
    The training history (loss per epoch) is in ``jpq_index.manifest["report"]["jpq"]``.
    """
    _check_args(n_negatives=n_negatives, centroid_lr=centroid_lr, temperature=temperature)
    if isinstance(encoder, BiEncoder):
        model, text_field = encoder.model, encoder.text_field
    elif isinstance(encoder, BiEncoderModel):
        model, text_field = encoder, "text"
    else:
        raise TypeError(f"train_jpq: encoder must be a ptd.BiEncoder or a BiEncoderModel, not {type(encoder).__name__}")
    pq_index = pq_index if isinstance(pq_index, PQIndex) else PQIndex(pq_index)
    if mode == "error" and PQIndex(out_index).exists():   # refused before training, not after
        raise IndexExistsError(Path(out_index), f"train_jpq: {out_index} already exists; pass mode='overwrite' to "
                               "replace it")
    snap = pq_index.snapshot()
    if model.dim != snap.dim:
        raise ValueError(f"train_jpq: the encoder gives {model.dim}-dimensional vectors, but {snap.path} holds "
                         f"{snap.dim}-dimensional ones")
    try:
        pq_index.check_encoder(model.settings(), snap)
    except ValueError as e:
        raise ValueError(f"train_jpq: the encoder is not the one {snap.path}'s documents were encoded with: {e}") \
            from None
    precision = training_precision(model.device, precision)
    structure = snap.structure()[0]
    pq = TrainablePQ.from_faiss(structure, f"{snap.path} ({snap.spec})").to(model.device)
    if pq.count != snap.count:
        raise ValueError(f"train_jpq: {snap.path}'s structure holds {pq.count} documents, its manifest {snap.count}")
    data, positives, rows = _training_set(train_topics, train_qrels, snap)
    trained = _query_trainable_copy(model, out_model)
    objective = JPQObjective(trained, pq, positives, rows, n_negatives=n_negatives, temperature=temperature,
                             centroid_lr=centroid_lr, precision=precision, source=f"{snap.path} {snap.spec}")
    trainer = Trainer(trained, objective, epochs=epochs, lr=lr, batch_size=batch_size, n_negatives=0,
                      warmup=warmup, weight_decay=weight_decay, seed=seed, attention_dropout=attention_dropout,
                      checkpoint_dir=_checkpoints(out_index), checkpoint_every=checkpoint_every, desc="JPQ",
                      verbose=verbose)
    started = time.time()
    history = trainer.train(data)
    trained.refresh_fingerprint()
    seconds = time.time() - started
    if out_model is not None:
        trained.save(out_model)
    report = {**snap.manifest["report"], "jpq": {
        "source": str(snap.path), "queries": len(data), "skipped": data.skipped, "history": history,
        "train_seconds": round(seconds, 1), "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "centroid_lr": centroid_lr, "n_negatives": n_negatives, "temperature": temperature, "precision": precision,
        "seed": seed}}
    write_pq_index(snap, out_index, pq.to_faiss(structure), encoder=trained.settings(), report=report, mode=mode)
    return BiEncoder(trained, text_field=text_field), PQIndex(out_index)
