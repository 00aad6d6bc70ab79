"""Weight-space interpolation of a fine-tuned model with the model it started from (WiSE-FT, Wortsman et al. 2022):
every weight becomes ``(1 - weight) * start + weight * trained``. Fine-tuning on one collection moves the weights
towards that collection; stepping part of the way back keeps most of the gain there and more of what the starting
model knew elsewhere."""
from __future__ import annotations

import torch

__all__ = ["interpolate", "snapshot", "blend_into", "check_weight"]


def _model(stage):
    """The model object (the one with ``towers()``) of a stage or of a model."""
    return stage if hasattr(stage, "towers") else stage.model


def check_weight(weight) -> float:
    """``weight`` as a float if it is a number in [0, 1], else a ValueError."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise ValueError(f"interpolation weight must be a number in [0, 1] (1 = the trained weights, 0 = the "
                         f"starting ones), got {weight!r}")
    return float(weight)


def snapshot(model) -> list[dict[str, torch.Tensor]]:
    """A CPU copy of the floating-point weights of ``model``'s towers, to blend with after training."""
    return [{k: v.detach().to("cpu", copy=True) for k, v in tower.state_dict().items() if v.is_floating_point()}
            for tower in _model(model).towers()]


def blend_into(model, start: list[dict[str, torch.Tensor]], weight: float, keep=()) -> None:
    """Set ``model``'s tower weights to ``(1 - weight) * start + weight * current`` in place (``start`` as
    :func:`snapshot` gives), leaving the names in ``keep`` (weights the start had no trained value for, such as a
    new head) as they are, and refresh the model's fingerprint."""
    weight = check_weight(weight)
    model = _model(model)
    towers = model.towers()
    if len(towers) != len(start):
        raise ValueError(f"cannot interpolate: the trained model has {len(towers)} tower(s), the starting one "
                         f"{len(start)}")
    with torch.no_grad():
        for tower, begin in zip(towers, start):
            own = {k: v for k, v in tower.state_dict().items() if v.is_floating_point()}
            differ = sorted(set(own) ^ set(begin))
            if differ:
                raise ValueError(f"cannot interpolate models of different architectures: weight {differ[0]!r} is in "
                                 f"only one of them ({len(differ)} such)")
            done = set()   # tied weights (one tensor under two names) are blended once
            for name, value in own.items():
                if name in keep or value.data_ptr() in done:
                    continue
                if value.shape != begin[name].shape:
                    raise ValueError(f"cannot interpolate: weight {name!r} is {tuple(value.shape)} in the trained "
                                     f"model and {tuple(begin[name].shape)} in the starting one")
                done.add(value.data_ptr())
                mixed = torch.lerp(begin[name].to(value.device, torch.float32), value.float(), weight)
                value.copy_(mixed.to(value.dtype))
    model.refresh_fingerprint()


def interpolate(trained, start, weight: float = 0.5):
    """Blend ``trained`` (a fine-tuned :class:`~pyterrier_dense.BiEncoder` or :class:`~pyterrier_dense.CrossEncoder`)
    in place with ``start``, the same architecture before fine-tuning: ``weight`` of the trained weights and
    ``1 - weight`` of the starting ones (WiSE-FT). Returns ``trained``, whose fingerprint changes. A head the start
    had no trained weights for (``CrossEncoder(..., new_head=True)``) keeps its trained weights. ``fit(...,
    interpolate=w)`` does the same at the end of training; this function tries several weights on one run::

        start = ptd.BiEncoder("sentence-transformers/all-MiniLM-L6-v2", precision="fp32")
        for w in (0.5, 0.7):
            enc = ptd.training.interpolate(ptd.BiEncoder("minilm-scifact", precision="fp32"), start, w)
            pt.Experiment([enc >> ptd.DenseIndex(f"wise{w}.dense").retriever()], ...)   # after indexing with enc
    """
    weight = check_weight(weight)
    ours, theirs = _model(trained), _model(start)
    if type(ours) is not type(theirs):
        raise ValueError(f"cannot interpolate a {type(ours).__name__} with a {type(theirs).__name__}")
    blend_into(ours, snapshot(theirs), weight, keep=getattr(theirs, "new_parameters", ()))
    if hasattr(trained, "clear_query_cache"):
        trained.clear_query_cache()
    return trained
