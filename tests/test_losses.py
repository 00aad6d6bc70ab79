"""training/losses.py: each loss against values worked out by hand (math / numpy in the test, never torch's own
loss), masking that really removes candidates, shape errors that name the argument, gradients that flow, and, where
sentence-transformers is importable, the same values as its TripletLoss / CoSENTLoss / SoftmaxLoss /
CosineSimilarityLoss."""
import math
import warnings

import numpy as np
import pytest
import torch

from pyterrier_dense.training.losses import (contrastive_imitation, cosent, cosine_regression, feature_imitation,
                                             info_nce, listwise_kl, margin_mse, ndcg_pairwise_imitation,
                                             pearson_rank_imitation, softmax_classifier, triplet_margin)


def t(values, **kw):
    return torch.tensor(values, dtype=torch.float32, **kw)


def np_log_softmax(row):
    row = np.asarray(row, dtype=np.float64)
    return row - row.max() - math.log(np.exp(row - row.max()).sum())


def assert_grad_flows(x: torch.Tensor):
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def st_losses():
    """sentence-transformers' loss classes (skipped where not installed), without its deprecation noise."""
    pytest.importorskip("sentence_transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentence_transformers.sentence_transformer import losses
    return losses


class _EmbeddingsAsModel(torch.nn.Module):
    """Stands in for a SentenceTransformer: returns the embeddings it is handed as features."""
    device = torch.device("cpu")

    def forward(self, features):
        return {"sentence_embedding": features["emb"]}


# --- info_nce --------------------------------------------------------------------------------------------------------

def test_info_nce_hand_values():
    # two queries; columns 0-1 are the in-batch documents, 2-3 hard negatives
    scores = [[0.9, 0.1, 0.5, -0.2], [0.3, 0.7, 0.8, 0.0]]
    positives = [0, 1]
    for temperature in (1.0, 0.05):
        expected = np.mean([-np_log_softmax(np.array(row) / temperature)[p] for row, p in zip(scores, positives)])
        got = info_nce(t(scores), torch.tensor(positives), temperature=temperature).item()
        assert got == pytest.approx(expected, rel=1e-5)
    # the default temperature is 0.05
    assert info_nce(t(scores), torch.tensor(positives)).item() == pytest.approx(
        info_nce(t(scores), torch.tensor(positives), temperature=0.05).item())
    # row 0 by hand at T=1: -0.9 + log(e^0.9 + e^0.1 + e^0.5 + e^-0.2)
    row0 = -0.9 + math.log(math.exp(0.9) + math.exp(0.1) + math.exp(0.5) + math.exp(-0.2))
    assert info_nce(t(scores[:1]), torch.tensor([0]), temperature=1.0).item() == pytest.approx(row0, rel=1e-6)


def test_info_nce_mask_removes_the_candidate():
    scores = t([[2.0, 1.0, 0.5], [0.0, 1.0, 3.0]])
    positives = torch.tensor([0, 2])
    mask = torch.tensor([[False, True, False], [False, False, False]])
    got = info_nce(scores, positives, mask=mask, temperature=1.0)
    # by hand: row 0 without column 1, row 1 unchanged
    row0 = -2.0 + math.log(math.exp(2.0) + math.exp(0.5))
    row1 = -3.0 + math.log(math.exp(0.0) + math.exp(1.0) + math.exp(3.0))
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert got.item() != pytest.approx(info_nce(scores, positives, temperature=1.0).item())   # the mask matters
    for masked_value in (-50.0, 1.0, 100.0, 1e6):       # whatever the excluded score is, nothing changes
        changed = scores.clone()
        changed[0, 1] = masked_value
        assert info_nce(changed, positives, mask=mask, temperature=1.0).item() == pytest.approx(got.item(), rel=1e-6)
    # and it gets no gradient
    scores.requires_grad_(True)
    info_nce(scores, positives, mask=mask, temperature=1.0).backward()
    assert scores.grad[0, 1] == 0
    assert torch.isfinite(scores.grad).all() and scores.grad[0, 2] != 0


def test_info_nce_masked_positive_raises():
    mask = torch.tensor([[False, False], [False, True]])
    with pytest.raises(ValueError, match=r"positive.*rows \[1\]"):
        info_nce(t([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]), mask=mask)


def test_info_nce_gradients_flow_and_stay_finite_for_large_scores():
    scores = t([[3.0, -2.0, 2.95], [1e4, 1e4, -1e4]], requires_grad=True)   # row 1: logits of +-1e6 at T = 0.01
    loss = info_nce(scores, torch.tensor([0, 1]), temperature=0.01)
    assert torch.isfinite(loss)
    loss.backward()
    assert_grad_flows(scores)
    assert scores.grad[0, 0] < 0 < scores.grad[0, 2]     # pushes the positive up and the nearest negative down
    assert scores.grad[1, 1] < 0 < scores.grad[1, 0]     # a tie of huge scores still has a gradient
    # row 0: -300 + log(e^300 + e^-200 + e^295) = log(1 + e^-500 + e^-5); row 1: a tie of two, log 2
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-500) + math.exp(-5)) + math.log(2)) / 2, rel=1e-5)


def test_info_nce_sgd_on_a_tiny_linear_encoder_reduces_the_loss():
    torch.manual_seed(0)
    queries, docs = torch.randn(8, 16), torch.randn(12, 16)   # 8 queries, their 8 positives + 4 hard negatives
    encoder = torch.nn.Linear(16, 8)
    optimiser = torch.optim.SGD(encoder.parameters(), lr=0.1)
    positives = torch.arange(8)

    def loss_now():
        q = torch.nn.functional.normalize(encoder(queries), dim=1)
        d = torch.nn.functional.normalize(encoder(docs), dim=1)
        return info_nce(q @ d.T, positives, temperature=0.1)

    losses = []
    for _ in range(30):
        optimiser.zero_grad()
        loss = loss_now()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert loss_now().item() < 0.5 * losses[0]


def test_info_nce_shape_errors_name_the_argument():
    scores, positives = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="^scores must have shape"):
        info_nce(torch.zeros(3), positives)
    with pytest.raises(ValueError, match="^scores must be a torch.Tensor"):
        info_nce([[0.0, 1.0]], torch.tensor([0]))
    with pytest.raises(ValueError, match="^scores is empty"):
        info_nce(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="^positives must have one entry per row"):
        info_nce(scores, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="^positives must have shape"):
        info_nce(scores, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"^positives must be column indices in \[0, 3\)"):
        info_nce(scores, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="^positives must be an integer tensor"):
        info_nce(scores, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="^mask must have the same shape as scores"):
        info_nce(scores, positives, mask=torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="^mask must be a bool tensor"):
        info_nce(scores, positives, mask=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="^temperature must be"):
        info_nce(scores, positives, temperature=0.0)


# --- margin_mse ------------------------------------------------------------------------------------------------------

def test_margin_mse_hand_values_one_negative():
    # margins: student (3 - 1, 1 - 2) = (2, -1); teacher (2 - 1, 0 - 0.5) = (1, -0.5)
    got = margin_mse(t([3.0, 1.0]), t([1.0, 2.0]), t([2.0, 0.0]), t([1.0, 0.5]))
    assert got.item() == pytest.approx(((2 - 1) ** 2 + (-1 + 0.5) ** 2) / 2)


def test_margin_mse_several_negatives_broadcast_the_positive():
    s_pos, s_neg = np.array([2.0, 0.0]), np.array([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]])
    t_pos, t_neg = np.array([1.0, 3.0]), np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 1.0]])
    expected = np.mean([((s_pos[i] - s_neg[i, j]) - (t_pos[i] - t_neg[i, j])) ** 2
                        for i in range(2) for j in range(3)])
    student_pos = t(s_pos.tolist(), requires_grad=True)
    got = margin_mse(student_pos, t(s_neg.tolist()), t(t_pos.tolist()), t(t_neg.tolist()))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    assert_grad_flows(student_pos)


def test_margin_mse_shape_errors_name_the_argument():
    b = torch.zeros(2)
    with pytest.raises(ValueError, match="^student_pos must have shape"):
        margin_mse(torch.zeros(2, 1), b, b, b)
    with pytest.raises(ValueError, match="^student_neg must have one row per entry"):
        margin_mse(b, torch.zeros(3), b, torch.zeros(3))
    with pytest.raises(ValueError, match="^teacher_pos must have the same shape as student_pos"):
        margin_mse(b, b, torch.zeros(3), b)
    with pytest.raises(ValueError, match="^teacher_neg must have the same shape as student_neg"):
        margin_mse(b, torch.zeros(2, 3), b, torch.zeros(2, 2))


# --- listwise_kl ---------------------------------------------------------------------------------------------------

def _np_kl(student_row, teacher_row, temperature):
    log_q = np_log_softmax(np.array(student_row) / temperature)
    log_p = np_log_softmax(np.array(teacher_row) / temperature)
    return float(np.sum(np.exp(log_p) * (log_p - log_q)))


def test_listwise_kl_hand_values():
    student = [[1.0, 0.0, -1.0], [0.2, 0.4, 0.6]]
    teacher = [[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]
    for temperature in (1.0, 2.0):
        expected = np.mean([_np_kl(s, tc, temperature) for s, tc in zip(student, teacher)])
        assert listwise_kl(t(student), t(teacher), temperature=temperature).item() == pytest.approx(expected, rel=1e-5)
    # the doctest's case by hand: p = (3/4, 1/4), q = (1/2, 1/2)
    assert listwise_kl(t([[0.0, 0.0]]), t([[math.log(3.0), 0.0]])).item() == pytest.approx(
        0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    assert listwise_kl(t(teacher), t(teacher)).item() == pytest.approx(0.0, abs=1e-7)


def test_listwise_kl_mask_excludes_from_both_distributions():
    student = t([[1.0, 0.0, -1.0], [0.2, 0.4, 0.6]], requires_grad=True)
    teacher = t([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], requires_grad=True)
    mask = torch.tensor([[False, True, False], [False, False, False]])
    got = listwise_kl(student, teacher, mask=mask)
    expected = (_np_kl([1.0, -1.0], [3.0, 0.0], 1.0) + _np_kl([0.2, 0.4, 0.6], [0.0, 2.0, 1.0], 1.0)) / 2
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert got.item() != pytest.approx(listwise_kl(student, teacher).item())
    with torch.no_grad():
        s2, t2 = student.clone(), teacher.clone()
        s2[0, 1], t2[0, 1] = 40.0, -70.0
        assert listwise_kl(s2, t2, mask=mask).item() == pytest.approx(got.item(), rel=1e-6)
    got.backward()                                    # no NaN reaches either side's gradient
    assert_grad_flows(student)
    assert torch.isfinite(teacher.grad).all()
    assert student.grad[0, 1] == 0 and teacher.grad[0, 1] == 0


def test_listwise_kl_errors():
    s = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="^teacher_scores must have the same shape as student_scores"):
        listwise_kl(s, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="^student_scores must have shape"):
        listwise_kl(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"^mask excludes every candidate of rows \[1\]"):
        listwise_kl(s, s, mask=torch.tensor([[False, True, True], [True, True, True]]))
    with pytest.raises(ValueError, match="^temperature must be"):
        listwise_kl(s, s, temperature=-1.0)


# --- pearson_rank_imitation ------------------------------------------------------------------------------------------

def _np_pearson(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc * yc).sum() / math.sqrt((xc ** 2).sum() * (yc ** 2).sum()))


def test_pearson_rank_imitation_hand_values():
    student = [[1.0, 2.0, 4.0, 0.5], [3.0, -1.0, 0.0, 2.0]]
    teacher = [[10.0, 9.0, 12.0, 1.0], [0.0, 1.0, 5.0, 2.0]]
    expected = np.mean([1 - _np_pearson(s, tc) for s, tc in zip(student, teacher)])
    assert expected == pytest.approx(np.mean([1 - np.corrcoef(s, tc)[0, 1] for s, tc in zip(student, teacher)]))
    assert pearson_rank_imitation(t(student), t(teacher)).item() == pytest.approx(expected, rel=1e-5)
    # perfectly (anti-)correlated rows: 1 - 1 = 0 and 1 - (-1) = 2
    assert pearson_rank_imitation(t([[1.0, 2.0, 3.0]]), t([[2.0, 4.0, 6.0]])).item() == pytest.approx(0.0, abs=1e-6)
    assert pearson_rank_imitation(t([[1.0, 2.0, 3.0]]), t([[3.0, 2.0, 1.0]])).item() == pytest.approx(2.0)
    # blind to the scale and offset of the student's scores
    shifted = pearson_rank_imitation(t(student) * 7.0 - 3.0, t(teacher)).item()
    assert shifted == pytest.approx(expected, rel=1e-5)


def test_pearson_rank_imitation_zero_variance_rows():
    student = t([[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]], requires_grad=True)   # row 0: a constant student
    teacher = t([[1.0, 2.0, 6.0], [5.0, 5.0, 5.0]])                        # row 1: a constant teacher
    loss = pearson_rank_imitation(student, teacher)
    assert loss.item() == pytest.approx(1.0)          # both rows count as uncorrelated: (1 + 1) / 2
    loss.backward()
    assert torch.isfinite(student.grad).all()
    assert torch.all(student.grad[1] == 0)            # a constant teacher prefers nothing
    teacher_centred = teacher[0] - teacher[0].mean()
    assert torch.dot(student.grad[0], teacher_centred) < 0   # descent moves the student toward the teacher's order


def test_pearson_rank_imitation_errors():
    with pytest.raises(ValueError, match="^teacher must have the same shape as student"):
        pearson_rank_imitation(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="^student must have shape"):
        pearson_rank_imitation(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="^student must have at least 2 candidates"):
        pearson_rank_imitation(torch.zeros(2, 1), torch.zeros(2, 1))


# --- cosent ----------------------------------------------------------------------------------------------------------

def test_cosent_hand_values():
    cos = [0.9, 0.2, 0.5]
    labels = [1.0, 0.0, 0.5]     # ordered pairs (i, j) with labels[i] > labels[j]: (0, 1), (0, 2), (2, 1)
    for scale in (1.0, 20.0):
        expected = math.log(1 + math.exp(scale * (0.2 - 0.9)) + math.exp(scale * (0.5 - 0.9))
                            + math.exp(scale * (0.2 - 0.5)))
        got = cosent(torch.tensor(cos, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64), scale=scale)
        assert got.item() == pytest.approx(expected, rel=1e-12)
    # the similarities in the wrong order: log(1 + e^{20 * 0.7} + ...) grows large but stays finite
    wrong = cosent(t([0.2, 0.9, 0.5]), t(labels))
    assert wrong.item() == pytest.approx(math.log(1 + math.exp(14.0) + math.exp(8.0) + math.exp(6.0)), rel=1e-5)
    assert torch.isfinite(cosent(t([-1.0, 1.0]), t([1.0, 0.0]), scale=1000.0))
    # ties contribute nothing; a batch without an ordered pair has loss log(1) = 0
    assert cosent(t([0.1, 0.9]), t([0.5, 0.5])).item() == 0.0


def test_cosent_gradient_flows():
    cos = t([0.9, 0.2, 0.5], requires_grad=True)
    cosent(cos, t([0.0, 1.0, 0.5])).backward()
    assert_grad_flows(cos)
    assert cos.grad[1] < 0 < cos.grad[0]             # raise the highest-labelled pair, lower the lowest


def test_cosent_matches_sentence_transformers():
    losses = st_losses()
    torch.manual_seed(1)
    u, v = torch.randn(6, 5), torch.randn(6, 5)
    labels = t([0.1, 0.9, 0.5, 0.5, 0.0, 0.7])
    ours = cosent(torch.nn.functional.cosine_similarity(u, v), labels)
    theirs = losses.CoSENTLoss(torch.nn.Identity()).compute_loss_from_embeddings([u, v], labels)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_cosent_shape_errors():
    with pytest.raises(ValueError, match="^labels must have the same shape as cos_scores"):
        cosent(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="^cos_scores must have shape"):
        cosent(torch.zeros(3, 1), torch.zeros(3))


# --- cosine_regression -----------------------------------------------------------------------------------------------

def test_cosine_regression_hand_values_and_gradient():
    u = t([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]], requires_grad=True)
    v = t([[0.0, 1.0], [1.0, 0.0], [6.0, 8.0]])
    labels = [0.5, 1.0, 0.2]               # cosines: 0, 1/sqrt(2), 1
    expected = ((0 - 0.5) ** 2 + (1 / math.sqrt(2) - 1.0) ** 2 + (1 - 0.2) ** 2) / 3
    loss = cosine_regression(u, v, t(labels))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert_grad_flows(u)


def test_cosine_regression_matches_sentence_transformers():
    losses = st_losses()
    torch.manual_seed(2)
    u, v, labels = torch.randn(5, 4), torch.randn(5, 4), torch.rand(5)
    theirs = losses.CosineSimilarityLoss(torch.nn.Identity()).compute_loss_from_embeddings([u, v], labels)
    assert cosine_regression(u, v, labels).item() == pytest.approx(theirs.item(), rel=1e-5)


def test_cosine_regression_shape_errors():
    with pytest.raises(ValueError, match="^v must have the same shape as u"):
        cosine_regression(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="^labels must have one entry per row of u"):
        cosine_regression(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="^labels must be a floating-point tensor"):
        cosine_regression(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]))


# --- triplet_margin --------------------------------------------------------------------------------------------------

def test_triplet_margin_euclidean_hand_values():
    anchor = t([[0.0, 0.0], [1.0, 1.0]])
    positive = t([[3.0, 4.0], [1.0, 2.0]])    # d(a, p) = 5 and 1
    negative = t([[0.0, 1.0], [4.0, 5.0]])    # d(a, n) = 1 and 5
    assert triplet_margin(anchor, positive, negative).item() == pytest.approx(((5 - 1 + 5) + (1 - 5 + 5)) / 2)
    # margin 1: the second triplet is already satisfied, relu(1 - 5 + 1) = 0
    assert triplet_margin(anchor, positive, negative, margin=1.0).item() == pytest.approx((5 - 1 + 1 + 0) / 2)


def test_triplet_margin_cosine_hand_values():
    anchor, positive, negative = t([[1.0, 0.0]]), t([[1.0, 1.0]]), t([[-1.0, 0.0]])
    # 1 - cos: d(a, p) = 1 - 1/sqrt(2), d(a, n) = 2
    expected = max(0.0, (1 - 1 / math.sqrt(2)) - 2 + 3.0)
    assert triplet_margin(anchor, positive, negative, margin=3.0, distance="cosine").item() == pytest.approx(expected)
    assert triplet_margin(anchor, positive, negative, margin=1.0, distance="cosine").item() == 0.0


def test_triplet_margin_gradients_including_a_zero_distance():
    anchor = t([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    positive = t([[1.0, 2.0], [1.0, 1.0]])     # row 0: the positive is the anchor itself
    negative = t([[1.0, 3.0], [2.0, 0.0]])
    triplet_margin(anchor, positive, negative).backward()
    assert_grad_flows(anchor)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplet_margin_matches_sentence_transformers(distance):
    losses = st_losses()
    torch.manual_seed(3)
    a, p, n = torch.randn(7, 4), torch.randn(7, 4), torch.randn(7, 4)
    metric = {"euclidean": losses.TripletDistanceMetric.EUCLIDEAN, "cosine": losses.TripletDistanceMetric.COSINE}
    margin = {"euclidean": 5.0, "cosine": 0.5}[distance]
    theirs = losses.TripletLoss(torch.nn.Identity(), distance_metric=metric[distance], triplet_margin=margin)
    expected = theirs.compute_loss_from_embeddings([a, p, n], None).item()
    assert expected > 0
    assert triplet_margin(a, p, n, margin=margin, distance=distance).item() == pytest.approx(expected, rel=1e-5)


def test_triplet_margin_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="^distance must be one of"):
        triplet_margin(x, x, x, distance="manhattan")
    with pytest.raises(ValueError, match="^negative must have the same shape as anchor"):
        triplet_margin(x, x, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="^positive must have shape"):
        triplet_margin(x, torch.zeros(3), x)


# --- softmax_classifier ----------------------------------------------------------------------------------------------

def _classifier(weight, bias):
    clf = torch.nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        clf.weight.copy_(t(weight))
        clf.bias.copy_(t(bias))
    return clf


def test_softmax_classifier_hand_values():
    # dim 1: u = 1, v = 3 gives features [1, 3, |1 - 3| = 2]; the classifier reads logits [u, |u - v|] = [1, 2]
    clf = _classifier([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [0.0, 0.0])
    u, v = t([[1.0], [2.0]]), t([[3.0], [2.0]])      # row 1: features [2, 2, 0], logits [2, 0]
    labels = torch.tensor([0, 1])
    row0 = -1.0 + math.log(math.exp(1.0) + math.exp(2.0))
    row1 = -0.0 + math.log(math.exp(2.0) + math.exp(0.0))
    assert softmax_classifier(u, v, labels, clf).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # the bias is applied: +5 on label 1 makes label 0 in row 0 much less likely
    biased = _classifier([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [0.0, 5.0])
    row0_biased = -1.0 + math.log(math.exp(1.0) + math.exp(7.0))
    row1_biased = -5.0 + math.log(math.exp(2.0) + math.exp(5.0))
    assert softmax_classifier(u, v, labels, biased).item() == pytest.approx((row0_biased + row1_biased) / 2, rel=1e-6)


def test_softmax_classifier_gradients_reach_classifier_and_embeddings():
    torch.manual_seed(4)
    clf = torch.nn.Linear(9, 3)
    u, v = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    softmax_classifier(u, v, torch.tensor([0, 1, 2, 1]), clf).backward()
    assert_grad_flows(u)
    assert_grad_flows(v)
    assert_grad_flows(clf.weight)


def test_softmax_classifier_matches_sentence_transformers():
    losses = st_losses()
    torch.manual_seed(5)
    u, v, labels = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 2, 1, 1, 0, 2])
    theirs = losses.SoftmaxLoss(_EmbeddingsAsModel(), embedding_dimension=4, num_labels=3)
    expected = theirs([{"emb": u}, {"emb": v}], labels).item()
    assert softmax_classifier(u, v, labels, theirs.classifier).item() == pytest.approx(expected, rel=1e-5)


def test_softmax_classifier_errors():
    u = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"^classifier takes 8 input features.*= 12"):
        softmax_classifier(u, u, torch.tensor([0, 1]), torch.nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"^labels must be class indices in \[0, 3\)"):
        softmax_classifier(u, u, torch.tensor([0, 3]), torch.nn.Linear(12, 3))
    with pytest.raises(ValueError, match="^labels must be an integer tensor"):
        softmax_classifier(u, u, torch.tensor([0.0, 1.0]), torch.nn.Linear(12, 3))
    with pytest.raises(ValueError, match="^labels must have one entry per row of u"):
        softmax_classifier(u, u, torch.tensor([0, 1, 2]), torch.nn.Linear(12, 3))
    with pytest.raises(ValueError, match="^v must have the same shape as u"):
        softmax_classifier(u, torch.zeros(2, 5), torch.tensor([0, 1]), torch.nn.Linear(12, 3))


# --- shared --------------------------------------------------------------------------------------------------------

def test_half_precision_inputs_are_computed_in_float32():
    scores = torch.tensor([[30.0, 10.0, 20.0]], dtype=torch.bfloat16)
    loss = info_nce(scores, torch.tensor([1]), temperature=0.05)   # logits up to 600: fine in float32
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-np_log_softmax(np.array([30.0, 10.0, 20.0]) / 0.05)[1], rel=1e-5)


# --- D2LLM: contrastive, pairwise rank and feature imitation ----------------------------------------------------------

def test_contrastive_imitation_hand_values_and_mask():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(3, 5)), rng.uniform(size=(3, 5))
    mask = np.zeros((3, 5), bool)
    mask[1, 2] = mask[2, 0] = True
    expected = 0.0
    for i in range(3):
        keep = ~mask[i]
        z = s[i, keep] / 0.1
        log_q = z - z.max() - np.log(np.exp(z - z.max()).sum())
        expected -= (t[i, keep] * log_q).sum() / 3
    got = contrastive_imitation(torch.tensor(s), torch.tensor(t), 0.1, torch.tensor(mask)).item()
    assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="probabilities in"):
        contrastive_imitation(torch.tensor(s), torch.tensor(t) * 3)


def test_ndcg_pairwise_imitation_hand_values():
    rng = np.random.default_rng(4)
    hard, teacher, easy = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), rng.normal(size=(2, 4))
    expected = 0.0
    for i in range(2):
        ranks = {h: r + 1 for r, h in enumerate(np.argsort(-teacher[i]))}
        for h in range(3):
            for e in range(4):
                w = abs(1 / np.log2(1 + ranks[h]) - 1 / np.log2(1 + 3 + e + 1))
                expected += w * np.log1p(np.exp(easy[i, e] - hard[i, h])) / 12 / 2
    got = ndcg_pairwise_imitation(torch.tensor(hard), torch.tensor(teacher), torch.tensor(easy)).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # the pair the teacher ranks first and the first easy one weigh most: raising that hard score lowers it most
    h = torch.tensor(hard, requires_grad=True)
    ndcg_pairwise_imitation(h, torch.tensor(teacher), torch.tensor(easy)).backward()
    assert int(torch.argmin(h.grad[0])) == int(np.argmax(teacher[0]))


def test_feature_imitation_hand_values_and_scale_invariance():
    rng = np.random.default_rng(5)
    u, v = rng.normal(size=(4, 3)), rng.normal(size=(4, 7))
    cu = (u / np.linalg.norm(u, axis=1, keepdims=True)) @ (u / np.linalg.norm(u, axis=1, keepdims=True)).T
    cv = (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T
    got = feature_imitation(torch.tensor(u), torch.tensor(v)).item()
    assert got == pytest.approx(((cu - cv) ** 2).mean(), rel=1e-5)
    assert feature_imitation(torch.tensor(u) * 5, torch.tensor(v)).item() == pytest.approx(got, rel=1e-5)
    assert feature_imitation(torch.tensor(u), torch.tensor(u)).item() == pytest.approx(0, abs=1e-7)
