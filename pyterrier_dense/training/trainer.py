"""The training loop every family shares: AdamW with linear warm-up and decay, gradient accumulation, the family's
objective under the training precision, a progress bar with the running loss, validation each epoch with early
stopping and the best weights kept, and checkpoints a killed run resumes from with the same final weights.

A family supplies an objective (``backward(batch, scale)`` and ``loss(batch)``, see
:mod:`~pyterrier_dense.training.objectives`) and a model with ``towers()``. An objective that trains something
else too may also give ``towers()`` (the towers it trains, when not all of the model's), ``parameter_groups()``
(further AdamW groups with their own ``lr`` and ``weight_decay``, e.g. JPQ's centroids) and ``state_dict()`` /
``load_state_dict()`` (their weights, kept with the towers' in checkpoints and as the best epoch's).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.precision import cpu_has_native_bf16
from .allocator import freed_memory_kept
from .batches import epoch_rng, make_batches
from .examples import TrainingSet

__all__ = ["Trainer", "training_precision", "check_int", "warmup_then_decay", "attention_dropouts"]

log = logging.getLogger("pyterrier_dense")

STATE_FILE = "trainer_state.pt"
VALID_STREAM = 1_000_003   # the sampler of the fixed validation batches, apart from every epoch's


def training_precision(device: torch.device, precision: str) -> str:
    """``"auto"``: bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"training precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    return precision


def check_int(name: str, value, least: int = 1) -> int:
    """``value`` if it is an int (not a bool) >= ``least``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return value


def warmup_then_decay(opt: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate rising linearly over the first ``warmup`` fraction of ``total`` steps, then falling
    linearly to zero at the last."""
    warm = max(1, int(warmup * total))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))


def _checkpointing(tower, on: bool) -> None:
    """Activation (gradient) checkpointing on or off, by the name the installed transformers gives it."""
    name = "activation_checkpointing" if hasattr(tower, "activation_checkpointing_enable") else "gradient_checkpointing"
    getattr(tower, f"{name}_{'enable' if on else 'disable'}")()


def attention_dropouts(tower) -> list[torch.nn.Dropout]:
    """The dropout layers on attention probabilities: the ``dropout`` of each ``*SelfAttention`` module (BERT,
    RoBERTa, XLM-R, ELECTRA, MPNet, DistilBERT); hidden-state dropout is elsewhere and is not among them."""
    return [m.dropout for m in tower.modules()
            if type(m).__name__.endswith("SelfAttention") and isinstance(getattr(m, "dropout", None), torch.nn.Dropout)]


class Trainer:
    """Runs ``objective`` over ``data`` for ``epochs``.

    ``batch_size`` queries a batch, ``n_negatives`` hard negatives per query, ``accumulation`` batches per optimiser
    step, ``lr`` (AdamW, ``weight_decay``), ``warmup`` (fraction of the steps), ``seed`` (batches, sampling, dropout).

    ``validate`` (a function returning a figure, higher is better, e.g. nDCG@10 of a dev split by
    ``pt.Experiment``) or, without it, the objective's loss on ``valid`` data (lower is better) is measured after
    each epoch; the weights of the best epoch are restored at the end, and with ``patience`` training stops after
    that many epochs without improvement.

    ``checkpoint_dir`` with ``checkpoint_every`` (optimiser steps) saves weights, optimiser, schedule, random states
    and progress there (atomically); a later ``train`` with the same settings and data resumes from it, and ends with
    the weights an uninterrupted run gives. ``gradient_checkpointing`` trades compute for activation memory.

    ``attention_dropout`` is the dropout on attention probabilities while training (restored after); ``None`` keeps
    the model's own (0.1 for BERT-style models). The default 0 lets PyTorch's fused attention kernel run: with
    dropout, attention falls back to the unfused path, which on a CPU takes half of a MiniLM training step (the
    README has figures). Hidden-state dropout is left as the model has it. ``desc`` names the progress bar.
    """

    def __init__(self, model, objective, *, epochs: int = 1, lr: float = 2e-5, batch_size: int = 32,
                 n_negatives: int = 1, accumulation: int = 1, warmup: float = 0.1, weight_decay: float = 0.01,
                 seed: int = 0, patience: int | None = None, checkpoint_dir: str | os.PathLike | None = None,
                 checkpoint_every: int = 50, gradient_checkpointing: bool = False,
                 attention_dropout: float | None = 0.0, desc: str = "training", verbose: bool = True):
        check_int("epochs", epochs)
        check_int("batch_size", batch_size)
        check_int("n_negatives", n_negatives, 0)
        check_int("accumulation", accumulation)
        check_int("checkpoint_every", checkpoint_every)
        if patience is not None:
            check_int("patience", patience)
        if not 0 <= warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {warmup!r}")
        if attention_dropout is not None and (isinstance(attention_dropout, bool) or not isinstance(
                attention_dropout, (int, float)) or not 0 <= attention_dropout < 1):
            raise ValueError(f"attention_dropout must be None or a number in [0, 1), got {attention_dropout!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 <= lr < float("inf"):
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        self.model, self.objective = model, objective
        for tower in self._towers():
            if any(p.dtype != torch.float32 for p in tower.parameters()):
                raise ValueError("the model's weights are stored in reduced precision for inference; load it with "
                                 "precision='fp32' to train it (training still runs under bf16 autocast where "
                                 "the CPU or GPU has it)")
        self.epochs, self.lr, self.batch_size, self.n_negatives = epochs, float(lr), batch_size, n_negatives
        self.accumulation, self.warmup, self.weight_decay, self.seed = accumulation, warmup, weight_decay, seed
        self.patience, self.checkpoint_every, self.desc, self.verbose = patience, checkpoint_every, desc, verbose
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.gradient_checkpointing, self.attention_dropout = gradient_checkpointing, attention_dropout
        self.history: list[dict] = []
        self.resumed_from: int | None = None

    # --- pieces -------------------------------------------------------------------------------------------------------

    def _towers(self) -> list[torch.nn.Module]:
        """The towers trained: the objective's choice where it makes one, else all of the model's."""
        return list(getattr(self.objective, "towers", self.model.towers)())

    def _parameters(self) -> list[torch.nn.Parameter]:
        seen, params = set(), []
        for tower in self._towers():
            for p in tower.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def _batches(self, data: TrainingSet, epoch: int) -> list:
        return make_batches(data, self.batch_size, self.n_negatives, epoch_rng(self.seed, epoch))

    def _signature(self, data: TrainingSet) -> str:
        """What a checkpoint must match to be resumed: the settings and the training data."""
        h = hashlib.sha256(json.dumps({k: repr(getattr(self, k)) for k in (
            "epochs", "lr", "batch_size", "n_negatives", "accumulation", "warmup", "weight_decay", "seed",
            "attention_dropout")}).encode())
        for qid, pos, neg in zip(data.qids, data.positives, data.negatives):
            h.update(f"\0{qid}\t{','.join(pos)}\t{','.join(neg)}".encode())
        h.update(repr([type(self.objective).__name__, getattr(self.model, "fingerprint", None)] + [
            vars(self.objective).get(k) for k in ("temperature", "distill", "teacher_temperature", "in_batch_weight",
                                                  "label_weight", "n_negatives", "centroid_lr", "source")]).encode())
        return h.hexdigest()

    def _weights(self) -> dict:
        """A copy of what is trained: the towers' weights and the objective's own, if it has any."""
        own = getattr(self.objective, "state_dict", None)
        return {"towers": [copy.deepcopy(t.state_dict()) for t in self._towers()],
                "objective": None if own is None else copy.deepcopy(own())}

    def _load_weights(self, weights: dict) -> None:
        for tower, state in zip(self._towers(), weights["towers"]):
            tower.load_state_dict(state)
        if weights["objective"] is not None:
            self.objective.load_state_dict(weights["objective"])

    def _save(self, state: dict) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_dir / f"{STATE_FILE}.tmp-{os.getpid()}"
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_dir / STATE_FILE)

    def _resume(self, signature: str) -> dict | None:
        if self.checkpoint_dir is None or not (self.checkpoint_dir / STATE_FILE).exists():
            return None
        state = torch.load(self.checkpoint_dir / STATE_FILE, weights_only=False)
        if state.get("signature") != signature:
            raise ValueError(f"{self.checkpoint_dir} holds the checkpoint of a training run with other settings or "
                             "data; remove it, or train into another directory")
        return state

    # --- the loop -----------------------------------------------------------------------------------------------------

    def train(self, data: TrainingSet, valid: TrainingSet | None = None,
              validate: Callable[[], float] | None = None,
              refresh: Callable[[int], TrainingSet | None] | None = None) -> list[dict]:
        """Train for ``epochs``; returns one dict per epoch (train loss, steps, validation figure).

        ``refresh(step)``, called after every optimiser step, may return new training data (the same queries with
        new pools of negatives, e.g. mined by the model itself): the rest of the epoch is drawn from it."""
        signature = self._signature(data)
        per_epoch = -(-len(data) // self.batch_size)
        steps_per_epoch = -(-per_epoch // self.accumulation)
        params = self._parameters()   # (clipped together; the objective's own groups are not)
        groups = [{"params": params}] + list(getattr(self.objective, "parameter_groups", list)())
        opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        sched = warmup_then_decay(opt, steps_per_epoch * self.epochs, self.warmup)
        torch.manual_seed(self.seed)
        progress = {"epoch": 0, "batch": 0, "losses": [], "best": None, "best_state": None, "stale": 0}
        state = self._resume(signature)
        if state is not None:
            self._load_weights(state["weights"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            progress, self.history = state["progress"], state["history"]
            self.resumed_from = progress["epoch"] * per_epoch + progress["batch"]
            log.info("resuming training from epoch %d, batch %d (%s)", progress["epoch"] + 1, progress["batch"],
                     self.checkpoint_dir)
        if self.gradient_checkpointing:
            for tower in self._towers():
                _checkpointing(tower, True)
        dropouts = [] if self.attention_dropout is None else \
            [d for tower in self._towers() for d in attention_dropouts(tower)]
        kept = [d.p for d in dropouts]
        for d in dropouts:
            d.p = float(self.attention_dropout)
        try:
            with freed_memory_kept() if self.model.device.type == "cpu" else contextlib.nullcontext():
                if state is not None and refresh is not None:   # pools mined with the weights resumed from
                    data = refresh(0) or data
                self._epochs(data, valid, validate, refresh, progress, params, opt, sched, signature)
        finally:
            for d, p in zip(dropouts, kept):
                d.p = p
            for tower in self._towers():
                tower.eval()
                if self.gradient_checkpointing:
                    _checkpointing(tower, False)
        if progress["best_state"] is not None:
            self._load_weights(progress["best_state"])
        if self.checkpoint_dir is not None:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        return self.history

    def _epochs(self, data, valid, validate, refresh, progress, params, opt, sched, signature) -> None:
        for epoch in range(progress["epoch"], self.epochs):
            batches = self._batches(data, epoch)
            for tower in self._towers():
                tower.train()
            bar = tqdm(total=len(batches), initial=progress["batch"], desc=f"{self.desc} epoch {epoch + 1}",
                       unit="batch", disable=not self.verbose)
            with bar:
                for b in range(progress["batch"], len(batches)):
                    progress["losses"].append(self.objective.backward(batches[b], 1.0 / self.accumulation))
                    if (b + 1) % self.accumulation == 0 or b + 1 == len(batches):
                        torch.nn.utils.clip_grad_norm_(params, 1.0)
                        opt.step()
                        sched.step()
                        opt.zero_grad(set_to_none=True)
                        progress["batch"] = b + 1
                        new = None if refresh is None else refresh(sched.last_epoch)
                        if new is not None:
                            if new.qids != data.qids:
                                raise ValueError("refreshed training data must hold the same queries")
                            data = new
                            batches[b + 1:] = self._batches(data, epoch)[b + 1:]
                        if self.checkpoint_dir is not None and b + 1 < len(batches) and \
                                sched.last_epoch % self.checkpoint_every == 0:
                            self._checkpoint(progress, opt, sched, signature)
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(progress['losses'][-50:]):.4f}")
            record = {"epoch": epoch + 1, "train_loss": float(np.mean(progress["losses"])), "steps": len(batches)}
            for tower in self._towers():
                tower.eval()
            stop = self._validate(record, valid, validate, progress)
            log.info("epoch %d: %s", epoch + 1, record)
            self.history.append(record)
            progress.update(epoch=epoch + 1, batch=0, losses=[])
            if self.checkpoint_dir is not None and epoch + 1 < self.epochs and not stop:
                self._checkpoint(progress, opt, sched, signature)
            if stop:
                log.info("no improvement for %d epochs: training stops", self.patience)
                break

    def _validate(self, record: dict, valid, validate, progress) -> bool:
        """Measure the epoch; keep the best weights; True when patience has run out."""
        if validate is not None:
            figure, better = float(validate()), lambda new, old: new > old
            record["valid"] = figure
        elif valid is not None:
            figure, better = self.evaluate(valid), lambda new, old: new < old
            record["valid_loss"] = figure
        else:
            return False
        if progress["best"] is None or better(figure, progress["best"]):
            progress.update(best=figure, best_state=self._weights(), stale=0)
        else:
            progress["stale"] += 1
        return self.patience is not None and progress["stale"] >= self.patience

    def _checkpoint(self, progress, opt, sched, signature) -> None:
        self._save({"signature": signature, "weights": self._weights(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                    "progress": copy.deepcopy(progress), "history": list(self.history)})

    @torch.no_grad()
    def evaluate(self, data: TrainingSet) -> float:
        """Mean loss over ``data`` in fixed batches (the same every epoch)."""
        batches = make_batches(data, self.batch_size, self.n_negatives, epoch_rng(self.seed, VALID_STREAM))
        return float(np.mean([float(self.objective.loss(b)) for b in batches]))
