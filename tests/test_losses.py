"""Losses against values computed by hand or by plain loops."""
import math

import pytest
import torch

from vreid.losses import (
    CenterLoss, CrossEntropyLabelSmooth, SupConLoss, TripletLoss, hard_example_mining, pairwise_distance,
)


def test_label_smoothed_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]])
    labels = torch.tensor([0, 1])
    eps, k = 0.1, 3
    expected = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        z = math.log(sum(math.exp(v) for v in row))
        logp = [v - z for v in row]
        q = [(1 - eps) * (j == y) + eps / k for j in range(k)]
        expected += -sum(qj * lj for qj, lj in zip(q, logp))
    expected /= 2
    got = CrossEntropyLabelSmooth(epsilon=eps)(logits, labels)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert CrossEntropyLabelSmooth(0.0)(logits, labels).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), abs=1e-6)


# points on a line: ids 0 -> {0, 3}, ids 1 -> {1, 10}
FEATS = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def test_batch_hard_mining_picks_hardest_pairs():
    dist = pairwise_distance(FEATS, FEATS)
    ap, an, ip, ineg = hard_example_mining(dist, LABELS)
    assert ip.tolist() == [1, 0, 3, 2]
    assert ineg.tolist() == [2, 2, 0, 1]
    assert ap.tolist() == pytest.approx([3, 3, 9, 9], abs=1e-4)
    assert an.tolist() == pytest.approx([1, 2, 1, 7], abs=1e-4)


def test_triplet_hard_and_soft_margin_by_hand():
    # d_ap - d_an per anchor: 3-1, 3-2, 9-1, 9-7
    diffs = [2.0, 1.0, 8.0, 2.0]
    hard = sum(max(d + 0.3, 0.0) for d in diffs) / 4
    soft = sum(math.log1p(math.exp(d)) for d in diffs) / 4
    assert TripletLoss(margin=0.3)(FEATS, LABELS).item() == pytest.approx(hard, abs=1e-4)
    assert TripletLoss(margin=None)(FEATS, LABELS).item() == pytest.approx(soft, abs=1e-4)


def test_triplet_zero_when_separated_but_soft_still_positive():
    feats = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert TripletLoss(margin=0.3)(feats, labels).item() == 0.0
    assert TripletLoss(margin=None)(feats, labels).item() > 0.0


def test_triplet_gradients_finite_with_duplicates_and_normalize():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]], requires_grad=True)
    loss = TripletLoss(margin=0.3, normalize=True)(feats, LABELS)
    loss.backward()
    assert torch.isfinite(feats.grad).all()
    # one identity only: no negatives, loss 0 but still differentiable
    single = TripletLoss()(feats, torch.zeros(4, dtype=torch.long))
    assert single.item() == 0.0 and single.requires_grad


def test_pairwise_distance_metrics():
    x, y = torch.randn(5, 3), torch.randn(4, 3)
    assert torch.allclose(pairwise_distance(x, y), torch.cdist(x, y), atol=1e-4)
    assert torch.allclose(pairwise_distance(x, y, "sqeuclidean"), torch.cdist(x, y) ** 2, atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(x[:, None], y[None], dim=2)
    assert torch.allclose(pairwise_distance(x, y, "cosine"), 1 - cos, atol=1e-5)
    with pytest.raises(ValueError):
        pairwise_distance(x, y, "manhattan")


def test_center_loss_by_hand():
    loss = CenterLoss(num_classes=3, feat_dim=2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]]))
    feats = torch.tensor([[1.0, 0.0], [1.0, 3.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    expected = (1.0 + (0 + 4) + (1 + 4)) / 3
    assert loss(feats, labels).item() == pytest.approx(expected)
    loss(feats, labels).backward()
    assert loss.centers.grad is not None and loss.centers.grad.abs().sum() > 0


def _supcon_loop(f, labels, keys=None, key_labels=None, t=0.07):
    f = torch.nn.functional.normalize(f, dim=1).tolist()
    self_contrast = keys is None
    k = f if self_contrast else torch.nn.functional.normalize(keys, dim=1).tolist()
    kl = labels.tolist() if self_contrast else key_labels.tolist()
    terms = []
    for i, a in enumerate(f):
        others = [j for j in range(len(k)) if not (self_contrast and j == i)]
        sims = {j: sum(x * y for x, y in zip(a, k[j])) / t for j in others}
        log_denom = math.log(sum(math.exp(s) for s in sims.values()))
        pos = [j for j in others if kl[j] == labels[i].item()]
        if pos:
            terms.append(-sum(sims[j] - log_denom for j in pos) / len(pos))
    return sum(terms) / len(terms)


def test_supcon_matches_loop():
    torch.manual_seed(0)
    f = torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])  # id 2 has no positive: skipped
    for t in (0.07, 0.5):
        assert SupConLoss(temperature=t)(f, labels).item() == pytest.approx(_supcon_loop(f, labels, t=t), rel=1e-4)
    keys, key_labels = torch.randn(3, 4), torch.tensor([0, 1, 3])
    got = SupConLoss(temperature=0.5)(f, labels, keys, key_labels)
    assert got.item() == pytest.approx(_supcon_loop(f, labels, keys, key_labels, t=0.5), rel=1e-4)
