"""Models: text to representations (torch + transformers). Nothing here knows index layouts.

Submodules load torch; this package imports them lazily, so ``pyterrier_dense.models.default_model`` can be read
by a process that never loads a model."""
import importlib

_LAZY = {"BiEncoderModel": ".bi_encoder_model", "ColBERTModel": ".colbert_model", "TokenVectors": ".colbert_model",
         "CrossEncoderModel": ".cross_encoder_model", "SpladeModel": ".splade_model", "TermWeights": ".splade_model",
         "EncoderModel": ".encoder_base", "length_sorted_batches": ".batching", "pad_batch": ".batching",
         "cpu_has_native_bf16": ".precision", "resolve_precision": ".precision",
         "DEFAULT_MODEL": ".default_model", "resolve_model": ".default_model"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
