"""Models: text to representations (torch + transformers). Nothing here knows index layouts."""
from .batching import length_sorted_batches, pad_batch
from .bi_encoder_model import BiEncoderModel
from .precision import cpu_has_native_bf16, resolve_precision

__all__ = ["BiEncoderModel", "length_sorted_batches", "pad_batch", "cpu_has_native_bf16", "resolve_precision"]
