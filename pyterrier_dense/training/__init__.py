"""Training: examples from topics, qrels and mined negatives, losses, and the loop every family shares. Depends on
``models`` (and runs PyTerrier pipelines for negatives); nothing in ``models`` or ``indexes`` depends on it."""
from .examples import TrainingSet, build_training_set
from .fit import fit_contrastive
from .losses import (cosent, cosine_regression, info_nce, listwise_kl, margin_mse, pearson_rank_imitation,
                     softmax_classifier, triplet_margin)
from .trainer import ContrastiveTrainer

__all__ = ["TrainingSet", "build_training_set", "fit_contrastive", "ContrastiveTrainer", "info_nce", "margin_mse",
           "listwise_kl", "cosent", "cosine_regression", "triplet_margin", "softmax_classifier", "pearson_rank_imitation"]
