"""`vreid convert`: FastReID checkpoints (their exact key layout, saved as FastReID saves them) become vreid runs
whose embeddings equal FastReID's own forward, and that `vreid eval` / `load_bundle` use like any run."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from conftest import tiny_overrides
from vreid.config import load_experiment
from vreid.convert import CONVERTERS, ConversionError
from vreid.convert.fastreid import STEM_NOTE, non_local_positions
from vreid.convert.run import convert_checkpoint
from vreid.data.transforms import build_test_transform
from vreid.engine.bundle import load_bundle
from vreid.engine.checkpoint import CheckpointError

# --- FastReID's Baseline, rebuilt from its structure (fastreid/modeling/backbones/resnet.py, layers/non_local.py,
# --- heads/embedding_head.py, meta_arch/baseline.py): its state_dict() is FastReID's key layout and shapes.


class FrIBN(nn.Module):
    def __init__(self, planes: int) -> None:
        super().__init__()
        self.half = planes // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        a, b = torch.split(x, self.half, 1)
        return torch.cat((self.IN(a.contiguous()), self.BN(b.contiguous())), 1)


class FrBottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, ibn: bool, stride: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = FrIBN(planes) if ibn else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.se = nn.Identity()  # WITH_SE off: no tensors
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class FrNonLocal(nn.Module):
    """FastReID's Non_local: inter_channels = reduc_ratio // reduc_ratio = 1, mean-normalised dot product."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.inter = 1
        self.g = nn.Conv2d(channels, self.inter, 1)
        self.W = nn.Sequential(nn.Conv2d(self.inter, channels, 1), nn.BatchNorm2d(channels))
        self.theta = nn.Conv2d(channels, self.inter, 1)
        self.phi = nn.Conv2d(channels, self.inter, 1)

    def forward(self, x):
        b = x.size(0)
        g = self.g(x).view(b, self.inter, -1).permute(0, 2, 1)
        theta = self.theta(x).view(b, self.inter, -1).permute(0, 2, 1)
        phi = self.phi(x).view(b, self.inter, -1)
        f = torch.matmul(theta, phi)
        y = torch.matmul(f / f.size(-1), g).permute(0, 2, 1).contiguous().view(b, self.inter, *x.shape[2:])
        return self.W(y) + x


class FrResNet(nn.Module):
    """`stem_pool`: "fastreid" is FastReID's MaxPool2d(3, 2, ceil_mode=True); "padded" is torchvision's (3, 2, 1)."""

    def __init__(self, ibn: bool, non_local: list[int], width: int = 64, layers=(3, 4, 6, 3),
                 stem_pool: str = "fastreid") -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = (nn.MaxPool2d(3, 2, ceil_mode=True) if stem_pool == "fastreid" else nn.MaxPool2d(3, 2, 1))
        for i, n in enumerate(layers):
            setattr(self, f"layer{i + 1}", self._make_layer(width * 2 ** i, n, 1 if i in (0, 3) else 2, ibn and i < 3))
        self.nl_idx = {}
        if any(non_local):  # WITH_NL: NL_1..NL_4 lists, the k-th placed after block NL_k_idx[k]
            for i, n in enumerate(non_local):
                setattr(self, f"NL_{i + 1}", nn.ModuleList(FrNonLocal(width * 2 ** i * 4) for _ in range(n)))
                self.nl_idx[i + 1] = sorted(layers[i] - (j + 1) for j in range(n))

    def _make_layer(self, planes, blocks, stride, ibn):
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
        out = [FrBottleneck(self.inplanes, planes, ibn, stride, down)]
        self.inplanes = planes * 4
        out += [FrBottleneck(self.inplanes, planes, ibn) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            counter = 0
            for i, block in enumerate(getattr(self, f"layer{stage}")):
                x = block(x)
                if counter < len(self.nl_idx.get(stage, [])) and i == self.nl_idx[stage][counter]:
                    x = getattr(self, f"NL_{stage}")[counter](x)
                    counter += 1
        return x


class FrGeMP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * 3)

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x.clamp(min=1e-6).pow(self.p), 1).pow(1.0 / self.p)


class FrEmbeddingHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, gem: bool) -> None:
        super().__init__()
        self.pool_layer = FrGeMP() if gem else nn.AdaptiveAvgPool2d(1)
        self.bottleneck = nn.Sequential(nn.BatchNorm2d(dim))  # BNNeck, bias frozen
        self.weight = nn.Parameter(torch.normal(0, 0.01, (num_classes, dim)))

    def forward(self, features):  # eval: the BNNeck feature
        return self.bottleneck(self.pool_layer(features))[..., 0, 0]


class FrBaseline(nn.Module):
    """Normalises 0-255 RGB inside the model with the pixel_mean / pixel_std buffers."""

    def __init__(self, backbone: FrResNet, heads: FrEmbeddingHead, buffers: bool = True) -> None:
        super().__init__()
        self.backbone, self.heads = backbone, heads
        mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
        self.register_buffer("pixel_mean", mean.view(1, -1, 1, 1), persistent=buffers)
        self.register_buffer("pixel_std", std.view(1, -1, 1, 1), persistent=buffers)

    def forward(self, images255):
        return self.heads(self.backbone((images255 - self.pixel_mean) / self.pixel_std))


def fastreid_model(*, ibn=True, non_local=(0, 2, 3, 0), gem=True, num_classes=576, width=64, buffers=True,
                   stem_pool="fastreid", seed=0) -> FrBaseline:
    """A FastReID Baseline with random but well-scaled weights: BN statistics from one batch, then perturbed."""
    torch.manual_seed(seed)
    model = FrBaseline(FrResNet(ibn, list(non_local), width, stem_pool=stem_pool),
                       FrEmbeddingHead(width * 32, num_classes, gem), buffers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average: the statistics of the calibration batch
            if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        if gem:
            model.heads.pool_layer.p.fill_(3.4)
        # images of different brightness: BN variances across the batch are not tiny, embeddings stay O(1)
        model.train()(torch.rand(8, 3, 64, 64) * 255 * torch.linspace(0.2, 1.0, 8).view(-1, 1, 1, 1))
    return model.eval()


def save_fastreid(model: nn.Module, path) -> str:
    """As FastReID's Checkpointer saves: {"model": state_dict, ...}."""
    torch.save({"model": model.state_dict(), "iteration": 1000}, path)
    return str(path)


def sbs_config(*overrides: str, height: int = 64):
    return load_experiment("configs/sbs/veri776.yaml", [f"data.height={height}",
                                                        f"data.width={height}", *overrides])


def image_pair(size: int, seed: int = 1) -> tuple[torch.Tensor, Image.Image]:
    """(FastReID input: 0-255 float, the PIL image) for one random RGB picture."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1)[None].float(), Image.fromarray(array)


def embedding_parity(source: FrBaseline, run, x255: torch.Tensor, pil: Image.Image) -> dict[str, float]:
    """Max differences: model (the same normalised tensors into both), input (vreid's transform vs FastReID's
    in-model normalisation: float rounding) and end to end (each with its own preprocessing; the rounding of the
    input, amplified by the random test network, relative to the embedding's size). FastReID ranks by cosine, so
    its side is L2-normalised, as vreid's bot/sbs embedding is."""
    method = load_bundle(run)
    normalised = (x255 - source.pixel_mean) / source.pixel_std

    def fastreid(x):
        return nn.functional.normalize(source.heads(source.backbone(x)), dim=1)

    with torch.no_grad():
        expected = nn.functional.normalize(source(x255), dim=1)
        model = (method.embed(normalised) - fastreid(normalised)).abs().max().item()
    cfg = load_experiment(None, [f"data.height={method.info.height}", f"data.width={method.info.width}",
                                 f"data.mean={list(method.info.mean)}", f"data.std={list(method.info.std)}"])
    vreid_input = build_test_transform(cfg.data)(pil)[None]
    with torch.no_grad():
        got = method.embed(vreid_input)
        model = max(model, (got - fastreid(vreid_input)).abs().max().item())
    end = (got - expected).abs().max().item()
    return {"model": model, "input": (vreid_input - normalised).abs().max().item(),
            "end_to_end": end, "end_to_end_relative": end / expected.abs().max().item()}


# --- key map and parity


def test_non_local_blocks_follow_the_last_residual_blocks_in_order():
    keys = [f"backbone.layer2.{i}.conv1.weight" for i in range(4)] + \
           [f"backbone.layer3.{i}.conv1.weight" for i in range(6)] + \
           [f"backbone.NL_2.{j}.g.weight" for j in range(2)] + [f"backbone.NL_3.{j}.g.weight" for j in range(3)]
    assert non_local_positions(keys) == {("2", 0): 2, ("2", 1): 3, ("3", 0): 3, ("3", 1): 4, ("3", 2): 5}


def test_fastreid_sbs_r50_ibn_full_size_matches_fastreids_forward(tmp_path):
    """Real ResNet-50-IBN-a + non-local [0, 2, 3, 0] + GeM(p) + BNNeck + 576-class head; stem as vreid's."""
    source = fastreid_model(stem_pool="fastreid")
    ckpt = save_fastreid(source, tmp_path / "veri_sbs_R50-ibn.pth")
    keys = set(torch.load(ckpt, weights_only=True)["model"])
    assert {"backbone.NL_2.1.W.1.running_var", "backbone.layer1.0.bn1.IN.weight", "heads.bottleneck.0.weight",
            "heads.pool_layer.p", "heads.weight", "pixel_mean"} <= keys
    report = convert_checkpoint("fastreid", ckpt, sbs_config(), tmp_path / "run")
    assert report.tensors == len(keys) - 2  # everything but the two normalisation buffers, nothing dropped
    assert report.notes == [STEM_NOTE]  # nothing dropped or filled in
    assert report.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    method = load_bundle(tmp_path / "run")
    assert not any("pixel" in k for k in method.state_dict())  # normalised once: in the preprocessing only
    assert method.classifier.weight.shape == (576, 2048)

    x255, pil = image_pair(64)
    parity = embedding_parity(source, tmp_path / "run", x255, pil)
    print(f"\nsbs R50-ibn parity: {parity}")
    # the model is exact on the same input; end to end only the input's float rounding (2e-7) differs, which a
    # random 50-layer network amplifies by a seed-dependent factor: bounded loosely
    assert parity["model"] < 1e-5 and parity["input"] < 1e-6 and parity["end_to_end_relative"] < 1e-3


def test_the_stem_pool_option_is_fastreids():
    """vreid's ResNet with stem_pool=ceil pools as FastReID v1 does; the default (padded) does not."""
    from vreid.models.backbones.resnet import STEM_POOLS

    x = torch.randn(1, 4, 33, 33)
    fastreid = nn.MaxPool2d(3, 2, ceil_mode=True)
    assert torch.equal(STEM_POOLS["ceil"]()(x), fastreid(x))
    assert not torch.equal(STEM_POOLS["padded"]()(x)[..., 1:, 1:], fastreid(x)[..., :-1, :-1])


def test_fastreid_bagtricks_r50_without_buffers_uses_fastreids_defaults(tmp_path):
    """BoT(R50): plain ResNet-50 (narrowed: same key names), GAP, no saved pixel buffers (newer FastReID)."""
    source = fastreid_model(ibn=False, non_local=(0, 0, 0, 0), gem=False, num_classes=13164, width=8,
                            buffers=False, stem_pool="fastreid")
    ckpt = save_fastreid(source, tmp_path / "vehicleid_bot_R50.pth")
    cfg = load_experiment("configs/bot/vehicleid.yaml", ["model.backbone.name=resnet50", "model.pooling=gap",
                                                         "model.backbone.options.widths=[8,16,32,64]",
                                                         "data.height=64", "data.width=64"])
    report = convert_checkpoint("fastreid", ckpt, cfg, tmp_path / "run")
    assert "default" in report.preprocessing.origin
    parity = embedding_parity(source, tmp_path / "run", *image_pair(64, seed=3))
    print(f"\nbot R50 parity: {parity}")
    assert parity["model"] < 1e-5 and parity["end_to_end_relative"] < 1e-3


def test_fixed_p_gem_gets_fastreids_default_exponent(tmp_path):
    source = fastreid_model(ibn=True, non_local=(0, 0, 0, 0), gem=False, width=8, stem_pool="fastreid")
    ckpt = save_fastreid(source, tmp_path / "bot.pth")
    cfg = load_experiment("configs/bot/veriwild.yaml", ["model.pooling=gem", "model.backbone.name=resnet50_ibn_a",
                                                        "model.backbone.options.widths=[8,16,32,64]"])
    report = convert_checkpoint("fastreid", ckpt, cfg, tmp_path / "run")
    assert any("pool.p" in n for n in report.notes)
    assert load_bundle(tmp_path / "run").pool.p.item() == 3.0


# --- what does not fit is refused, with the keys and the fix


@pytest.fixture(scope="module")
def narrow_sbs(tmp_path_factory):
    path = tmp_path_factory.mktemp("fastreid") / "sbs.pth"
    return save_fastreid(fastreid_model(width=8, stem_pool="fastreid"), path)


NARROW = "model.backbone.options.widths=[8,16,32,64]"


SBS = ("configs/sbs/veri776.yaml",)
BOT = ("configs/bot/veri776.yaml", "model.pooling=gem")


@pytest.mark.parametrize("config, overrides, words", [
    (BOT, [], ["unexpected", "backbone.layer2.non_local.2.g.weight", "model.name='sbs'"]),
    (SBS, ["model.non_local=[0,1,3,0]"], ["unexpected", "model.non_local=[0, 2, 3, 0]"]),
    (SBS, ["model.non_local_reduction=2"], ["shape mismatches", "non_local_reduction=None"]),
    (SBS, ["model.pooling=gap"], ["unexpected", "pool.p", "model.pooling='gem'"]),
    (SBS, ["model.neck_feat=before"], ["neck_feat=after"]),
    (("configs/moreid/veri776.yaml", NARROW), [], ["bot or sbs"]),
])
def test_a_config_that_does_not_fit_is_refused_with_the_keys_and_the_fix(narrow_sbs, tmp_path, config, overrides,
                                                                          words):
    cfg = load_experiment(config[0], [*config[1:], NARROW, *overrides])
    with pytest.raises(ConversionError) as err:
        convert_checkpoint("fastreid", narrow_sbs, cfg, tmp_path / "run")
    for word in words:
        assert word in str(err.value)
    assert not (tmp_path / "run").exists()


def test_tensors_without_a_place_are_listed(tmp_path):
    sd = fastreid_model(width=8, stem_pool="fastreid").state_dict()
    sd["heads.bottleneck.1.weight"] = torch.ones(256)  # EMBEDDING_DIM reduction: conv at 0, BN at 1
    path = tmp_path / "reduced.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(ConversionError, match="heads.bottleneck.1.weight"):
        convert_checkpoint("fastreid", path, sbs_config(NARROW), tmp_path / "run")


def test_a_folder_holding_a_run_is_kept_unless_overwrite(narrow_sbs, tmp_path):
    cfg = sbs_config(NARROW)
    convert_checkpoint("fastreid", narrow_sbs, cfg, tmp_path / "run")
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(ConversionError, match="--overwrite"):
        convert_checkpoint("fastreid", narrow_sbs, cfg, tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    convert_checkpoint("fastreid", narrow_sbs, cfg, tmp_path / "run", overwrite=True)
    assert json.loads((tmp_path / "run" / "conversion.json").read_text())["source"] == "fastreid"


# --- the CLI, and the run in `vreid eval`


def test_cli_source_names_are_the_registry():
    from vreid.cli.convert import SOURCE_NAMES

    assert tuple(CONVERTERS.names()) == SOURCE_NAMES


def test_cli_writes_a_run_that_eval_uses(narrow_sbs, tiny_world, tmp_path):
    from vreid.cli.main import app
    from vreid.engine.run import run_evaluation

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["convert", "--from", "fastreid", narrow_sbs, "--config",
                                      "configs/sbs/veri776.yaml", NARROW,
                                      "data.height=32", "data.width=32", "-o", str(run)])
    assert result.exit_code == 0, result.output
    assert "mean [0.485, 0.456, 0.406]" in result.output
    info = json.loads((run / "model_info.json").read_text())
    assert info["data"]["num_classes"] == 576 and info["method"]["name"] == "sbs"

    again = CliRunner().invoke(app, ["convert", "--from", "fastreid", narrow_sbs, "--config",
                                     "configs/sbs/veri776.yaml", "-o", str(run)])
    assert again.exit_code != 0 and "error:" in again.output and "--overwrite" in again.output

    cfg = load_experiment(None, tiny_overrides(tiny_world, tmp_path / "unused"))
    results = run_evaluation(cfg, run, output_dir=tmp_path / "eval")
    assert 0.0 <= results["mAP"] <= 1.0 and not math.isnan(results["mAP"])


def test_a_foreign_pth_given_to_eval_names_vreid_convert(narrow_sbs, tiny_world, tmp_path):
    from vreid.cli.main import app

    with pytest.raises(CheckpointError, match="vreid convert --from fastreid"):
        load_bundle(narrow_sbs)
    result = CliRunner().invoke(app, ["eval", "configs/bot/veri776.yaml", f"data.root={tiny_world}",
                                      "-c", narrow_sbs, "-o", str(tmp_path / "eval")])
    assert result.exit_code != 0
    assert "error:" in result.output and "vreid convert" in result.output
    assert "Traceback" not in result.output


# --- MBR (videturfortuna/vehicle_reid_itsc2023 `MBR_model`), rebuilt from models/models.py: IBN-Net trunk up to
# --- layer3 (`modelup2L3.model`), layer4 branches (`modelL4.model`), `finalblock.finalblocks` and `LAI`


class MbrClassBlock(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.add_block = nn.Sequential(nn.BatchNorm1d(dim))
        self.classifier = nn.Sequential(nn.Linear(dim, num_classes, bias=False))

    def forward(self, x):
        return self.add_block(x)  # the feature; the logits are training-only


def _grouped(stage: nn.Sequential, groups: int) -> nn.Sequential:
    """The official grouped layer4: every conv split into `groups` (stride 1), new weights."""
    for block in stage:
        for name in ("conv1", "conv2", "conv3"):
            conv = getattr(block, name)
            setattr(block, name, nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, 1, conv.padding,
                                           groups=groups, bias=False))
        if block.downsample is not None:
            conv = block.downsample[0]
            block.downsample[0] = nn.Conv2d(conv.in_channels, conv.out_channels, 1, 1, groups=groups, bias=False)
    return stage


class OfficialMhsa(nn.Module):
    """The official MHSA: q, k, v 1x1 convs with bias, rel_h (1, n, d, 1, H) + rel_w (1, n, d, W, 1) flattened to
    r (n, d, HW); energy = q^T k + r^T q (so r_i . q_j), softmax over the last axis, out = v A^T; no scaling."""

    def __init__(self, dims, size, heads=4):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Conv2d(dims, dims, 1) for _ in range(3))
        self.rel_h = nn.Parameter(torch.randn(1, heads, dims // heads, 1, size))
        self.rel_w = nn.Parameter(torch.randn(1, heads, dims // heads, size, 1))

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = (f(x).view(b, self.heads, c // self.heads, -1) for f in (self.query, self.key, self.value))
        r = (self.rel_h + self.rel_w).view(1, self.heads, c // self.heads, -1).permute(0, 1, 3, 2)
        energy = q.permute(0, 1, 3, 2) @ k + r @ q
        return (v @ energy.softmax(-1).permute(0, 1, 3, 2)).view(b, c, h, w)


class OfficialBoTBlock(nn.Module):
    """Bottleneck_Transformer: conv1-bn1-relu, conv2 = Sequential(MHSA), bn2-relu, conv3-bn3, + shortcut (1x1 conv
    with bias + BN where the width changes, else empty), relu."""

    def __init__(self, c_in, planes, size):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Sequential(OfficialMhsa(planes, size))
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
        self.shortcut = nn.Sequential()
        if c_in != 4 * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, 4 * planes, 1), nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        out = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class OfficialConvMhsa2G(nn.Module):
    """Conv_MHSA_2G: a dense 3x3 conv on the first half of the channels, one MHSA (`MHSA_1`) on the second."""

    def __init__(self, channels, size):
        super().__init__()
        self.conv2 = nn.Conv2d(channels // 2, channels // 2, 3, 1, 1, bias=False)
        self.MHSA_1 = OfficialMhsa(channels // 2, size)

    def forward(self, x):
        h = x.shape[1] // 2
        return torch.cat((self.conv2(x[:, :h]), self.MHSA_1(x[:, h:])), 1)


class MbrOfficial(nn.Module):
    """`branches` of "R50" (layer4 copy, stride 2) and "BoT" (three BoT blocks), or one `groups`-grouped layer4
    (stride 1; `hybrid`: conv2 = Conv_MHSA_2G); LBS: even blocks ClassBlocks, odd blocks bare BNs; LAI indexed by
    cam * n_views + view; `x2g`: two grouped copies, the second sees swapped halves."""

    def __init__(self, width=8, branches=("R50", "R50"), groups=0, num_classes=576, n_cams=0, n_views=0, x2g=False,
                 hybrid=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        r = FrResNet(True, [0, 0, 0, 0], width, stem_pool="padded")  # IBN-Net resnet50_ibn_a: padded stem pool
        self.modelup2L3 = nn.Module()
        self.modelup2L3.model = nn.Sequential(r.conv1, r.bn1, nn.ReLU(), r.maxpool, r.layer1, r.layer2, r.layer3)
        self.modelL4 = nn.Module()
        dim, size = width * 32, 4  # layer4 output width; the layer3 map of a 64 x 64 image is 4 x 4
        if groups:
            first = _grouped(copy.deepcopy(r.layer4), groups)
            if hybrid:
                for block in first:
                    block.conv2 = OfficialConvMhsa2G(block.conv2.in_channels, size)
            stages = [first, copy.deepcopy(first)] if x2g else [first]
        else:
            stages = []
            for kind in branches:
                if kind == "R50":
                    stage = copy.deepcopy(r.layer4)
                    stage[0].conv2.stride = stage[0].downsample[0].stride = (2, 2)
                else:
                    stage = nn.Sequential(*(OfficialBoTBlock(dim // 2 if i == 0 else dim, dim // 4, size)
                                            for i in range(3)))
                stages.append(stage)
        self.modelL4.model = nn.ModuleList(stages)
        self.x2g, self.groups = x2g, max(groups, 1)
        self.finalblock = nn.Module()
        n_blocks = groups * (int(x2g) + 1) if groups else len(branches)  # n_groups * (len(["2x"]) + 1) for 2X2G
        self.finalblock.finalblocks = nn.ModuleList(
            MbrClassBlock(dim // self.groups, num_classes) if k % 2 == 0 else nn.BatchNorm1d(dim // self.groups)
            for k in range(n_blocks))
        self.n_views = n_views
        if n_cams:
            self.finalblock.LAI = nn.Parameter(torch.randn(len(stages), n_cams * n_views, dim))
        self.calibrate()

    def calibrate(self):
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.momentum = None
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
                if isinstance(m, OfficialMhsa):  # small weights keep the un-scaled softmax away from one-hot
                    for p in m.parameters():
                        p.mul_(0.1)
            images = torch.rand(8, 3, 64, 64) * torch.linspace(0.2, 1.0, 8).view(-1, 1, 1, 1)
            self.train()(images, torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long))
        self.eval()

    def forward(self, x, cam, view):
        mix = self.modelup2L3.model(x)
        ffs = []
        for i, branch in enumerate(self.modelL4.model):
            h = mix.shape[1] // 2
            out = branch(torch.cat((mix[:, h:], mix[:, :h]), 1) if self.x2g and i > 0 else mix)
            emb = out.mean(dim=(2, 3))
            if hasattr(self.finalblock, "LAI"):
                emb = emb + self.finalblock.LAI[i, cam * self.n_views + view, :]
            size = emb.shape[1] // self.groups
            for j in range(self.groups):
                ffs.append(self.finalblock.finalblocks[i + j](emb[:, size * j:size * (j + 1)]))
        return torch.cat([nn.functional.normalize(f, dim=1) for f in ffs], dim=1)


MBR_ARCHS = {
    "r50-2b": (dict(branches=("R50", "R50"), n_cams=3, n_views=2),
               ["model.metadata=camera+viewpoint", "model.metadata_cameras=3", "model.metadata_viewpoints=2"]),
    "baseline": (dict(branches=("R50",)), []),
    "mbr-4g": (dict(groups=4), []),
    "mbr-r50-2x2g": (dict(groups=2, x2g=True), []),
    "mbr-4b": (dict(branches=("R50", "R50", "BoT", "BoT"), n_cams=3, n_views=2),
               ["model.metadata=camera+viewpoint", "model.metadata_cameras=3", "model.metadata_viewpoints=2"]),
    "hybrid-4b": (dict(branches=("R50", "R50", "BoT", "BoT")), []),
    "mbr-2x2g": (dict(groups=2, x2g=True, hybrid=True), []),
    "mbr-bot-4g": (dict(groups=4, hybrid=True), []),
}


@pytest.mark.parametrize("arch", sorted(MBR_ARCHS))
def test_mbr_architectures_match_the_official_forward(arch, tmp_path):
    kwargs, overrides = MBR_ARCHS[arch]
    source = MbrOfficial(**kwargs)
    path = tmp_path / "best_mAP.pt"
    torch.save(source.state_dict(), path)
    cfg = load_experiment(f"configs/mbr/archs/{arch}.yaml", [NARROW, "data.height=64", "data.width=64", *overrides])
    report = convert_checkpoint("mbr", path, cfg, tmp_path / "run")
    method = load_bundle(tmp_path / "run")
    assert method.info.mean == (0.5, 0.5, 0.5) and method.info.num_classes == 576
    cams, views = torch.tensor([2, 0]), torch.tensor([1, 0])
    x = (torch.rand(2, 3, 64, 64) - 0.5) / 0.5  # the official transforms normalise outside the model
    with torch.no_grad():
        expected = source(x, cams, views)
        got = method.embed(x, camera_ids=cams, viewpoints=views)
    diff = (got - expected).abs().max().item()
    print(f"\nmbr {arch} parity: max |diff| {diff:.2e} ({report.notes})")
    assert got.shape == expected.shape and diff < 1e-5


def test_mbr_position_table_names_follow_the_axes():
    """The official rel_w runs along the map's rows: after the swap, a row-only table changes rows in both."""
    from vreid.convert.mbr import branch_tensor
    from vreid.models.branches import RelPosMHSA

    official = OfficialMhsa(8, 4, heads=2)
    ours = RelPosMHSA(8, (4, 4), heads=2)
    state = dict(branch_tensor(f"0.conv2.0.{k}", v, "bot_stack") for k, v in official.state_dict().items())
    ours.load_state_dict({k.removeprefix("0.mhsa."): v for k, v in state.items()})
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        assert torch.allclose(ours(x), official(x), atol=1e-5)
        ours.position = "paper"
        assert not torch.allclose(ours(x), official(x), atol=1e-3)   # the transposed term is another model


def test_mbr_attention_with_the_paper_position_term_is_refused(tmp_path):
    path = tmp_path / "mbr4b.pt"
    torch.save(MbrOfficial(branches=("R50", "R50", "BoT", "BoT")).state_dict(), path)
    cfg = load_experiment("configs/mbr/archs/mbr-4b.yaml", [NARROW, "data.height=64", "data.width=64"])
    cfg.model.branches[2].options["position"] = "paper"
    with pytest.raises(ConversionError, match="position"):
        convert_checkpoint("mbr", path, cfg, tmp_path / "run")
