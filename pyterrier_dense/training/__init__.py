"""Training: examples from topics, qrels, mined negatives and teacher scores, losses, each family's objective, and
the loop every family shares. Depends on ``models`` (and runs PyTerrier pipelines for negatives, teachers and
validation); nothing in ``models`` or ``indexes`` depends on it."""
from .batches import Batch, make_batches
from .examples import TrainingSet, build_training_set, read_triples
from .fit import fit_model
from .interpolation import interpolate
from .jpq import train_jpq
from .losses import (contrastive_imitation, cosent, cosine_regression, feature_imitation, info_nce, listwise_kl,
                     margin_mse, ndcg_pairwise_imitation, pearson_rank_imitation, softmax_classifier, triplet_margin)
from .objectives import BiEncoderObjective, CrossEncoderObjective
from .self_negatives import SelfNegatives
from .teacher import teacher_scores
from .trainer import Trainer

__all__ = ["TrainingSet", "build_training_set", "read_triples", "Batch", "make_batches", "fit_model", "interpolate",
           "Trainer", "BiEncoderObjective", "CrossEncoderObjective", "teacher_scores", "train_jpq", "SelfNegatives",
           "info_nce", "margin_mse", "listwise_kl",
           "cosent", "cosine_regression", "triplet_margin", "softmax_classifier", "pearson_rank_imitation",
           "contrastive_imitation", "ndcg_pairwise_imitation", "feature_imitation"]
