"""MBR (multi-branch, Loss-Branch-Split): every named architecture, branch blocks, loss routing, metadata, training."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vreid.config import load_experiment
from vreid.config.loader import ConfigError, build
from vreid.methods import DataInfo, build_method
from vreid.methods.mbr import MbrConfig
from vreid.models import create_backbone
from vreid.models.branches import RelPosMHSA, build_branch, trunk_info

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ROOT / "configs" / "mbr" / "archs"
TINY = DataInfo(num_classes=6, num_cameras=4, num_viewpoints=8, height=32, width=32)
# embeddings x size on the tiny trunk (layer4 width 256) and at full size (ResNet-50-IBN-a, 2048), as documented
LAYOUT = {"baseline": (1, 256, 2048), "r50-2b": (2, 256, 2048), "mbr-4b": (4, 256, 2048),
          "hybrid-4b": (4, 256, 2048), "mbr-4g": (4, 64, 512), "mbr-2g": (2, 128, 1024),
          "mbr-2x2g": (4, 128, 1024), "mbr-r50-2x2g": (4, 128, 1024), "mbr-bot-4g": (4, 64, 512)}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def arch(name: str, **overrides) -> MbrConfig:
    extra = [f"{k}={v}" for k, v in overrides.items()]
    return load_experiment(ARCHS / f"{name}.yaml", ["model.backbone.name=resnet_tiny_ibn_a", *extra]).model


def batch(n_ids: int = 3, k: int = 2, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = n_ids * k
    return {"images": torch.randn(n, 3, size, size, generator=g), "labels": torch.arange(n_ids).repeat_interleave(k),
            "camera_ids": torch.arange(n) % 4, "viewpoints": torch.arange(n) % 8}


def test_every_named_architecture_has_a_config():
    assert {p.stem for p in ARCHS.glob("*.yaml")} == set(LAYOUT)


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_architecture_forward_backward_embed(name):
    torch.manual_seed(0)
    method = build_method(arch(name), TINY)
    b = batch()
    losses = method.losses(method(b), b)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    count, dim, _ = LAYOUT[name]
    assert method.embedding_dims == [dim] * count
    method.eval()
    feats = method.embed(b["images"], b["camera_ids"], b["viewpoints"])
    assert feats.shape == (6, count * dim)
    # every part is unit length, so the whole feature has norm sqrt(count)
    assert torch.allclose(feats.norm(dim=1), torch.full((6,), count ** 0.5), atol=1e-4)


@pytest.mark.parametrize("name", ["mbr-4b", "mbr-4g"])
def test_full_size_feature_and_parameters(name):
    info = DataInfo(num_classes=576, height=256, width=256)
    with torch.device("meta"):
        method = build_method(arch(name, **{"model.backbone.name": "resnet50_ibn_a"}), info)
    count, _, dim = LAYOUT[name]
    assert method.embedding_dims == [dim] * count
    params = sum(p.numel() for p in method.parameters())
    assert params < 15e6 if name == "mbr-4g" else params > 55e6  # 4G is far smaller than 4B (docs/methods/lbs.md)


@pytest.mark.parametrize("kind,options", [("grouped_layer4", {"groups": 4}), ("grouped_mhsa", {"groups": 2}),
                                          ("grouped_mhsa", {"groups": 4, "attention_groups": 2})])
def test_grouped_output_group_depends_only_on_its_input_group(kind, options):
    torch.manual_seed(0)
    trunk = trunk_info(create_backbone("resnet_tiny_ibn_a"), 32, 32)
    branch = build_branch(kind, trunk, **options)
    groups = options["groups"]
    x = torch.randn(2, trunk.in_channels, *trunk.resolution, requires_grad=True)
    out = branch(x)
    cin, cout = trunk.in_channels // groups, trunk.out_channels // groups
    for g in range(groups):
        (grad,) = torch.autograd.grad(out[:, g * cout:(g + 1) * cout].sum(), x, retain_graph=True)
        per_group = grad.abs().sum(dim=(0, 2, 3)).view(groups, cin).sum(dim=1)
        assert per_group[g] > 0
        assert torch.all(per_group[torch.arange(groups) != g] == 0), (g, per_group)


def test_grouped_filters_are_slices_of_the_pretrained_ones():
    trunk = trunk_info(create_backbone("resnet_tiny_ibn_a"), 32, 32)
    dense = trunk.layer4[0].conv1.weight  # basic block: 3x3, 128 -> 256
    first = build_branch("grouped_layer4", trunk, groups=4, init="first")[0].conv1.weight
    own = build_branch("grouped_layer4", trunk, groups=4, init="own")[0].conv1.weight
    assert torch.equal(first, dense[:, :32])
    assert torch.equal(own[64:128], dense[64:128, 32:64])


def test_layer4_copy_keeps_weights_and_takes_the_stride():
    trunk = trunk_info(create_backbone("resnet_tiny_ibn_a"), 32, 32)
    x = torch.randn(1, trunk.in_channels, 4, 4)
    s1, s2 = build_branch("layer4", trunk, last_stride=1), build_branch("layer4", trunk, last_stride=2)
    assert torch.equal(s1[0].conv1.weight, trunk.layer4[0].conv1.weight)
    assert s1(x).shape[-1] == 4 and s2(x).shape[-1] == 2
    assert s1[0].conv1.weight.data_ptr() != trunk.layer4[0].conv1.weight.data_ptr()  # a copy, trained apart


def test_channel_roll_swaps_the_halves_for_the_second_copy():
    trunk = trunk_info(create_backbone("resnet_tiny_ibn_a"), 32, 32)
    rolled = build_branch("grouped_layer4", trunk, groups=2, input_roll=0.5)
    x = torch.randn(2, trunk.in_channels, 4, 4)
    rolled.eval()
    swapped = torch.cat(x.chunk(2, dim=1)[::-1], dim=1)
    assert torch.allclose(rolled(x), rolled.branch(swapped))


def test_mhsa_runs_at_another_map_size():
    attn = RelPosMHSA(16, (4, 4), heads=4)
    assert attn(torch.randn(2, 16, 4, 4)).shape == (2, 16, 4, 4)
    assert attn(torch.randn(2, 16, 6, 3)).shape == (2, 16, 6, 3)


def _grad_owners(method, loss) -> set[str]:
    method.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {n for n, p in method.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_lbs_routes_ce_and_triplet_to_their_own_embeddings():
    torch.manual_seed(0)
    method = build_method(arch("mbr-4b"), TINY)
    b = batch()
    losses = method.losses(method(b), b)
    assert set(losses) == {"ce_0", "triplet_1", "ce_2", "triplet_3"}
    assert [h.classifier is not None for h in method.heads] == [True, False, True, False]
    ce = _grad_owners(method, losses["ce_0"] + losses["ce_2"])
    tri = _grad_owners(method, losses["triplet_1"] + losses["triplet_3"])
    for owners, mine, other in ((ce, (0, 2), (1, 3)), (tri, (1, 3), (0, 2))):
        assert all(any(n.startswith(f"branches.{i}.") for n in owners) for i in mine)
        assert not any(n.startswith((f"branches.{i}.", f"heads.{i}.")) for i in other for n in owners)
        assert any(n.startswith("backbone.") for n in owners)  # the shared trunk learns from both
    assert any(n.startswith("heads.0.") for n in ce) and not any(n.startswith("heads.") for n in tri)


def test_classical_mode_puts_both_losses_on_every_embedding():
    method = build_method(arch("hybrid-4b"), TINY)
    b = batch()
    losses = method.losses(method(b), b)
    assert set(losses) == {f"{k}_{i}" for k in ("ce", "triplet") for i in range(4)}
    assert method.heads[1].classifier is not None


def test_loss_weights_and_mean_losses():
    method = build_method(arch("mbr-4g"), TINY)
    b = batch()
    out = method(b)
    plain = method.losses(out, b)
    method.cfg.mean_losses = True
    mean = method.losses(out, b)
    assert torch.allclose(mean["ce_0"], plain["ce_0"] / 2) and torch.allclose(mean["triplet_3"], plain["triplet_3"] / 2)
    raw = method.id_loss(out["logits_2"], b["labels"])
    assert torch.allclose(plain["ce_2"], 0.4 * raw)


@pytest.mark.parametrize("mode", ["camera", "viewpoint", "camera+viewpoint"])
def test_metadata_changes_only_the_indexed_camera_or_view(mode):
    torch.manual_seed(0)
    method = build_method(arch("mbr-4g", **{"model.metadata": mode}), TINY).eval()
    views = 8
    size = {"camera": 4, "viewpoint": views, "camera+viewpoint": 4 * views}[mode]
    assert method.metadata_parameters() == size * 256  # one row of 256 per index, one grouped branch
    b = batch(4, 2)
    cams, vps = torch.tensor([0, 1, 2, 3, 1, 1, -1, 1]), torch.tensor([0, 5, 5, 2, 3, 5, 5, -1])
    base = method.embed(b["images"], cams, vps)
    assert torch.equal(base, method.embed(b["images"]))  # zero-initialised: no effect yet
    row = {"camera": 1, "viewpoint": 5, "camera+viewpoint": 1 * views + 5}[mode]
    with torch.no_grad():
        method.metadata[0][row] = 1.0
    after = method.embed(b["images"], cams, vps)
    changed = (after - base).abs().sum(dim=1) > 1e-6
    expected = {"camera": (cams == 1), "viewpoint": (vps == 5),
                "camera+viewpoint": (cams == 1) & (vps == 5)}[mode]
    assert torch.equal(changed, expected)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="yields 4 embeddings"):
        build_method(build(MbrConfig, {"backbone": {"name": "resnet_tiny_ibn_a"},
                                       "branches": [{"kind": "grouped_layer4", "options": {"groups": 4}}]}), TINY)
    with pytest.raises(ConfigError, match="at least one loss"):
        build(MbrConfig, {"branches": [{"kind": "layer4", "embeddings": [{}]}]})
    with pytest.raises(ConfigError, match="kind"):
        build(MbrConfig, {"branches": [{"kind": "layer5"}]})


def test_trunk_freeze_hook():
    method = build_method(arch("mbr-4b", **{"model.freeze_trunk_epochs": 2}), TINY)
    (hook,) = method.hooks()
    assert hook.epochs == 2 and hook.modules == [method.backbone]


def test_tiny_training_run_and_bundle(tiny_world, tmp_path):
    from conftest import tiny_overrides

    from vreid.engine.bundle import load_bundle
    from vreid.engine.run import run_training

    cfg = load_experiment(ROOT / "configs" / "mbr" / "synthetic.yaml",
                          tiny_overrides(tiny_world, tmp_path, **{"model.name": "mbr", "schedule.epochs": 1,
                                                                  "model.freeze_trunk_epochs": 1,
                                                                  "train.steps_per_epoch": 3}))
    results = run_training(cfg)
    assert 0.0 <= results["mAP"] <= 1.0
    method = load_bundle(tmp_path)
    assert method.metadata is not None and len(method.embedding_dims) == 4
    assert (tmp_path / "metrics.csv").read_text().count("triplet_3") >= 1
