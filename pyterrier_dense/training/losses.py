"""Loss functions for training bi-encoders and cross-encoders: plain torch, no models and no PyTerrier.

Each function takes scores (or embeddings) that the caller has already computed and returns a differentiable
scalar tensor. Unless its docstring says otherwise, that scalar is the mean over the batch (the rows). Shapes are
checked up front and a wrong one raises a ``ValueError`` naming the argument. Half-precision inputs are computed in
float32, and every softmax goes through ``log_softmax`` / ``logsumexp``, so large scores or small temperatures do
not overflow.

- ``info_nce``: a query against in-batch documents and hard negatives (DPR's in-batch negatives).
- ``margin_mse``: a student's margin positive - negative against a teacher's (Hofstaetter et al., 2020).
- ``listwise_kl``: a student's distribution over a query's candidates against a teacher's (ColBERTv2).
- ``pearson_rank_imitation``: a student's scores correlating with a teacher's, per query (D2LLM).
- ``contrastive_imitation``: a contrastive loss with the teacher's relevance probabilities as weights (D2LLM).
- ``ndcg_pairwise_imitation``: hard negatives above in-batch ones, pairs weighted by NDCG change (D2LLM).
- ``feature_imitation``: the batch's embedding similarities against the teacher's (D2LLM).
- ``cosent``: the order of pair similarities against the order of their labels (CoSENT).
- ``cosine_regression``: cos(u, v) against a similarity label (sentence-BERT's CosineSimilarityLoss).
- ``triplet_margin``: d(anchor, positive) + margin <= d(anchor, negative) (sentence-BERT's TripletLoss).
- ``softmax_classifier``: a pair's label from [u, v, |u - v|] through a classifier (sentence-BERT's SoftmaxLoss).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "margin_mse", "listwise_kl", "cosent", "cosine_regression", "triplet_margin",
           "softmax_classifier", "pearson_rank_imitation", "contrastive_imitation", "ndcg_pairwise_imitation",
           "feature_imitation"]


# --- input checks ----------------------------------------------------------------------------------------------------

def _tensor(name: str, x, ndim: tuple[int, ...], what: str) -> torch.Tensor:
    """``x`` as it is, once it is known to be a tensor with one of the allowed numbers of dimensions."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {what}, got a {type(x).__name__}")
    if x.dim() not in ndim:
        raise ValueError(f"{name} must have shape {what}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (a batch of 0 rows); there is nothing to average")
    return x


def _float(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32 precision (fp16 / bf16 are upcast, differentiably)."""
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _same_shape(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have the same shape as {ref_name} {tuple(ref.shape)}, got {tuple(x.shape)}")


def _mask(mask, like: torch.Tensor, like_name: str) -> torch.Tensor | None:
    """A boolean exclusion mask shaped like ``like`` (or ``None``)."""
    if mask is None:
        return None
    _tensor("mask", mask, (2,), "(batch, candidates)")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = exclude the candidate), got dtype {mask.dtype}")
    _same_shape("mask", mask, like_name, like)
    return mask


def _positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


# --- contrastive --------------------------------------------------------------------------------------------------

def info_nce(scores: torch.Tensor, positives: torch.Tensor, mask: torch.Tensor | None = None,
             temperature: float = 0.05) -> torch.Tensor:
    """InfoNCE (DPR's in-batch negatives loss): the cross-entropy of picking each query's positive among its
    candidates. Mean over the batch.

    ``loss = mean_i [ -log softmax(scores[i] / temperature)[positives[i]] ]``, where candidates with
    ``mask[i, j] = True`` are set to ``-inf`` before the softmax, so they never contribute (nor get a gradient).

    Args:
        scores: ``(B, C)`` similarity of each of ``B`` queries to ``C`` candidates: the in-batch documents and any
            hard negatives, in whatever column layout the caller chose.
        positives: ``(B,)`` integer column of each query's positive.
        mask: optional ``(B, C)`` bool, True = exclude the candidate for that query (another judged positive of
            the same query, a duplicate of its positive). A query's own positive must not be masked.
        temperature: divides the scores; ``0.05`` suits cosine similarities, use ``1.0`` for raw dot products.

    >>> scores = torch.tensor([[0.0, 0.0]])                 # two equal candidates: -log(1/2)
    >>> round(info_nce(scores, torch.tensor([0]), temperature=1.0).item(), 4)
    0.6931
    >>> info_nce(scores, torch.tensor([0]), mask=torch.tensor([[False, True]])).item() == 0   # only the positive
    True
    """
    scores = _float("scores", _tensor("scores", scores, (2,), "(batch, candidates)"))
    positives = _tensor("positives", positives, (1,), "(batch,)")
    if positives.dtype == torch.bool or positives.is_floating_point() or positives.is_complex():
        raise ValueError(f"positives must be an integer tensor of column indices, got dtype {positives.dtype}")
    batch, n_candidates = scores.shape
    if positives.shape[0] != batch:
        raise ValueError(f"positives must have one entry per row of scores ({batch}), got {positives.shape[0]}")
    if (positives.min() < 0 or positives.max() >= n_candidates):
        raise ValueError(f"positives must be column indices in [0, {n_candidates}), got values from "
                         f"{positives.min().item()} to {positives.max().item()}")
    mask = _mask(mask, scores, "scores")
    temperature = _positive_number("temperature", temperature)
    rows = torch.arange(batch, device=scores.device)
    logits = scores / temperature
    if mask is not None:
        masked_positive = mask[rows, positives]
        if masked_positive.any():
            bad = torch.nonzero(masked_positive).flatten().tolist()
            raise ValueError(f"mask excludes the positive itself in rows {bad[:10]}; a query's positive must stay "
                             "a candidate")
        logits = logits.masked_fill(mask, float("-inf"))
    return -F.log_softmax(logits, dim=1)[rows, positives].mean()


# --- distillation -------------------------------------------------------------------------------------------------

def margin_mse(student_pos: torch.Tensor, student_neg: torch.Tensor, teacher_pos: torch.Tensor,
               teacher_neg: torch.Tensor) -> torch.Tensor:
    """Margin-MSE: the student's margin between a positive and a negative should equal the teacher's.

    ``loss = mean( ((s_pos - s_neg) - (t_pos - t_neg))^2 )``, over the batch and, with several negatives per query,
    over the negatives as well.

    Args:
        student_pos, teacher_pos: ``(B,)`` scores of each query's positive.
        student_neg, teacher_neg: ``(B,)`` scores of one negative per query, or ``(B, n)`` of ``n`` negatives (the
            positive's score is then compared with each of them).

    >>> one = lambda x: torch.tensor([x])
    >>> margin_mse(one(3.0), one(1.0), one(2.0), one(1.0)).item()     # ((3 - 1) - (2 - 1))^2
    1.0
    """
    student_pos = _float("student_pos", _tensor("student_pos", student_pos, (1,), "(batch,)"))
    student_neg = _float("student_neg", _tensor("student_neg", student_neg, (1, 2), "(batch,) or (batch, n)"))
    teacher_pos = _float("teacher_pos", _tensor("teacher_pos", teacher_pos, (1,), "(batch,)"))
    teacher_neg = _float("teacher_neg", _tensor("teacher_neg", teacher_neg, (1, 2), "(batch,) or (batch, n)"))
    if student_neg.shape[0] != student_pos.shape[0]:
        raise ValueError(f"student_neg must have one row per entry of student_pos ({student_pos.shape[0]}), "
                         f"got shape {tuple(student_neg.shape)}")
    _same_shape("teacher_pos", teacher_pos, "student_pos", student_pos)
    _same_shape("teacher_neg", teacher_neg, "student_neg", student_neg)
    if student_neg.dim() == 2:
        student_pos, teacher_pos = student_pos.unsqueeze(1), teacher_pos.unsqueeze(1)
    return ((student_pos - student_neg) - (teacher_pos - teacher_neg)).square().mean()


def listwise_kl(student_scores: torch.Tensor, teacher_scores: torch.Tensor, temperature: float = 1.0,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL divergence from the teacher's distribution over each query's candidates to the student's (ColBERTv2's
    distillation). Mean over the batch (rows); the sum over a row's candidates is not averaged.

    ``loss = mean_i KL(p_i || q_i) = mean_i sum_j p_ij (log p_ij - log q_ij)``, with
    ``p_i = softmax(teacher_scores[i] / T)`` and ``q_i = softmax(student_scores[i] / T)``, both taken over the
    candidates that ``mask`` keeps (True = exclude from both distributions). The result is not rescaled by ``T^2``.

    Args:
        student_scores, teacher_scores: ``(B, C)`` scores of each query's ``C`` candidates.
        temperature: divides both the student's and the teacher's scores.
        mask: optional ``(B, C)`` bool, True = exclude; every row must keep at least one candidate.

    >>> student = torch.tensor([[0.0, 0.0]])               # q = (1/2, 1/2)
    >>> teacher = torch.tensor([[math.log(3.0), 0.0]])     # p = (3/4, 1/4)
    >>> round(listwise_kl(student, teacher).item(), 4)     # 3/4 log(3/2) + 1/4 log(1/2)
    0.1308
    """
    student_scores = _float("student_scores", _tensor("student_scores", student_scores, (2,), "(batch, candidates)"))
    teacher_scores = _float("teacher_scores", _tensor("teacher_scores", teacher_scores, (2,), "(batch, candidates)"))
    _same_shape("teacher_scores", teacher_scores, "student_scores", student_scores)
    mask = _mask(mask, student_scores, "student_scores")
    temperature = _positive_number("temperature", temperature)
    student_scores, teacher_scores = student_scores / temperature, teacher_scores / temperature
    if mask is not None:
        empty = mask.all(dim=1)
        if empty.any():
            raise ValueError(f"mask excludes every candidate of rows {torch.nonzero(empty).flatten().tolist()[:10]}")
        student_scores = student_scores.masked_fill(mask, float("-inf"))
        teacher_scores = teacher_scores.masked_fill(mask, float("-inf"))
    log_q = F.log_softmax(student_scores, dim=1)
    log_p = F.log_softmax(teacher_scores, dim=1)
    p = log_p.exp()
    if mask is not None:   # excluded entries are -inf - -inf: zero them (not 0 * nan) so no NaN reaches a gradient
        log_p, log_q = log_p.masked_fill(mask, 0.0), log_q.masked_fill(mask, 0.0)
    return (p * (log_p - log_q)).sum(dim=1).mean()


def pearson_rank_imitation(student: torch.Tensor, teacher: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """One minus the Pearson correlation between a student's and a teacher's scores of each query's candidates
    (D2LLM's rank imitation, its correlation part). Mean over the batch (rows).

    ``loss = mean_i (1 - r_i)``, ``r_i = <s_i - mean(s_i), t_i - mean(t_i)> / (|s_i - mean(s_i)| |t_i - mean(t_i)|)``.
    It ignores the scale and offset of either side's scores, only how they co-vary.

    A row whose scores are all equal (zero variance) has no defined correlation. Each centred row is divided by
    ``max(|centred row|, eps)`` instead of its norm, so such a row counts as uncorrelated (``r = 0``, loss 1) with
    finite gradients and never NaN. A constant teacher row gives the student no gradient (the teacher prefers
    nothing). A constant student row gets a gradient toward the teacher's centred scores, of order ``1 / eps``
    (correlation is scale-free, so any step away from the constant is as large as it gets): clip gradients when a
    model can start out scoring every candidate the same.

    Args:
        student, teacher: ``(B, n)`` scores of each query's ``n >= 2`` candidates (its positives + hard negatives).
        eps: lower bound on a centred row's norm.

    >>> student = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    >>> teacher = torch.tensor([[10.0, 20.0, 30.0], [3.0, 2.0, 1.0]])   # r = 1 and r = -1
    >>> round(pearson_rank_imitation(student, teacher).item(), 4)       # ((1 - 1) + (1 + 1)) / 2
    1.0
    """
    student = _float("student", _tensor("student", student, (2,), "(batch, candidates)"))
    teacher = _float("teacher", _tensor("teacher", teacher, (2,), "(batch, candidates)"))
    _same_shape("teacher", teacher, "student", student)
    if student.shape[1] < 2:
        raise ValueError(f"student must have at least 2 candidates per row to correlate, got shape "
                         f"{tuple(student.shape)}")
    eps = _positive_number("eps", eps)

    def unit(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        return centred / torch.linalg.vector_norm(centred, dim=1, keepdim=True).clamp_min(eps)

    return (1.0 - (unit(student) * unit(teacher)).sum(dim=1)).mean()


def contrastive_imitation(student_scores: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 0.05,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """D2LLM's contrastive imitation: a contrastive loss whose every candidate is a positive weighted by the
    teacher's probability that it is relevant, so the more relevant pull harder. Mean over the batch (rows).

    ``loss = mean_i [ -sum_j t_ij log softmax(s_i / temperature)_j ]``, the softmax over the candidates ``mask``
    keeps (True = exclude); ``t_ij`` in [0, 1] is not normalised over ``j`` (a query can have several relevant
    candidates, or none).

    Args:
        student_scores: ``(B, C)`` scores of each query's candidates (hard and in-batch negatives alike).
        teacher_probs: ``(B, C)`` the teacher's relevance probabilities (e.g. a cross-encoder's sigmoid).
        temperature: divides the student's scores.
        mask: optional ``(B, C)`` bool, True = exclude the candidate.

    >>> s = torch.tensor([[0.0, 0.0]])                  # log softmax = (-log 2, -log 2)
    >>> round(contrastive_imitation(s, torch.tensor([[1.0, 0.5]]), temperature=1.0).item(), 4)   # 1.5 log 2
    1.0397
    """
    student_scores = _float("student_scores", _tensor("student_scores", student_scores, (2,), "(batch, candidates)"))
    teacher_probs = _float("teacher_probs", _tensor("teacher_probs", teacher_probs, (2,), "(batch, candidates)"))
    _same_shape("teacher_probs", teacher_probs, "student_scores", student_scores)
    if ((teacher_probs < 0) | (teacher_probs > 1)).any():
        raise ValueError("teacher_probs must be probabilities in [0, 1] (pass a sigmoid or softmax of the teacher's "
                         "scores)")
    mask = _mask(mask, student_scores, "student_scores")
    logits = student_scores / _positive_number("temperature", temperature)
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    log_q = F.log_softmax(logits, dim=1)
    if mask is not None:
        log_q, teacher_probs = log_q.masked_fill(mask, 0.0), teacher_probs.masked_fill(mask, 0.0)
    return -(teacher_probs * log_q).sum(dim=1).mean()


def ndcg_pairwise_imitation(student_hard: torch.Tensor, teacher_hard: torch.Tensor,
                            student_easy: torch.Tensor) -> torch.Tensor:
    """D2LLM's rank imitation, its pairwise part: every hard negative should score above every in-batch (easy)
    negative, each pair weighted by how much swapping them would change NDCG under the teacher's ranking. Mean over
    the batch (rows).

    The teacher ranks a query's ``H`` hard negatives by ``teacher_hard`` (rank 1 = highest) and the ``E`` easy ones
    after them (ranks ``H + 1 ... H + E``, in column order). With ``g(r) = 1 / log2(1 + r)``:
    ``loss_i = sum_{h, e} |g(r_h) - g(r_e)| * log(1 + exp(s_e - s_h)) / (H * E)``.

    Args:
        student_hard, teacher_hard: ``(B, H)`` scores of each query's hard negatives.
        student_easy: ``(B, E)`` the student's scores of each query's in-batch negatives.

    >>> hard, easy = torch.tensor([[0.0]]), torch.tensor([[0.0]])     # ranks 1 and 2: |1 - 1/log2(3)| log 2
    >>> round(ndcg_pairwise_imitation(hard, torch.tensor([[5.0]]), easy).item(), 4)
    0.2558
    """
    student_hard = _float("student_hard", _tensor("student_hard", student_hard, (2,), "(batch, hard)"))
    teacher_hard = _float("teacher_hard", _tensor("teacher_hard", teacher_hard, (2,), "(batch, hard)"))
    student_easy = _float("student_easy", _tensor("student_easy", student_easy, (2,), "(batch, easy)"))
    _same_shape("teacher_hard", teacher_hard, "student_hard", student_hard)
    if student_easy.shape[0] != student_hard.shape[0]:
        raise ValueError(f"student_easy must have one row per query ({student_hard.shape[0]}), got shape "
                         f"{tuple(student_easy.shape)}")
    n_hard, n_easy = student_hard.shape[1], student_easy.shape[1]
    order = torch.argsort(teacher_hard, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(1, n_hard + 1, device=order.device)
                                             .expand_as(order).contiguous())
    gain_hard = 1.0 / torch.log2(1.0 + ranks.to(student_hard.dtype))                                   # (B, H)
    gain_easy = 1.0 / torch.log2(torch.arange(n_hard + 2, n_hard + n_easy + 2, device=student_hard.device,
                                              dtype=student_hard.dtype))                               # (E,)
    weight = (gain_hard.unsqueeze(2) - gain_easy.view(1, 1, -1)).abs()                                 # (B, H, E)
    pair = F.softplus(student_easy.unsqueeze(1) - student_hard.unsqueeze(2))                           # (B, H, E)
    return (weight * pair).sum(dim=(1, 2)).div(n_hard * n_easy).mean()


def feature_imitation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """D2LLM's feature imitation: the cosine similarities among a batch's student embeddings should equal those
    among the teacher's embeddings of the same texts (the dimensions may differ).

    ``loss = mean_{i, j} (cos(u_i, u_j) - cos(v_i, v_j))^2`` over all pairs of the batch's ``N`` texts.

    Args:
        student: ``(N, D)`` student embeddings; teacher: ``(N, D')`` teacher embeddings (or hidden features).

    >>> u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])           # orthogonal: cos 0 off the diagonal
    >>> v = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]) # identical: cos 1
    >>> feature_imitation(u, v).item()                        # two off-diagonal pairs of (0 - 1)^2, over 4
    0.5
    """
    student = _float("student", _tensor("student", student, (2,), "(texts, dim)"))
    teacher = _float("teacher", _tensor("teacher", teacher, (2,), "(texts, dim)"))
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"student and teacher must embed the same texts: {student.shape[0]} rows against "
                         f"{teacher.shape[0]}")
    u, v = F.normalize(student, dim=1), F.normalize(teacher, dim=1)
    return ((u @ u.T) - (v @ v.T)).square().mean()


# --- sentence pairs (sentence-BERT family) ------------------------------------------------------------------------

def cosent(cos_scores: torch.Tensor, labels: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT: every pair of examples whose labels are ordered should have their similarities ordered the same way.

    ``loss = log(1 + sum_{(i, j): labels[i] > labels[j]} exp(scale * (cos_j - cos_i)))``. This is one log over all
    ordered pairs of the batch, not a mean over rows (as in the paper and in sentence-transformers); pairs with
    equal labels contribute nothing, and a batch with no ordered pair has loss 0.

    Args:
        cos_scores: ``(B,)`` similarity of each example's two texts (usually the cosine of their embeddings).
        labels: ``(B,)`` similarity labels; only their order matters.
        scale: multiplies the score differences (an inverse temperature).

    >>> round(cosent(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])).item(), 4)   # log(1 + exp(0))
    0.6931
    """
    cos_scores = _float("cos_scores", _tensor("cos_scores", cos_scores, (1,), "(batch,)"))
    labels = _tensor("labels", labels, (1,), "(batch,)")
    _same_shape("labels", labels, "cos_scores", cos_scores)
    scale = _positive_number("scale", scale)
    scaled = cos_scores * scale
    differences = scaled.unsqueeze(0) - scaled.unsqueeze(1)           # [i, j] = scale * (cos_j - cos_i)
    ordered = labels.unsqueeze(1) > labels.unsqueeze(0)               # [i, j] = labels[i] > labels[j]
    terms = differences.masked_fill(~ordered, float("-inf")).flatten()
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)   # the zero is the "1 +"


def cosine_regression(u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cosine-similarity regression (sentence-BERT's CosineSimilarityLoss): the cosine of each pair of embeddings
    should equal its label. Mean over the batch.

    ``loss = mean_i (cos(u_i, v_i) - labels_i)^2``. A zero embedding has cosine 0 with anything (torch's
    ``cosine_similarity`` clamps the norms at 1e-8).

    Args:
        u, v: ``(B, D)`` embeddings of each pair's two texts.
        labels: ``(B,)`` target similarities, usually in [-1, 1] or [0, 1].

    >>> cosine_regression(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([1.0])).item()
    1.0
    """
    u = _float("u", _tensor("u", u, (2,), "(batch, dim)"))
    v = _float("v", _tensor("v", v, (2,), "(batch, dim)"))
    _same_shape("v", v, "u", u)
    labels = _float("labels", _tensor("labels", labels, (1,), "(batch,)"))
    if labels.shape[0] != u.shape[0]:
        raise ValueError(f"labels must have one entry per row of u ({u.shape[0]}), got {labels.shape[0]}")
    return (F.cosine_similarity(u, v, dim=1) - labels).square().mean()


_DISTANCES = ("euclidean", "cosine")


def triplet_margin(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 5.0,
                   distance: str = "euclidean") -> torch.Tensor:
    """Triplet loss (sentence-BERT's TripletLoss): the negative should be at least ``margin`` further from the
    anchor than the positive is. Mean over the batch.

    ``loss = mean_i relu(d(a_i, p_i) - d(a_i, n_i) + margin)``, with ``d`` the euclidean distance ``|x - y|``
    (the default, with margin 5 as in sentence-BERT) or the cosine distance ``1 - cos(x, y)`` (use a margin well
    under 2 then). The euclidean distance has gradient 0, not NaN, where ``x == y``.

    Args:
        anchor, positive, negative: ``(B, D)`` embeddings.
        margin: the required gap between the two distances.
        distance: ``"euclidean"`` or ``"cosine"``.

    >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 4.0]])
    >>> triplet_margin(a, p, n).item()                      # relu(1 - 5 + 5)
    1.0
    """
    anchor = _float("anchor", _tensor("anchor", anchor, (2,), "(batch, dim)"))
    positive = _float("positive", _tensor("positive", positive, (2,), "(batch, dim)"))
    negative = _float("negative", _tensor("negative", negative, (2,), "(batch, dim)"))
    _same_shape("positive", positive, "anchor", anchor)
    _same_shape("negative", negative, "anchor", anchor)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number, got {margin!r}")
    if distance == "euclidean":
        def d(x, y):
            return torch.linalg.vector_norm(x - y, dim=1)
    elif distance == "cosine":
        def d(x, y):
            return 1.0 - F.cosine_similarity(x, y, dim=1)
    else:
        raise ValueError(f"distance must be one of {_DISTANCES}, got {distance!r}")
    return F.relu(d(anchor, positive) - d(anchor, negative) + margin).mean()


def softmax_classifier(u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor,
                       classifier: torch.nn.Module) -> torch.Tensor:
    """Softmax classification of sentence pairs (sentence-BERT's SoftmaxLoss, as trained on NLI). Mean over the batch.

    ``loss = mean_i cross_entropy(classifier([u_i, v_i, |u_i - v_i|]), labels_i)``: the three vectors are
    concatenated, so the classifier maps ``3 * D`` features to one logit per label.

    Args:
        u, v: ``(B, D)`` embeddings of each pair's two texts.
        labels: ``(B,)`` integer class of each pair, in ``[0, n_labels)``.
        classifier: usually ``torch.nn.Linear(3 * D, n_labels)``, trained along with the encoder (give its
            parameters to the optimiser too). One with an ``in_features`` other than ``3 * D`` is refused.

    >>> clf = torch.nn.Linear(6, 3)                          # all-zero weights: uniform over 3 labels
    >>> _ = torch.nn.init.zeros_(clf.weight); _ = torch.nn.init.zeros_(clf.bias)
    >>> round(softmax_classifier(torch.ones(2, 2), torch.zeros(2, 2), torch.tensor([0, 2]), clf).item(), 4)  # log 3
    1.0986
    """
    u = _float("u", _tensor("u", u, (2,), "(batch, dim)"))
    v = _float("v", _tensor("v", v, (2,), "(batch, dim)"))
    _same_shape("v", v, "u", u)
    labels = _tensor("labels", labels, (1,), "(batch,)")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor of class indices, got dtype {labels.dtype}")
    if labels.shape[0] != u.shape[0]:
        raise ValueError(f"labels must have one entry per row of u ({u.shape[0]}), got {labels.shape[0]}")
    if not callable(classifier):
        raise ValueError(f"classifier must be a torch module such as nn.Linear(3 * dim, n_labels), "
                         f"got a {type(classifier).__name__}")
    in_features = getattr(classifier, "in_features", None)
    if in_features is not None and in_features != 3 * u.shape[1]:
        raise ValueError(f"classifier takes {in_features} input features, but [u, v, |u - v|] has 3 * {u.shape[1]} "
                         f"= {3 * u.shape[1]}")
    features = torch.cat([u, v, (u - v).abs()], dim=1)
    weight = getattr(classifier, "weight", None)
    if isinstance(weight, torch.Tensor):
        features = features.to(weight.dtype)
    logits = classifier(features)
    if logits.dim() != 2 or logits.shape[0] != u.shape[0]:
        raise ValueError(f"classifier must return (batch, n_labels) logits, got shape {tuple(logits.shape)}")
    if (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {logits.shape[1]}) (the classifier's outputs), got "
                         f"values from {labels.min().item()} to {labels.max().item()}")
    return F.cross_entropy(logits.float(), labels.long())
