"""Backbones (every registered one), the timm and CLIP families, and the reusable layers."""
import math

import pytest
import torch
import torchvision
from torch import nn

from vreid.models import BACKBONES, create_backbone
from vreid.models.backbones.resnet import IBN
from vreid.models.layers import CLASSIFIERS, GAP, POOLS, ArcFace, BNNeck, CosFace, GeM, make_pool
from vreid.registry import RegistryError

SMALL = [n for n in BACKBONES.names() if BACKBONES.meta(n).get("small")]
LARGE = [n for n in BACKBONES.names() if not BACKBONES.meta(n).get("small")]


def n_params(m: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in m.parameters())


@pytest.mark.parametrize("name", SMALL)
def test_small_backbone_forward_backward(name):
    torch.manual_seed(0)
    m = create_backbone(name)
    assert m.feature_layout == "map"
    out = m.forward_features(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, m.num_features, 4, 4)  # /16 with last stride 1
    out.mean().backward()
    assert m.conv1.weight.grad is not None and m.layer4[-1].conv2.weight.grad.abs().sum() > 0
    assert [s.__class__.__name__ for s in m.stages] == ["Sequential"] * 4


@pytest.mark.parametrize("name", LARGE)
def test_large_backbone_builds_on_meta(name):
    with torch.device("meta"):
        m = create_backbone(name)
    last = m.layer4[-1]
    out_conv = last.conv3 if hasattr(last, "conv3") else last.conv2
    assert m.num_features == out_conv.out_channels
    assert m.feature_layout == "map"


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d"])
def test_parameter_counts_match_torchvision(name):
    with torch.device("meta"):
        ours = create_backbone(name)
        tv = getattr(torchvision.models, name)()
        if name != "resnet34" and name + "_ibn_a" in BACKBONES:
            ibn = create_backbone(name + "_ibn_a")
            assert n_params(ibn) == n_params(ours)  # the split norm has as many affine parameters as the BN
    assert n_params(ours) == n_params(tv) - n_params(tv.fc)


def test_se_variant_adds_parameters():
    with torch.device("meta"):
        assert n_params(create_backbone("se_resnet101_ibn_a")) > n_params(create_backbone("resnet101_ibn_a"))


def test_last_stride_one_doubles_the_map():
    x = torch.randn(1, 3, 64, 64)
    s1 = create_backbone("resnet_tiny_ibn_a", last_stride=1).forward_features(x)
    s2 = create_backbone("resnet_tiny_ibn_a", last_stride=2).forward_features(x)
    assert s1.shape[-2:] == (4, 4) and s2.shape[-2:] == (2, 2)
    with pytest.raises(ValueError):
        create_backbone("resnet18", last_stride=3)


def test_ibn_a_layout_and_instance_norm_on_first_half():
    m = create_backbone("resnet18_ibn_a")
    for i, stage in enumerate(m.stages):
        for block in stage:
            if i < 3:
                assert isinstance(block.bn1, IBN)
                assert block.bn1.IN.num_features == block.bn1.BN.num_features == block.conv1.out_channels // 2
            else:
                assert isinstance(block.bn1, nn.BatchNorm2d)
    assert "layer1.0.bn1.IN.weight" in m.state_dict() and "layer1.0.bn1.BN.running_mean" in m.state_dict()
    ibn = m.layer1[0].bn1.eval()  # eval BN with fresh stats is the identity; IN normalises each image
    x = torch.randn(3, 64, 8, 8) * 5 + 2
    y = ibn(x)
    assert torch.allclose(y[:, :32].mean(dim=(2, 3)), torch.zeros(3, 32), atol=1e-4)
    assert torch.allclose(y[:, 32:], x[:, 32:], atol=1e-3)


def test_unknown_backbone_lists_names():
    with pytest.raises(RegistryError, match="resnet50_ibn_a"):
        create_backbone("resnet51")
    with pytest.raises(RegistryError, match="timm:<name>"):
        create_backbone("foo:bar")


def test_timm_family_maps_and_tokens():
    x = torch.randn(2, 3, 64, 64)
    cnn = create_backbone("timm:resnet18")
    assert cnn.feature_layout == "map" and cnn.forward_features(x).shape == (2, 512, 4, 4)
    assert create_backbone("timm:resnet18", last_stride=2).forward_features(x).shape == (2, 512, 2, 2)
    vit = create_backbone("timm:vit_tiny_patch16_224", img_size=64)
    assert vit.feature_layout == "tokens" and vit.forward_features(x).shape == (2, 17, vit.num_features)
    no_cls = create_backbone("timm:vit_tiny_patch16_224", img_size=64, class_token=False)
    tokens = no_cls.forward_features(x)
    assert tokens.shape == (2, 17, 192)  # the mean token is prepended
    assert torch.allclose(tokens[:, 0], tokens[:, 1:].mean(dim=1), atol=1e-5)


@pytest.mark.parametrize("name,size", [("vreid-tiny-vit", 32), ("vreid-tiny-rn", 64)])
def test_clip_family_tokens(name, size):
    m = create_backbone(f"clip:{name}")
    assert m.feature_layout == "tokens" and m.num_features == 32
    out = m.forward_features(torch.randn(2, 3, size, size))
    assert out.ndim == 3 and out.shape[0] == 2 and out.shape[2] == 32
    wide = m.forward_features(torch.randn(2, 3, 2 * size, size))  # non-square crops: position tables resized
    assert wide.shape[1] > out.shape[1]
    wide.mean().backward()


def test_clip_unprojected_width():
    m = create_backbone("clip:vreid-tiny-vit", project=False)
    assert m.num_features == 64 and m.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 17, 64)


def test_pools():
    assert {"gap", "gem", "gmp", "avgmax"} <= set(POOLS.names())
    x = torch.rand(2, 8, 4, 4) + 0.1
    assert torch.allclose(GeM(p=1.0)(x), GAP()(x), atol=1e-6)
    gem = make_pool("gem")
    assert gem.p.requires_grad and gem.p.item() == 3.0
    assert not make_pool("gem", learnable=False).p.requires_grad
    assert torch.allclose(make_pool("gmp")(x), x.amax(dim=(2, 3)))
    assert torch.allclose(make_pool("avgmax")(x), x.mean(dim=(2, 3)) + x.amax(dim=(2, 3)))
    assert (GeM(p=6.0)(x) > GAP()(x)).all()
    tokens = torch.randn(2, 5, 8)
    for name in POOLS.names():
        assert torch.equal(make_pool(name)(tokens), tokens[:, 0])
    with pytest.raises(RegistryError):
        make_pool("median")


def test_bnneck_bias_frozen():
    neck = BNNeck(8)
    assert torch.equal(neck.bn.weight.data, torch.ones(8)) and torch.equal(neck.bn.bias.data, torch.zeros(8))
    neck(torch.randn(4, 8) * 3).pow(2).sum().backward()
    assert neck.bn.bias.grad is None and neck.bn.weight.grad is not None


def test_linear_classifier_bias_free_small_init():
    clf = CLASSIFIERS.get("linear")(256, 500)
    assert [n for n, _ in clf.named_parameters()] == ["weight"]
    assert 0.0005 < clf.weight.std().item() < 0.002


@pytest.mark.parametrize("cls", [CosFace, ArcFace])
def test_margin_changes_target_logit_only(cls):
    torch.manual_seed(0)
    clf = cls(16, 10, scale=30.0, margin=0.3)
    x, labels = torch.randn(6, 16), torch.randint(0, 10, (6,))
    plain, margin = clf(x), clf(x, labels)
    target = torch.nn.functional.one_hot(labels, 10).bool()
    assert torch.equal(plain[~target], margin[~target])
    assert (margin[target] < plain[target]).all()
    cos = plain[target] / 30.0
    expected = cos - 0.3 if cls is CosFace else torch.cos(torch.acos(cos) + 0.3)
    assert torch.allclose(margin[target] / 30.0, expected, atol=1e-5)


def test_circle_and_registry():
    assert {"linear", "cosface", "arcface", "circle"} <= set(CLASSIFIERS.names())
    clf = CLASSIFIERS.get("circle")(16, 5, scale=30.0, margin=0.25)
    x, labels = torch.randn(4, 16), torch.tensor([0, 1, 2, 3])
    assert torch.allclose(clf(x), 30.0 * clf.cosine(x))
    out = clf(x, labels)
    out.sum().backward()
    assert out.shape == (4, 5) and clf.weight.grad is not None
