"""`hpgn`: the spatial graph (only spatial neighbours mix, the official normalisation), the pyramid's documented
scale sizes, the ablation, training on CPU and the config checks. Official checkpoints: tests/test_convert_hpgn.py."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vreid.config import ConfigError, load_experiment
from vreid.losses import CrossEntropyLabelSmooth, TripletLoss
from vreid.methods import DataInfo, build_method
from vreid.models.hpgn import (
    PyramidalGraphNetwork, SpatialGraphLayer, SpatialGraphNetwork, grid_adjacency, propagation_matrix,
    pyramid_sizes,
)

from conftest import build_from_config, random_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def build(config: str, *overrides: str, num_classes: int = 6, device: str = "cpu"):
    return build_from_config("hpgn", config, *overrides, num_classes=num_classes, device=device)


batch = random_batch


def random_bn_stats(module: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode with non-trivial running statistics: BN becomes a per-channel affine map (no batch coupling)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


def input_gradient(module: nn.Module, height: int, width: int, node: tuple[int, int], channels: int = 3):
    """|d output[:, :, node] / d input| summed over channels: (height, width)."""
    x = torch.randn(1, channels, height, width, requires_grad=True, generator=torch.Generator().manual_seed(2))
    module(x)[0, :, node[0], node[1]].sum().backward()
    return x.grad[0].abs().sum(0)


def manhattan_ball(height: int, width: int, node: tuple[int, int], radius: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (rows - node[0]).abs() + (cols - node[1]).abs() <= radius


# --- the spatial graph --------------------------------------------------------------------------------------------

def official_propagation(n: int) -> torch.Tensor:
    """The official genA + norm for an n x n map, restated: 4-neighbours row-major, D from column sums, D^-1 A + I."""
    a = torch.zeros(n * n, n * n)
    for i in range(n):
        for j in range(n):
            for r, c in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                if 0 <= r < n and 0 <= c < n:
                    a[i * n + j, r * n + c] = 1
    return torch.diag(1 / a.sum(0)) @ a + torch.eye(n * n)


@pytest.mark.parametrize("n", [2, 3, 4, 16])
def test_the_propagation_matrix_is_the_official_one(n):
    assert torch.equal(propagation_matrix(n, n), official_propagation(n))


def test_the_grid_has_4_neighbour_edges_and_the_degrees_weight_them():
    a = grid_adjacency(3, 4)  # row-major: node (r, c) = 4r + c
    assert torch.equal(a, a.T) and a.diagonal().sum() == 0
    assert a.sum(1).tolist() == [2, 3, 3, 2, 3, 4, 4, 3, 2, 3, 3, 2]
    assert a[5].nonzero().flatten().tolist() == [1, 4, 6, 9]  # (1, 1): up, left, right, down; no diagonals
    p = propagation_matrix(3, 4)
    assert p[0].tolist()[:5] == [1.0, 0.5, 0.0, 0.0, 0.5]  # corner: itself, then its 2 neighbours at 1/2
    assert torch.allclose(p.sum(1), torch.full((12,), 2.0))
    # column j aggregates node j: itself plus each neighbour i divided by deg(i)
    assert p[:, 5].tolist() == pytest.approx([0, 1 / 3, 0, 0, 1 / 3, 1, 1 / 4, 0, 0, 1 / 3, 0, 0])
    assert torch.equal(propagation_matrix(1, 1), torch.ones(1, 1))  # no neighbours: only itself


def test_a_spatial_graph_layer_aggregates_reweights_normalises_and_leaks():
    torch.manual_seed(0)
    layer = random_bn_stats(SpatialGraphLayer(3, 2, 3))
    x = torch.randn(2, 3, 2, 3)
    bn = layer.norm
    y = (x.flatten(2) @ propagation_matrix(2, 3)) * layer.weight
    y = (y - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + 1e-4) * bn.weight[:, None] + \
        bn.bias[:, None]
    with torch.no_grad():
        assert torch.allclose(layer(x), F.leaky_relu(y, 0.2).view(2, 3, 2, 3), atol=1e-6)
    assert layer.weight.abs().max() <= 1 / 6 ** 0.5 and layer.norm.eps == 1e-4


@pytest.mark.parametrize("node", [(0, 0), (2, 3), (4, 5)])
def test_a_spatial_graph_layer_mixes_a_node_only_with_its_spatial_neighbours(node):
    torch.manual_seed(0)
    layer = random_bn_stats(SpatialGraphLayer(3, 5, 6))
    grad = input_gradient(layer, 5, 6, node)
    assert torch.equal(grad > 0, manhattan_ball(5, 6, node, 1))  # the node and its 4-neighbours, nothing else


def test_stacked_layers_widen_the_neighbourhood_by_one_step_per_layer():
    torch.manual_seed(0)
    sgn = random_bn_stats(SpatialGraphNetwork(3, 7, 7, depth=3))
    assert torch.equal(input_gradient(sgn, 7, 7, (3, 3)) > 0, manhattan_ball(7, 7, (3, 3), 3))


def test_the_adjacency_is_fixed_by_default_and_trained_behind_the_flag():
    fixed, learnable = SpatialGraphLayer(4, 3, 3), SpatialGraphLayer(4, 3, 3, learnable_adjacency=True)
    assert "adjacency" not in fixed.state_dict() and not isinstance(fixed.adjacency, nn.Parameter)
    assert isinstance(learnable.adjacency, nn.Parameter) and learnable.state_dict()["adjacency"].shape == (9, 9)
    assert torch.equal(learnable.adjacency.detach(), fixed.adjacency)
    learnable(torch.randn(2, 4, 3, 3)).sum().backward()
    assert learnable.adjacency.grad.abs().sum() > 0
    # a trained adjacency may leave the 4-neighbourhood (the official code's graph after training)
    random_bn_stats(learnable)
    with torch.no_grad():
        learnable.adjacency.add_(0.1)
    assert (input_gradient(learnable, 3, 3, (0, 0), channels=4) > 0).all()


# --- the pyramid --------------------------------------------------------------------------------------------------

def test_the_official_pyramid_has_the_documented_sizes_and_parameters():
    method, _ = build("veri776", num_classes=576, device="meta")
    assert method.map_size == (16, 16) and method.backbone.num_features == 2048
    assert method.pyramid.sizes == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for sgn, nodes in zip(method.pyramid.scales, (256, 64, 16, 4)):
        assert len(sgn.layers) == 3 and all(layer.weight.shape == (2048, nodes) for layer in sgn.layers)
    weights = sum(layer.weight.numel() for sgn in method.pyramid.scales for layer in sgn.layers)
    assert weights == 3 * 2048 * (256 + 64 + 16 + 4)  # the re-weighting cost of the notes, about 2.1 M
    assert method.num_features == 512 and method.classifier["global"].weight.shape == (576, 256)


def test_non_square_maps_get_their_own_grids():
    assert pyramid_sizes(16, 8, (1, 2, 4, 8)) == [(16, 8), (8, 4), (4, 2), (2, 1)]
    method, _ = build("veri776", "data.width=128", device="meta")
    assert method.pyramid.sizes == [(16, 8), (8, 4), (4, 2), (2, 1)]
    assert method.pyramid.scales[3].layers[0].adjacency.shape == (2, 2)


def test_pooled_scales_equal_the_official_average_pooling_and_are_summed():
    torch.manual_seed(0)
    pgn = random_bn_stats(PyramidalGraphNetwork(3, (8, 8), (1, 2, 4)))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = sum(sgn(nn.AvgPool2d(k, k)(x) if k > 1 else x).mean(dim=(2, 3))
                       for sgn, k in zip(pgn.scales, (1, 2, 4)))
        assert torch.allclose(pgn(x), expected, atol=1e-6)


@pytest.mark.parametrize("config, sizes", [("synthetic", [(4, 4), (2, 2)]), ("synthetic-no-pyramid", [(4, 4)])])
def test_synthetic_and_ablation_scales(config, sizes):
    method, _ = build(config, device="meta")
    assert method.map_size == (4, 4) and method.pyramid.sizes == sizes and method.num_features == 512


def test_scales_that_repeat_a_map_size_are_named(caplog):
    with caplog.at_level(logging.WARNING, logger="vreid.methods.hpgn"):
        method, _ = build("synthetic", "model.pyramid_pools=[1,2,4,8]", device="meta")
    assert method.pyramid.sizes == [(4, 4), (2, 2), (1, 1), (1, 1)]
    assert "scale(s) 4 repeat" in caplog.text


# --- training -----------------------------------------------------------------------------------------------------

def test_forward_backward_losses_and_embedding_on_cpu():
    method, cfg = build("synthetic")
    method.train()
    b = batch()
    outputs = method(b)
    assert outputs["feat"].shape == (6, 512)
    assert outputs["logits_global"].shape == outputs["logits_pyramid"].shape == (6, 6)
    losses = method.losses(outputs, b)
    ce, tri = CrossEntropyLabelSmooth(0.1), TripletLoss(margin=1.2)
    expected_ce = 2.0 * (ce(outputs["logits_global"], b["labels"]) + ce(outputs["logits_pyramid"], b["labels"])) / 2
    assert torch.allclose(losses["ce"], expected_ce)
    assert torch.allclose(losses["triplet"], tri(outputs["feat"], b["labels"]))
    sum(losses.values()).backward()
    for sgn in method.pyramid.scales:
        assert all(layer.weight.grad.abs().sum() > 0 for layer in sgn.layers)
    assert method.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert method.global_reduction[0].weight.grad.abs().sum() > 0
    method.eval()
    emb = method.embed(b["images"])
    global_feat, pyramid_feat = method.branches(b["images"])
    assert torch.allclose(emb, F.normalize(torch.cat([global_feat, pyramid_feat], 1), dim=1))
    assert (global_feat >= 0).all() and (pyramid_feat >= 0).all()  # post-ReLU, as the official feature


def test_images_of_another_size_than_the_model_was_built_for_are_refused():
    method, _ = build("synthetic")
    with pytest.raises(ValueError, match="data.height"):
        method.eval().embed(torch.randn(1, 3, 96, 96))


def test_a_token_trunk_is_refused_at_build():
    cfg = load_experiment("configs/hpgn/synthetic.yaml", ["model.backbone.name=clip:vreid-tiny-vit"])
    with pytest.raises(ValueError, match=r"model\.backbone\.name"):
        build_method(cfg.model, DataInfo(num_classes=4, height=64, width=64))


@pytest.mark.parametrize("override, key", [
    ("model.pyramid_pools=[]", "model.pyramid_pools"),
    ("model.pyramid_pools=[1,1]", "model.pyramid_pools"),
    ("model.pyramid_pools=[0,2]", "model.pyramid_pools"),
    ("model.sgn_depth=0", "model.sgn_depth"),
    ("model.embedding_dim=0", "model.embedding_dim"),
    ("model.triplet_margin=0", "model.triplet_margin"),
    ("model.ce_weight=0 model.triplet_weight=0", "model.ce_weight"),
])
def test_bad_settings_are_config_errors_that_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_experiment("configs/hpgn/veri776.yaml", override.split())


def test_the_real_recipes_follow_the_official_code():
    cfg = load_experiment("configs/hpgn/veri776.yaml")
    assert (cfg.data.height, cfg.data.width, cfg.data.ids_per_batch, cfg.data.images_per_id) == (256, 256, 32, 4)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 3e-2, 0.9, 5e-4)
    s = cfg.schedule
    assert (s.epochs, s.warmup_epochs, s.warmup_factor, s.milestones) == (150, 10, 0.01, [50, 85, 120])
    assert cfg.eval.flip and cfg.model.backbone.name == "resnet50" and not cfg.model.learnable_adjacency
    assert load_experiment("configs/hpgn/vehicleid.yaml").data.mean == [0.391, 0.411, 0.411]


@pytest.mark.parametrize("learnable", [False, True])
def test_onnx_export_matches_pytorch(learnable, tiny_world, tmp_path):
    pytest.importorskip("onnxruntime")
    from test_export_onnx import make_run
    from vreid.export.to_onnx import export_onnx

    run = make_run(tmp_path / "run", tiny_world, "configs/hpgn/synthetic.yaml",
                   [f"model.learnable_adjacency={str(learnable).lower()}"])
    report = export_onnx(run, tmp_path / "hpgn.onnx", log=lambda line: None)
    assert report.embedding_dim == 512 and report.max_abs_diff < 1e-4
