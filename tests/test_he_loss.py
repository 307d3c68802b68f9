"""The Hard-distance Elastic loss: closed form vs the boundary loss, batch-hard triplet as its one-pair case,
dictionary negatives, gradients."""
from __future__ import annotations

import pytest
import torch

from vreid.losses import TripletLoss, pairwise_distance
from vreid.losses.hard_elastic import HardElasticLoss, elastic_pair_terms, hard_elastic_loss


def boundary_loss_min(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """min over t of sum relu(d_p - t) + sum relu(t - d_n), by brute force over the breakpoints."""
    candidates = torch.cat([pos, neg])
    values = [(pos - t).clamp(min=0).sum() + (t - neg).clamp(min=0).sum() for t in candidates]
    return float(torch.stack(values).min())


@pytest.mark.parametrize("seed", range(5))
def test_he_equals_minimum_of_boundary_loss(seed):
    g = torch.Generator().manual_seed(seed)
    b, n = 12, 40
    dist = torch.rand(b, n, generator=g, dtype=torch.float64) * 2
    pos = torch.rand(b, n, generator=g) < 0.25
    neg = ~pos & (torch.rand(b, n, generator=g) < 0.8)
    pos[0], neg[0] = False, False
    pos[0, :3], neg[0, 3:] = True, True  # at least one anchor with 3 positives
    per_anchor = hard_elastic_loss(dist, pos, neg, reduction="none")
    for i in range(b):
        if pos[i].any() and neg[i].any():
            assert float(per_anchor[i]) == pytest.approx(boundary_loss_min(dist[i][pos[i]], dist[i][neg[i]]), abs=1e-9)
        else:
            assert float(per_anchor[i]) == 0.0


def test_elastic_pairs_count_adapts_to_distances():
    dist = torch.tensor([[0.9, 0.8, 0.1, 0.5, 0.85, 2.0, 3.0]])
    pos = torch.tensor([[True, True, True, False, False, False, False]])
    terms, valid = elastic_pair_terms(dist, pos, dist, ~pos)
    # positives descending 0.9, 0.8, 0.1; negatives ascending 0.5, 0.85, 2.0 -> pairs 0.4, 0, 0
    assert torch.allclose(terms, torch.tensor([[0.4, 0.0, 0.0]]))
    assert valid.all()
    # reductions: sum 0.4; one active pair -> mean_pairs 0.4; three positives -> mean_pos 0.4 / 3
    assert float(hard_elastic_loss(dist, pos, ~pos, reduction="sum")) == pytest.approx(0.4)
    assert float(hard_elastic_loss(dist, pos, ~pos, reduction="mean_pairs")) == pytest.approx(0.4)
    assert float(hard_elastic_loss(dist, pos, ~pos, reduction="mean_pos")) == pytest.approx(0.4 / 3)


@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_one_pair_is_batch_hard_triplet(margin):
    torch.manual_seed(0)
    feats = torch.randn(16, 8)
    labels = torch.arange(4).repeat_interleave(4)
    he = HardElasticLoss(margin=margin, max_pairs=1, reduction="mean_pairs")(feats, labels)
    tri = TripletLoss(margin=margin)(feats, labels)
    assert float(he) == pytest.approx(float(tri), rel=1e-5)
    # and the gradients agree
    a, b = feats.clone().requires_grad_(), feats.clone().requires_grad_()
    HardElasticLoss(margin=margin, max_pairs=1)(a, labels).backward()
    TripletLoss(margin=margin)(b, labels).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_dictionary_gives_negatives_never_positives():
    torch.manual_seed(1)
    feats = torch.randn(8, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = HardElasticLoss(reduction="sum")
    base = loss(feats, labels)
    # same-identity entries, however far or near, change nothing: no positives from the dictionary
    same_id = torch.cat([feats + 100.0, feats.clone()])
    assert torch.allclose(loss(feats, labels, same_id, labels.repeat(2)), base)
    # empty slots (label -1) are ignored
    assert torch.allclose(loss(feats, labels, torch.zeros(5, 4), torch.full((5,), -1)), base)
    # an other-identity entry on top of every anchor makes every anchor's hardest negative ~0
    near = feats.clone()
    with_dict = HardElasticLoss(reduction="none")
    terms = with_dict(feats, labels, near, (labels + 1) % 4)
    dist = pairwise_distance(feats, feats)
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same | torch.eye(8, dtype=torch.bool), -1).amax(1)
    assert torch.all(terms >= hardest_pos - 1e-3)


def test_memory_gets_no_gradient_and_features_do():
    torch.manual_seed(2)
    feats = torch.randn(8, 4, requires_grad=True)
    memory = torch.randn(32, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    HardElasticLoss()(feats, labels, memory, torch.randint(0, 6, (32,))).backward()
    assert memory.grad is None and feats.grad is not None and torch.isfinite(feats.grad).all()


def test_no_pairs_keeps_graph():
    feats = torch.randn(4, 4, requires_grad=True)
    loss = HardElasticLoss()(feats, torch.zeros(4, dtype=torch.long))  # one identity: no negatives
    loss.backward()
    assert float(loss.detach()) == 0.0


def test_bad_reduction_is_refused():
    with pytest.raises(ValueError, match="mean_pairs"):
        HardElasticLoss(reduction="max")


@pytest.mark.parametrize("max_pairs,normalize,metric", [(None, False, "euclidean"), (1, False, "euclidean"),
                                                         (None, True, "euclidean"), (None, False, "cosine")])
def test_dictionary_search_matches_the_dense_formula(max_pairs, normalize, metric):
    """The loss searches dictionary negatives without autograd; value and gradient equal the dense definition."""
    torch.manual_seed(3)
    labels = torch.arange(4).repeat_interleave(4)
    memory, memory_labels = torch.randn(200, 8) * 3, torch.randint(-1, 8, (200,))
    a = torch.randn(16, 8, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    loss = HardElasticLoss(margin=0.1, max_pairs=max_pairs, normalize=normalize, metric=metric)
    fast = loss(a, labels, memory, memory_labels)
    x, m = (torch.nn.functional.normalize(b, dim=1), torch.nn.functional.normalize(memory, dim=1)) if normalize \
        else (b, memory)
    same = labels[:, None] == labels[None, :]
    dist = torch.cat([pairwise_distance(x, x, metric), pairwise_distance(x, m, metric)], dim=1)
    pos = torch.cat([same & ~torch.eye(16, dtype=torch.bool), torch.zeros(16, 200, dtype=torch.bool)], dim=1)
    neg = torch.cat([~same, (memory_labels[None] != labels[:, None]) & (memory_labels[None] >= 0)], dim=1)
    dense = hard_elastic_loss(dist, pos, neg, margin=0.1, max_pairs=max_pairs)
    assert float(fast.detach()) == pytest.approx(float(dense.detach()), rel=1e-5)
    fast.backward()
    dense.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-5)
