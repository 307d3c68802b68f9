"""`vreid convert --from hpgn`: the official HPGN layout (muzishen/HPGN network.py, rebuilt below from its structure:
module names, shapes and forward) loads with zero missing or unexpected keys, and the converted embedding equals the
official forward."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_method_hpgn import official_propagation
from vreid.config import load_experiment
from vreid.convert import CONVERTERS, ConversionError
from vreid.convert.base import fit_to_model
from vreid.convert.hpgn import VEHICLEID_STATS, VERI776_STATS
from vreid.convert.run import convert_checkpoint
from vreid.engine.bundle import load_bundle
from vreid.methods import DataInfo, build_method
from vreid.models.backbones.registry import create_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


class OfficialSpatialGcn(nn.Module):
    """network.py `Spatial_GCN`: trainable n^2 x n^2 adjacency, (C, n^2) weight, BN eps 1e-4, LeakyReLU 0.2."""

    def __init__(self, in_features: int, n: int) -> None:
        super().__init__()
        self.adj = nn.Parameter(official_propagation(n))
        self.bn = nn.BatchNorm2d(in_features, eps=1e-04)
        self.relu = nn.LeakyReLU(0.2)
        self.weight = nn.Parameter(torch.empty(in_features, n ** 2).uniform_(-1 / n, 1 / n))
        self.in_features, self.n = in_features, n

    def forward(self, x):
        b = x.size(0)
        support = torch.bmm(x.view(b, self.in_features, -1), self.adj.expand(b, self.n ** 2, self.n ** 2))
        return self.relu(self.bn(torch.mul(support, self.weight).view(b, self.in_features, *x.shape[2:])))


class OfficialHpgn(nn.Module):
    """network.py `HPGN`: trunk `model`, 4 scales x 3 SGs (`spatial1` = 16x16 ... `spatial4` = 2x2), four 1x1
    reductions and four classifiers of which the forward uses two; the test feature is `predict`."""

    def __init__(self, trunk: nn.Module, channels: int, num_classes: int, feats: int = 256) -> None:
        super().__init__()
        for s, n in enumerate((16, 8, 4, 2), start=1):
            for layer in (1, 2, 3):
                setattr(self, f"spatial{s}_gcn{layer}", OfficialSpatialGcn(channels, n))
        self.ap1, self.ap2, self.ap3 = nn.AvgPool2d(2, 2), nn.AvgPool2d(4, 4), nn.AvgPool2d(8, 8)
        self.gap, self.gmp = nn.AdaptiveAvgPool2d((1, 1)), nn.AdaptiveMaxPool2d((1, 1))
        self.model = trunk
        for r in (1, 2, 3, 4):
            setattr(self, f"reduction_{r}", nn.Sequential(nn.Conv2d(channels, feats, 1, bias=False),
                                                          nn.BatchNorm2d(feats), nn.ReLU()))
            setattr(self, f"fc_id_256_{r}", nn.Linear(feats, num_classes))

    def sgn(self, s, x):
        for layer in (1, 2, 3):
            x = getattr(self, f"spatial{s}_gcn{layer}")(x)
        return self.gap(x)

    def forward(self, x):
        f1 = self.model(x)
        scales = (f1, self.ap1(f1), self.ap2(f1), self.ap3(f1))
        global_tri = self.reduction_1(self.gmp(f1)).squeeze(3).squeeze(2)
        gcn = sum(self.sgn(s, f) for s, f in zip((1, 2, 3, 4), scales))
        gcn_tri = self.reduction_2(gcn).squeeze(3).squeeze(2)
        return torch.cat([global_tri, gcn_tri], dim=1)


def randomised(module: nn.Module, seed: int = 3) -> nn.Module:
    """Every float tensor random (adjacencies too, as after training): running variances in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * (0.05 if t.ndim >= 2 else 0.2))
    return module.eval()


#: the official R50 layout at 1/8 of the widths (256 channels out): 256 px gives the official 16x16 map
NARROW = ("model.backbone.options={widths: [8, 16, 32, 64]}",)


def official_model(num_classes: int = 5) -> OfficialHpgn:
    torch.manual_seed(0)
    trunk = create_backbone("resnet50", widths=(8, 16, 32, 64))
    return randomised(OfficialHpgn(trunk, 256, num_classes))


def hpgn_config(*overrides: str):
    return load_experiment("configs/hpgn/veri776.yaml", list(overrides))


def converted_method(state: dict[str, torch.Tensor], cfg, num_classes: int):
    converted = CONVERTERS.get("hpgn").convert(state, cfg.model)  # sets model.learnable_adjacency first
    with torch.device("meta" if next(iter(state.values())).is_meta else "cpu"):
        method = build_method(cfg.model, DataInfo(num_classes=num_classes, height=256, width=256))
    return converted, method


def test_the_full_size_official_layout_loads_with_zero_missing_or_unexpected_keys():
    with torch.device("meta"):
        official = OfficialHpgn(create_backbone("resnet50"), 2048, 576)
    state = official.state_dict()
    assert {"model.layer4.2.bn3.running_var", "spatial1_gcn1.adj", "spatial4_gcn3.bn.num_batches_tracked",
            "reduction_2.0.weight", "fc_id_256_2.bias"} <= set(state)
    cfg = hpgn_config()
    assert not cfg.model.learnable_adjacency
    converted, method = converted_method(state, cfg, 576)
    assert cfg.model.learnable_adjacency
    target = method.state_dict()
    assert set(converted.state_dict) == set(target)
    assert all(converted.state_dict[k].shape == v.shape for k, v in target.items())
    dropped = {k for k in state if k.startswith(("reduction_3", "reduction_4", "fc_id_256_3", "fc_id_256_4"))}
    assert len(converted.state_dict) == len(state) - len(dropped)
    assert converted.num_classes == 576
    assert any("fc_id_256_3, fc_id_256_4, reduction_3, reduction_4" in n for n in converted.notes)
    fit_to_model(converted, method, "fix")  # raises on any missing / unexpected / mismatched tensor
    settings = CONVERTERS.get("hpgn").implied_settings(state)
    assert settings["model.pyramid_pools"] == [1, 2, 4, 8] and settings["model.sgn_depth"] == 3
    assert settings["model.embedding_dim"] == 256


def test_a_converted_official_checkpoint_gives_the_official_embedding():
    official = official_model()
    cfg = hpgn_config(*NARROW)
    converted, method = converted_method(official.state_dict(), cfg, 5)
    weights, _ = fit_to_model(converted, method, "fix")
    method.load_state_dict(weights, strict=True)
    method.eval()
    assert method.map_size == (16, 16)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = official(x)
        got = torch.cat(method.branches(x), dim=1)
    assert got.shape == expected.shape == (2, 512)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), (got - expected).abs().max()
    assert torch.allclose(method.embed(x), F.normalize(expected, dim=1), rtol=0, atol=1e-6)


def test_vreid_convert_reads_the_dataparallel_file_and_writes_a_run_that_embeds_like_the_official_model(tmp_path):
    official = official_model(num_classes=576)
    path = tmp_path / "model_150.pt"
    torch.save(nn.DataParallel(official).state_dict(), path)  # as main.py saves: keys under `module.`
    assert next(iter(torch.load(path, weights_only=True))).startswith("module.")
    report = convert_checkpoint("hpgn", path, hpgn_config(*NARROW), tmp_path / "run")
    assert report.preprocessing.mean == VERI776_STATS[0] and report.preprocessing.std == VERI776_STATS[1]
    method = load_bundle(tmp_path / "run")
    assert method.cfg.learnable_adjacency and isinstance(method.pyramid.scales[0].layers[0].adjacency, nn.Parameter)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = F.normalize(official(x), dim=1)
    assert torch.allclose(method.embed(x), expected, rtol=0, atol=1e-5)


def test_checkpoints_the_config_cannot_hold_are_errors_that_name_the_keys(tmp_path):
    state = official_model().state_dict()
    converter = CONVERTERS.get("hpgn")
    with pytest.raises(ConversionError, match="model.name=bot"):
        converter.convert(state, load_experiment("configs/bot/veri776.yaml").model)
    with pytest.raises(ConversionError, match="spatial1_extra"):
        converter.convert(dict(state, **{"spatial1_extra.weight": torch.zeros(2)}), hpgn_config().model)
    torch.save(state, tmp_path / "hpgn.pt")
    cfg = hpgn_config(*NARROW, "model.pyramid_pools=[1,2,4]")  # one scale fewer than the checkpoint
    with pytest.raises(ConversionError, match=r"unexpected \(21: pyramid\.scales\.3\.(.|\n)*checkpoint implies "
                                              r"model\.pyramid_pools=\[1, 2, 4, 8\]"):
        convert_checkpoint("hpgn", tmp_path / "hpgn.pt", cfg, tmp_path / "run")
    assert converter.preprocessing(state).mean == VEHICLEID_STATS[0]  # 5 classes: opt.py's default


def test_the_cli_lists_hpgn():
    from vreid.cli.convert import SOURCE_NAMES

    assert "hpgn" in SOURCE_NAMES and "hpgn" in CONVERTERS
    assert copy.deepcopy(CONVERTERS.get("hpgn")).methods == ("hpgn",)
