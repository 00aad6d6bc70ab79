"""The training loop every family shares: batches of queries with one positive and sampled hard negatives each,
documents de-duplicated within a batch, AdamW with linear warm-up and decay, the family's forward under the
training precision, a progress bar with the running loss, a validation loss each epoch and the best weights kept.

A family supplies ``towers()`` (the modules to train) and ``embed(texts, role)`` (vectors that carry gradients);
the loss here is InfoNCE over in-batch documents and hard negatives (DPR). Other losses plug in the same way.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.precision import autocast, cpu_has_native_bf16
from .examples import TrainingSet, sample_negatives
from .losses import info_nce

__all__ = ["ContrastiveTrainer", "Batch", "make_batches"]

log = logging.getLogger("pyterrier_dense")


@dataclass
class Batch:
    """Queries, the distinct documents of the batch, each query's positive column and the mask of columns that are
    another judged positive of that query (never scored as its negatives)."""
    queries: list[str]
    docnos: list[str]
    positives: np.ndarray
    mask: np.ndarray


def make_batches(data: TrainingSet, batch_size: int, n_negatives: int, rng: np.random.Generator) -> list[Batch]:
    """One epoch of batches: queries shuffled, one positive drawn per query, ``n_negatives`` drawn from its pool;
    a document appears once per batch whatever the number of queries that drew it."""
    order = rng.permutation(len(data))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        column: dict[str, int] = {}
        chosen = []
        for i in rows:
            pos = data.positives[i][int(rng.integers(len(data.positives[i])))]
            chosen.append(column.setdefault(pos, len(column)))
            for d in sample_negatives(data.negatives[i], n_negatives, rng):
                column.setdefault(d, len(column))
        mask = np.zeros((len(rows), len(column)), bool)
        for r, i in enumerate(rows):
            for d in data.positives[i]:
                c = column.get(d)
                if c is not None and c != chosen[r]:
                    mask[r, c] = True
        batches.append(Batch([data.queries[i] for i in rows], list(column), np.array(chosen), mask))
    return batches


class ContrastiveTrainer:
    """Trains a family's towers with InfoNCE over in-batch documents and mined hard negatives.

    ``precision="auto"`` trains under bf16 autocast on CUDA and on CPUs with native bf16 (weights and optimiser state
    stay float32), fp32 elsewhere. ``epochs``, ``lr`` (AdamW), ``warmup`` (fraction of steps), ``temperature``,
    ``batch_size`` (queries a step), ``n_negatives`` (per query), ``seed`` (shuffling, sampling, dropout).
    """

    def __init__(self, model, *, epochs: int = 1, lr: float = 2e-5, batch_size: int = 32, n_negatives: int = 1,
                 temperature: float = 0.05, warmup: float = 0.1, weight_decay: float = 0.01, seed: int = 0,
                 precision: str = "auto", verbose: bool = True):
        for name, value, least in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("n_negatives", n_negatives, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        if not 0 <= warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {warmup!r}")
        self.model, self.epochs, self.lr, self.batch_size = model, epochs, lr, batch_size
        self.n_negatives, self.temperature, self.warmup, self.weight_decay = n_negatives, temperature, warmup, weight_decay
        self.seed, self.verbose = seed, verbose
        device = model.device
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"training precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        self.precision = precision
        for tower in model.towers():
            if any(p.dtype != torch.float32 for p in tower.parameters()):
                raise ValueError("the model's weights are stored in reduced precision for inference; load it with "
                                 "precision='fp32' to train it (training still runs under bf16 autocast where "
                                 "the CPU or GPU has it)")
        self.history: list[dict] = []

    def _parameters(self):
        seen = set()
        for tower in self.model.towers():
            for p in tower.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def _loss(self, batch: Batch, data: TrainingSet) -> torch.Tensor:
        with autocast(self.model.device, self.precision):
            q = self.model.embed(batch.queries, "query").float()
            d = self.model.embed([data.texts[x] for x in batch.docnos], "doc").float()
        scores = q @ d.T
        positives = torch.as_tensor(batch.positives, device=scores.device)
        mask = torch.as_tensor(batch.mask, device=scores.device)
        return info_nce(scores, positives, mask, temperature=self.temperature)

    def train(self, data: TrainingSet, valid: TrainingSet | None = None) -> list[dict]:
        """Train for ``epochs`` over ``data``; with ``valid``, compute its loss after each epoch and end with the
        weights of the epoch where it was lowest. Returns one dict per epoch (train and valid loss, steps)."""
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        steps_per_epoch = -(-len(data) // self.batch_size)
        total = steps_per_epoch * self.epochs
        warm = max(1, int(self.warmup * total))
        params = list(self._parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
        best, best_state = None, None
        for epoch in range(self.epochs):
            for tower in self.model.towers():
                tower.train()
            losses = []
            bar = tqdm(make_batches(data, self.batch_size, self.n_negatives, rng), desc=f"training epoch {epoch + 1}",
                       unit="batch", disable=not self.verbose)
            for batch in bar:
                loss = self._loss(batch, data)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "steps": len(losses)}
            for tower in self.model.towers():
                tower.eval()
            if valid is not None:
                record["valid_loss"] = self.evaluate(valid)
                if best is None or record["valid_loss"] < best:
                    best = record["valid_loss"]
                    best_state = [copy.deepcopy(t.state_dict()) for t in self.model.towers()]
            log.info("epoch %d: %s", epoch + 1, record)
            self.history.append(record)
        if best_state is not None:
            for tower, state in zip(self.model.towers(), best_state):
                tower.load_state_dict(state)
        return self.history

    @torch.no_grad()
    def evaluate(self, data: TrainingSet) -> float:
        """Mean InfoNCE over ``data`` in fixed batches (the same batches every epoch)."""
        rng = np.random.default_rng(self.seed + 1)
        losses = [float(self._loss(b, data)) for b in make_batches(data, self.batch_size, self.n_negatives, rng)]
        return float(np.mean(losses))
