"""`musp`: soft attention maps (non-negative, summing to 1 per pixel, the documented count), the part features and
area weights in the packed embedding, the regulariser, training on CPU, and official checkpoints (rebuilt below from
the structure of the official ResNet + soft partition head) loading with zero missing or unexpected keys and giving
the official embedding."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vreid.config import ConfigError, load_experiment
from vreid.eval.part_distance import unpack_parts
from vreid.models.musp import partition_product

from conftest import build_from_config, random_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def build(config: str = "synthetic", *overrides: str, num_classes: int = 6, device: str = "cpu"):
    return build_from_config("musp", config, *overrides, num_classes=num_classes, device=device)


batch = random_batch


def test_attention_maps_are_soft_non_negative_and_five():
    method, _ = build()
    method.eval()
    maps = method.attention_maps(batch()["images"])
    assert maps.shape == (6, 5, 4, 4)                      # 5 maps over the 4x4 layer4 map of a 64 px image
    assert bool((maps >= 0).all())
    torch.testing.assert_close(maps.sum(1), torch.ones(6, 4, 4))
    assert bool(((maps > 1e-3) & (maps < 1 - 1e-3)).any())   # soft: pixels shared between maps
    fmap = method.backbone.forward_features(batch()["images"])
    torch.testing.assert_close(maps, method.head.key(fmap).softmax(1))


def test_embedding_packs_four_parts_and_the_global_feature_with_area_weights():
    method, cfg = build()
    method.eval()
    assert cfg.eval.metric == "weighted_parts"
    images = batch()["images"]
    rows = method.embed(images)
    parts, weights = unpack_parts(rows)
    assert parts.shape == (6, 5, 512)                        # 4 kept parts + global, 512 channels
    torch.testing.assert_close(parts.norm(dim=2), torch.ones(6, 5))
    torch.testing.assert_close(weights[:, :4].sum(1), torch.ones(6))   # kept areas, L1-normalised
    torch.testing.assert_close(weights[:, 4], torch.full((6,), 0.25))  # global: 1 / kept maps
    # the areas are those of the first four attention maps (the fifth, insignificant one dropped)
    area = method.attention_maps(images).flatten(2).sum(2)[:, :4]
    torch.testing.assert_close(weights[:, :4], area / area.sum(1, keepdim=True))


def test_part_features_are_attention_weighted_sums_of_the_value_map():
    method, _ = build("synthetic", "model.channel_gate=false")
    method.eval()
    images = batch()["images"]
    fmap = method.backbone.forward_features(images)
    out = method.head(fmap)
    value = method.head.value(fmap).flatten(2)
    att = out.attention.flatten(2)
    for p in range(4):
        torch.testing.assert_close(out.parts[:, p], (value * att[:, p:p + 1]).sum(2))
    torch.testing.assert_close(out.global_feature, value.mean(2))


def test_uniform_attention_gives_equal_parts_and_the_largest_regulariser():
    maps = torch.full((2, 5, 4, 4), 0.2)
    assert partition_product(maps).item() == pytest.approx(2 * 16 * 0.2 ** 5)
    owned = F.one_hot(torch.randint(0, 5, (2, 4, 4)), 5).permute(0, 3, 1, 2).float()
    assert partition_product(owned).item() == 0.0


def test_trains_on_cpu_with_every_loss_and_the_ablation_drops_the_regulariser():
    method, _ = build()
    method.train()
    b = batch()
    losses = method.losses(method(b), b)
    assert set(losses) == {"ce", "triplet", "partition"}
    sum(losses.values()).backward()
    assert method.head.key.weight.grad is not None and method.head.key.weight.grad.abs().sum() > 0
    assert method.head.se.fc[0].weight.grad.abs().sum() > 0
    plain, _ = build("synthetic-no-reg")
    plain.train()
    assert "partition" not in plain.losses(plain(b), b)


def test_regulariser_gradient_sharpens_the_maps():
    """A step on the regulariser alone makes pixels more exclusively owned (lower product)."""
    method, _ = build("synthetic", "model.ce_weight=0", "model.triplet_weight=1")
    method.train()
    b = batch()
    with torch.no_grad():
        method.head.key.weight.mul_(1e-3)                   # start from nearly uniform maps
    opt = torch.optim.SGD(method.head.key.parameters(), lr=1e4)
    before = method(b)["partition"]
    before.backward()
    opt.step()
    assert method(b)["partition"].item() < before.item()


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="discard"):
        load_experiment("configs/musp/synthetic.yaml", ["model.discard=5"])
    with pytest.raises(ConfigError, match="eval.metric"):
        load_experiment("configs/musp/synthetic.yaml", ["eval.metric=cosine"])


# --- official checkpoints ---------------------------------------------------------------------------------------
# The official model (vehiclereid/models/resnet.py, ResNet with attn=True), rebuilt from its structure: torchvision
# ResNet-50 names at the top level, `key`, `value`, SELayer `c_.fc`, `neck` and `classifier` lists; its eval forward
# (last_computev3 + the normalisation in forward) and the distance of train_xent_tri.test.

class OfficialMusp(torch.nn.Module):
    def __init__(self, num_classes: int = 5, prototypes: int = 5, discard: int = 1, dim: int = 2048) -> None:
        super().__init__()
        from vreid.models.backbones.registry import create_backbone

        trunk = create_backbone("resnet50", last_stride=1)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(trunk, name))
        self.prototypes, self.discard = prototypes, discard
        self.key = torch.nn.Conv2d(dim, prototypes, 3, padding=1)
        self.value = torch.nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        width = dim * prototypes
        self.c_ = torch.nn.Module()
        self.c_.fc = torch.nn.Sequential(torch.nn.Linear(width, width // 16, bias=False), torch.nn.ReLU(),
                                         torch.nn.Linear(width // 16, width, bias=False), torch.nn.Sigmoid())
        count = prototypes + 1 - discard
        self.classifier = torch.nn.ModuleList([torch.nn.Linear(dim, num_classes, bias=False) for _ in range(count)])
        self.neck = torch.nn.ModuleList([torch.nn.BatchNorm1d(dim) for _ in range(count)])

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        bs, c, h, w = f.shape
        value = self.value(f).reshape(bs, c, -1)
        weights = F.softmax(self.key(f).reshape(bs, self.prototypes, -1).permute(0, 2, 1), dim=2)
        results = torch.bmm(value, weights) / h * w
        flat = results.reshape(bs, -1)
        results = (flat * self.c_.fc(flat)).reshape(bs, c, -1)
        areas = F.normalize(weights.sum(dim=1).reshape(bs, -1)[..., :-self.discard], p=1, dim=-1)
        parts = [r.squeeze(-1) for r in results.split(1, dim=-1)][:-self.discard]
        feats = [F.normalize(t) for t in parts + [value.mean(dim=-1)]]
        ratios = list(areas.unbind(1)) + [torch.full((bs,), 1 / (self.prototypes - self.discard))]
        return feats, ratios


def official_distance(q, g):
    """train_xent_tri.test: per-feature squared distances weighted by the L1-normalised area products."""
    (qf, qa), (gf, ga) = q, g
    d = torch.stack([torch.cdist(a, b).pow(2) for a, b in zip(qf, gf)], -1)
    w = F.normalize(torch.stack([a[:, None] * b[None] for a, b in zip(qa, ga)], -1), p=1, dim=-1)
    return (d * w).sum(-1)


def official_checkpoint(num_classes: int = 5):
    torch.manual_seed(3)
    model = OfficialMusp(num_classes)
    with torch.no_grad():   # every tensor away from its initial value, so a wrong mapping shows
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(t + 0.05 * torch.randn_like(t)) if "running_var" not in name else t.uniform_(0.5, 1.5)
    model.eval()
    return {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 90}, model


def test_the_official_layout_loads_with_zero_missing_or_unexpected_keys():
    from vreid.convert import CONVERTERS
    from vreid.convert.base import fit_to_model

    state, _ = official_checkpoint(num_classes=576)
    state = {k[len("module."):]: v for k, v in state["state_dict"].items()}
    method, cfg = build("veri776", num_classes=576, device="meta")
    converted = CONVERTERS.get("musp").convert(state, cfg.model)
    target = method.state_dict()
    assert set(converted.state_dict) == set(target)
    assert all(converted.state_dict[k].shape == v.shape for k, v in target.items())
    assert converted.num_classes == 576
    fit_to_model(converted, method, "fix")


def test_vreid_convert_writes_a_run_that_ranks_like_the_official_model(tmp_path):
    from vreid.convert.run import convert_checkpoint
    from vreid.engine.bundle import load_bundle
    from vreid.eval.distance import FeatureDistances

    state, official = official_checkpoint()
    path = tmp_path / "musp.pth"
    torch.save(state, path)
    cfg = load_experiment("configs/musp/veri776.yaml", ["data.height=64", "data.width=64"])
    report = convert_checkpoint("musp", path, cfg, tmp_path / "run")
    assert report.preprocessing.mean == (0.5, 0.5, 0.5)
    method = load_bundle(tmp_path / "run").eval()
    x = batch(64, ids=2, per_id=2)["images"]
    with torch.no_grad():
        ours = method.embed(x)
        feats, ratios = official(x)
    parts, weights = unpack_parts(ours)
    torch.testing.assert_close(parts, torch.stack(feats, 1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(weights, torch.stack(ratios, 1), atol=1e-5, rtol=1e-5)
    expected = official_distance((feats, ratios), (feats, ratios))
    torch.testing.assert_close(FeatureDistances(ours, ours, "weighted_parts").block(0, 4), expected,
                               atol=1e-4, rtol=1e-4)


def test_a_baseline_checkpoint_is_refused_with_the_reason():
    from vreid.convert import CONVERTERS
    from vreid.convert.base import ConversionError

    _, cfg = build("veri776", device="meta")
    with pytest.raises(ConversionError, match="soft partition"):
        CONVERTERS.get("musp").convert({"conv1.weight": torch.zeros(64, 3, 7, 7)}, cfg.model)


# --- the attention-maps view of the report --------------------------------------------------------------------------

def test_report_draws_musp_maps_and_leaves_a_method_without_maps_unchanged(tiny_world, finished_run, tmp_path):
    import re

    from conftest import tiny_overrides
    from vreid.engine.run import run_training
    from vreid.viz.folder_report import write_folder_report

    out = tmp_path / "musp"
    cfg = load_experiment("configs/musp/synthetic.yaml", tiny_overrides(tiny_world, out) + [
        "model.name=musp", "model.backbone.name=resnet_tiny_ibn_a", "schedule.epochs=1"])
    run_training(cfg)
    html = write_folder_report(out, queries=3).read_text()
    assert "<h2>Attention maps</h2>" in html and "5 maps per query" in html
    assert len(re.findall(r'<figure class="attention">', html)) == 3 * 5
    bot_folder, _ = finished_run
    plain = write_folder_report(bot_folder, tmp_path / "bot.html", queries=3).read_text()
    assert "Attention maps" not in plain and 'class="attention"' not in plain


def test_attention_overlays_follow_the_map(tmp_path):
    from PIL import Image

    from vreid.viz.report import attention_overlays

    path = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (100, 100, 100)).save(path)
    left = torch.zeros(1, 4, 4)
    left[0, :, :2] = 1.0                                    # attention on the left half only
    import base64
    import io

    uri = attention_overlays(str(path), left.numpy(), height=64)[0]
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")
    r_left, r_right = img.getpixel((4, 32))[0], img.getpixel((60, 32))[0]
    assert r_left > 200 and abs(r_right - 100) < 8         # red where the map is, the image where it is not
    with pytest.raises(ValueError, match="non-negative"):
        attention_overlays(str(path), -left.numpy())


def test_onnx_export_keeps_the_packed_rows_and_declares_the_distance(tiny_world, tmp_path):
    pytest.importorskip("onnxruntime")
    from test_export_onnx import make_run

    from vreid.export.to_onnx import export_onnx
    from vreid.gallery.embedders import load_embedder

    run = make_run(tmp_path / "run", tiny_world, "configs/musp/synthetic.yaml", [])
    report = export_onnx(run, tmp_path / "musp.onnx", log=lambda line: None)
    assert report.max_abs_diff <= 1e-4 and report.min_cosine > 0.9999   # parity on 16 images, batch axis dynamic
    embedder = load_embedder(str(tmp_path / "musp.onnx"))
    assert embedder.metric == "weighted_parts" and embedder.dim == 1 + 5 + 5 * 256
