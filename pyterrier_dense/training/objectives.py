"""What each family trains on: its forward over a :class:`~pyterrier_dense.training.batches.Batch` and its loss.

The shared loop (:class:`~pyterrier_dense.training.trainer.Trainer`) only calls ``backward(batch, scale)`` and, for
validation, ``loss(batch)``. A family needs the model to give ``towers()`` and a scoring forward that carries
gradients: ``embed(texts, role)`` for bi-encoders, ``pair_logits(pairs)`` for cross-encoders.
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.precision import autocast
from .batches import Batch
from .losses import info_nce, listwise_kl, margin_mse

__all__ = ["BiEncoderObjective", "CrossEncoderObjective", "DISTILL_LOSSES"]

DISTILL_LOSSES = (None, "kl", "margin_mse")


def _check(distill, teacher_temperature, weight_name: str, weight) -> None:
    if distill not in DISTILL_LOSSES:
        raise ValueError(f"distill must be one of {DISTILL_LOSSES}, got {distill!r}")
    for name, value in (("teacher_temperature", teacher_temperature), (weight_name, weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if teacher_temperature == 0:
        raise ValueError("teacher_temperature must be > 0")


def _distillation(student: torch.Tensor, batch: Batch, distill: str, teacher_temperature: float) -> torch.Tensor:
    """The distillation term over each query's group (positive and hard negatives; padding excluded)."""
    pad = torch.as_tensor(batch.groups < 0, device=student.device)
    teacher = torch.as_tensor(np.nan_to_num(batch.teacher, nan=0.0), dtype=torch.float32, device=student.device)
    if distill == "kl":
        return listwise_kl(student, teacher / teacher_temperature, 1.0, mask=pad)
    keep = ~pad[:, 1:]
    if not keep.any():
        raise ValueError("margin_mse needs at least one hard negative per batch; no query of this batch has one")
    pos_s, pos_t = student[:, :1].expand_as(student[:, 1:])[keep], teacher[:, :1].expand_as(teacher[:, 1:])[keep]
    return margin_mse(pos_s, student[:, 1:][keep], pos_t, teacher[:, 1:][keep])


class BiEncoderObjective:
    """InfoNCE over in-batch documents and hard negatives (DPR), optionally plus distillation from teacher scores.

    ``temperature`` divides the student's similarities (cosine for normalised models). ``distill="kl"`` adds the
    listwise KL divergence from the teacher's softmax (scores / ``teacher_temperature``) over each query's group
    (ColBERTv2's supervision); ``"margin_mse"`` adds Margin-MSE between the student's (similarity / temperature)
    and the teacher's (score / teacher_temperature) positive-negative margins. ``in_batch_weight`` weighs the
    InfoNCE term beside distillation (0 = distillation alone).

    ``chunk_size`` turns on the split-batch mode (GradCache, Gao et al. 2021): representations are computed without a
    graph ``chunk_size`` texts at a time (length-sorted), the loss's gradient with respect to them is taken, and each
    chunk is run again with its graph to push that gradient into the weights. Memory is bounded by the chunk, not the
    batch, and the gradient equals the plain one (dropout replays the same masks).
    """

    def __init__(self, model, *, precision: str = "fp32", texts: dict[str, str], temperature: float = 0.05,
                 distill: str | None = None, teacher_temperature: float = 1.0, in_batch_weight: float = 1.0,
                 chunk_size: int | None = None):
        _check(distill, teacher_temperature, "in_batch_weight", in_batch_weight)
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")
        self.model, self.precision, self.texts = model, precision, texts
        self.temperature, self.distill, self.teacher_temperature = temperature, distill, teacher_temperature
        self.in_batch_weight, self.chunk_size = in_batch_weight, chunk_size

    def _inputs(self, batch: Batch) -> tuple[list[str], list[str]]:
        return batch.queries, [self.texts[d] for d in batch.docnos]

    def _embed(self, texts: list[str], role: str) -> torch.Tensor:
        with autocast(self.model.device, self.precision):
            return self.model.embed(texts, role).float()

    def loss_from(self, q: torch.Tensor, d: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The loss given the batch's query and document representations."""
        scores = q @ d.T
        dev = scores.device
        loss = 0.0
        if self.distill is None or self.in_batch_weight:
            loss = info_nce(scores, torch.as_tensor(batch.positives, device=dev), torch.as_tensor(batch.mask, device=dev),
                            temperature=self.temperature)
            if self.distill is not None:
                loss = self.in_batch_weight * loss
        if self.distill is not None:
            if batch.teacher is None:
                raise ValueError("distillation needs teacher scores: give fit() a teacher")
            group = torch.as_tensor(np.maximum(batch.groups, 0), device=dev)
            student = scores.gather(1, group) / self.temperature
            loss = loss + _distillation(student, batch, self.distill, self.teacher_temperature)
        return loss

    def loss(self, batch: Batch) -> torch.Tensor:
        queries, docs = self._inputs(batch)
        return self.loss_from(self._embed(queries, "query"), self._embed(docs, "doc"), batch)

    def backward(self, batch: Batch, scale: float = 1.0) -> float:
        """Forward, loss and backward of one batch (gradients accumulate, scaled by ``scale``); returns the loss."""
        if self.chunk_size is None:
            loss = self.loss(batch)
            (loss * scale).backward()
            return float(loss.detach())
        queries, docs = self._inputs(batch)
        q_chunks, q = self._cached(queries, "query")
        d_chunks, d = self._cached(docs, "doc")
        q.requires_grad_(True)
        d.requires_grad_(True)
        loss = self.loss_from(q, d, batch)
        (loss * scale).backward()
        for chunks, reps, texts, role in ((q_chunks, q, queries, "query"), (d_chunks, d, docs, "doc")):
            for rows, rng_state in chunks:
                with torch.random.fork_rng(devices=[]):
                    torch.set_rng_state(rng_state)
                    again = self._embed([texts[i] for i in rows], role)
                again.backward(reps.grad[rows])
        return float(loss.detach())

    def _cached(self, texts: list[str], role: str) -> tuple[list, torch.Tensor]:
        """Representations of ``texts`` without a graph, computed in length-sorted chunks; each chunk's rows and the
        random state it started from (to replay its dropout)."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        chunks, parts = [], []
        for start in range(0, len(texts), self.chunk_size):
            rows = torch.as_tensor(order[start:start + self.chunk_size])
            chunks.append((rows, torch.get_rng_state()))
            with torch.no_grad():
                parts.append(self._embed([texts[i] for i in rows], role))
        reps = torch.empty((len(texts), parts[0].shape[1]), device=parts[0].device)
        for (rows, _), part in zip(chunks, parts):
            reps[rows.to(reps.device)] = part
        return chunks, reps


class CrossEncoderObjective:
    """Each query's group (positive, hard negatives) scored jointly: the cross-entropy of the positive among them
    (Localized Contrastive Estimation, Gao et al. 2021), optionally plus distillation from teacher scores
    (``distill="kl"`` or ``"margin_mse"`` on logits against score / ``teacher_temperature``); ``label_weight``
    weighs the cross-entropy beside distillation. ``chunk_size`` queries run forward and backward at a time (the
    loss is a mean over queries, so the gradient is the plain one)."""

    def __init__(self, model, *, precision: str = "fp32", texts: dict[str, str], distill: str | None = None,
                 teacher_temperature: float = 1.0, label_weight: float = 1.0, chunk_size: int | None = None):
        _check(distill, teacher_temperature, "label_weight", label_weight)
        self.model, self.precision, self.texts = model, precision, texts
        self.distill, self.teacher_temperature, self.label_weight = distill, teacher_temperature, label_weight
        self.chunk_size = chunk_size

    def loss(self, batch: Batch) -> torch.Tensor:
        rows, cols = np.nonzero(batch.groups >= 0)
        pairs = [(batch.queries[r], self.texts[batch.docnos[batch.groups[r, c]]]) for r, c in zip(rows, cols)]
        with autocast(self.model.device, self.precision):
            flat = self.model.pair_logits(pairs).float()
        dev = flat.device
        pad = torch.as_tensor(batch.groups < 0, device=dev)
        logits = torch.zeros(batch.groups.shape, device=dev).masked_scatter(~pad, flat)
        loss = 0.0
        if self.distill is None or self.label_weight:
            loss = info_nce(logits, torch.zeros(len(batch), dtype=torch.long, device=dev), pad, temperature=1.0)
            if self.distill is not None:
                loss = self.label_weight * loss
        if self.distill is not None:
            if batch.teacher is None:
                raise ValueError("distillation needs teacher scores: give fit() a teacher")
            loss = loss + _distillation(logits, batch, self.distill, self.teacher_temperature)
        return loss

    def backward(self, batch: Batch, scale: float = 1.0) -> float:
        n = len(batch)
        step = self.chunk_size or n
        total = 0.0
        for start in range(0, n, step):
            part = _rows(batch, slice(start, start + step))
            loss = self.loss(part)
            (loss * (scale * len(part) / n)).backward()
            total += float(loss.detach()) * len(part) / n
        return total


def _rows(batch: Batch, rows: slice) -> Batch:
    """The queries ``rows`` of a batch (groups keep pointing into the same document list)."""
    if rows == slice(0, len(batch)) or (rows.start == 0 and rows.stop >= len(batch)):
        return batch
    return Batch(batch.queries[rows], batch.docnos, batch.groups[rows], batch.mask[rows],
                 None if batch.teacher is None else batch.teacher[rows])
