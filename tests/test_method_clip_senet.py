"""CLIP-SENet: forward/backward with a tiny random CLIP tower, CLIP weight files, position interpolation, AFEM groups,
SEM freezing and learning rates, side information, SupCon against hand-computed values, a tiny training run."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from vreid.config import load_experiment
from vreid.config.loader import build
from vreid.config.schema import OptimConfig
from vreid.engine.optim import build_optimizer
from vreid.fileio import atomic_path
from vreid.losses import SupConLoss
from vreid.methods import DataInfo, build_method
from vreid.methods.clip_senet import ClipSenetConfig
from vreid.models.backbones.open_clip_models import _resize_grid, build_tiny_clip
from vreid.models.semantic import AFEM, ClipSemanticEncoder
from vreid.models.side_info import SideInfoEmbedding

ROOT = Path(__file__).resolve().parents[1]
INFO = DataInfo(num_classes=4, num_cameras=3, height=48, width=48)


def make(seed: int = 0, info: DataInfo = INFO, **cfg) -> torch.nn.Module:
    base = {"backbone": {"name": "resnet_tiny_ibn_a"}, "semantic": {"model": "vreid-tiny-vit"},
            "afem": {"groups": 8}, "side_info": {"camera": True, "viewpoint": True}}
    for key, value in cfg.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    torch.manual_seed(seed)
    return build_method(build(ClipSenetConfig, base), info)


def batch(size: int = 48) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"images": torch.randn(8, 3, size, size, generator=g), "labels": torch.arange(4).repeat_interleave(2),
            "camera_ids": torch.tensor([0, 1, 2, 0, -1, 1, 2, 0]), "viewpoints": torch.tensor([0, 7, -1, 3, 2, 2, 5, 1])}


def save(sd: dict, path: Path) -> Path:
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)
    return path


def test_forward_backward_embed():
    m = make().train()
    b = batch()
    out = m(b)
    assert out["feat"].shape == (8, 256) and out["logits"].shape == (8, 4)
    losses = m.losses(out, b)
    assert set(losses) == {"ce", "supcon"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for part in ("backbone", "semantic", "fusion", "afem", "side_info"):
        grads = [p.grad for p in getattr(m, part).parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), part
    assert m.side_info.camera.weight.grad.abs().sum() > 0  # zero-initialised, yet it learns
    m.eval()
    e = m.embed(b["images"], b["camera_ids"], b["viewpoints"])
    assert e.shape == (8, 256) and torch.isfinite(e).all()


def test_ablation_switches_build_only_their_parts():
    base = make(semantic={"enabled": False}, afem={"enabled": False}, side_info={"camera": False, "viewpoint": False})
    assert base.semantic is None and base.fusion is None and base.afem is None and base.side_info is None
    sem = make(afem={"enabled": False}, side_info={"camera": False, "viewpoint": False})
    assert sem.semantic is not None and sem.afem is None and sem.side_info is None
    wild = make(side_info={"camera": True, "viewpoint": False})
    assert wild.side_info.camera is not None and wild.side_info.viewpoint is None
    with pytest.raises(Exception, match="afem.enabled needs semantic"):
        make(semantic={"enabled": False})
    for m in (base, sem, wild):
        b = batch()
        sum(m.losses(m(b), b).values()).backward()


def test_side_info_is_zero_at_start_and_ignores_unknown_ids():
    side = SideInfoEmbedding(6, num_cameras=3, num_viewpoints=8)
    assert side(torch.tensor([0, 2]), torch.tensor([1, 7]), 2).abs().sum() == 0
    with torch.no_grad():
        side.camera.weight.fill_(1.0)
        side.viewpoint.weight.fill_(2.0)
    out = side(torch.tensor([0, -1, 9, 1]), torch.tensor([-1, 3, 0, 8]), 4)
    assert out[:, 0].tolist() == [1.0, 2.0, 2.0, 1.0]  # -1 and out-of-table ids add nothing


def test_open_clip_and_openai_state_dicts_give_identical_outputs(tmp_path):
    torch.manual_seed(3)
    full = build_tiny_clip("vreid-tiny-vit").eval()
    with torch.no_grad():  # values that fp16 holds exactly, so OpenAI's half-precision file carries the same numbers
        for p in full.parameters():
            p.copy_(p.half().float())
    open_clip_file = save(full.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    openai = {k: v.half() for k, v in full.state_dict().items()}
    openai.update(input_resolution=torch.tensor(32), context_length=torch.tensor(16), vocab_size=torch.tensor(128))
    openai_file = save(openai, tmp_path / "ViT-tiny.pt")

    a = make(seed=0, semantic={"pretrained": str(open_clip_file)}).eval()
    b = make(seed=0, semantic={"pretrained": str(openai_file)}).eval()
    for m in (a, b):
        report = m.semantic.pretrained_report
        assert report.missing == [] and report.mismatched == [] and report.ignored > 0  # text tower set aside
    x = batch()
    with torch.no_grad():
        assert torch.equal(a.semantic(x["images"]), b.semantic(x["images"]))
        assert torch.equal(a.embed(x["images"], x["camera_ids"]), b.embed(x["images"], x["camera_ids"]))
        # at CLIP's own size, the module is CLIP's image encoder on CLIP-normalised pixels
        sem = a.semantic
        img = torch.randn(2, 3, 32, 32)
        assert torch.allclose(sem(img), full.encode_image(sem.to_clip_input(img)), atol=1e-5)


def test_renormalisation_maps_reid_statistics_to_clip_statistics():
    sem = ClipSemanticEncoder("vreid-tiny-vit", input_mean=(0.5, 0.5, 0.5), input_std=(0.25, 0.25, 0.25))
    pixels = torch.rand(1, 3, 4, 4)
    clip_mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    clip_std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    assert torch.allclose(sem.to_clip_input((pixels - 0.5) / 0.25), (pixels - clip_mean) / clip_std, atol=1e-6)


def test_position_interpolation_keeps_cls_and_stays_finite():
    pos = torch.randn(1 + 4 * 4, 64)
    resized = _resize_grid(pos, (4, 4), (10, 6))
    assert resized.shape == (1 + 60, 64) and torch.equal(resized[0], pos[0])  # class-token position untouched
    assert torch.equal(_resize_grid(pos, (4, 4), (4, 4)), pos)
    sem = ClipSemanticEncoder("vreid-tiny-vit").eval()
    with torch.no_grad():
        for h, w in ((80, 48), (320 // 4, 320 // 4), (32, 32)):
            out = sem(torch.randn(2, 3, h, w))
            assert out.shape == (2, 32) and torch.isfinite(out).all()
        # the resize switch feeds CLIP its own size instead
        fixed = ClipSemanticEncoder("vreid-tiny-vit", input_size=(32, 32)).eval()
        fixed.load_state_dict(sem.state_dict())
        img = torch.randn(2, 3, 32, 32)
        assert torch.allclose(fixed(img), sem(img))


@pytest.mark.parametrize("variant", ["group_scalar", "branches"])
@pytest.mark.parametrize("groups", [4, 8, 32])
def test_afem_has_exactly_g_group_weights(groups, variant):
    afem = AFEM(32, 256, groups=groups, variant=variant)
    assert afem.group_weights.shape == (groups,)
    assert [n for n, _ in afem.named_parameters() if "group" in n] == ["group_weights"]
    assert afem(torch.randn(4, 32)).shape == (4, 256)


def test_afem_group_scalar_is_residual_plus_scaled_groups():
    afem = AFEM(8, 12, groups=3).eval()
    with torch.no_grad():
        afem.group_weights.copy_(torch.tensor([0.0, 1.0, -1.0]))
        t = torch.randn(5, 8)
        h = afem.f_linear(t)
        expected = torch.cat([h[:, :4], 2 * h[:, 4:8], 0 * h[:, 8:]], dim=1)
        assert torch.allclose(afem(t), expected)
    with pytest.raises(ValueError, match="do not divide"):
        AFEM(8, 12, groups=5)


def test_frozen_sem_is_unchanged_after_a_step_and_lr_factor_applies():
    m = make(semantic={"freeze": True}).train()
    assert not m.semantic.training
    opt = build_optimizer(m.param_groups(OptimConfig(lr=1e-2)), OptimConfig(lr=1e-2))
    sem_before = {k: v.clone() for k, v in m.semantic.state_dict().items()}
    fusion_before = m.fusion.weight.clone()
    b = batch()
    sum(m.losses(m(b), b).values()).backward()
    opt.step()
    for k, v in m.semantic.state_dict().items():
        assert torch.equal(v, sem_before[k]), k
    assert not torch.equal(m.fusion.weight, fusion_before)

    trainable = make(semantic={"lr_factor": 0.1})
    groups = trainable.param_groups(OptimConfig(lr=1e-3))
    sem_ids = {id(p) for p in trainable.semantic.parameters()}
    for g in groups:
        in_sem = {id(p) in sem_ids for p in g["params"]}
        assert len(in_sem) == 1
        assert math.isclose(g["lr"], 1e-4 if in_sem.pop() else 1e-3)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in trainable.parameters() if p.requires_grad)


def test_supcon_matches_hand_computed_values():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # every anchor: one positive at cosine 1, two negatives at 0 -> log(e^(1/t) + 2) - 1/t
    assert math.isclose(SupConLoss(temperature=1.0)(z, torch.tensor([0, 0, 1, 1])).item(),
                        math.log(math.e + 2) - 1, rel_tol=1e-6)  # 0.551445
    assert math.isclose(SupConLoss(temperature=0.5)(z, torch.tensor([0, 0, 1, 1])).item(),
                        math.log(math.e ** 2 + 2) - 2, rel_tol=1e-6)  # 0.239545
    # labels 0,0,0,1: anchors 1-2 have positives at cosine 1 and 0 -> L - 1/2; anchor 3 has two at 0 -> L;
    # anchor 4 has no positive and is skipped. L = log(e + 2).
    big_l = math.log(math.e + 2)
    value = SupConLoss(temperature=1.0)(z, torch.tensor([0, 0, 0, 1])).item()
    assert math.isclose(value, (2 * (big_l - 0.5) + big_l) / 3, rel_tol=1e-6)  # 1.218111


def test_method_losses_use_the_configured_temperature():
    m = make(supcon_temperature=0.2).train()
    b = batch()
    out = m(b)
    expected = SupConLoss(temperature=0.2)(out["feat"], b["labels"])
    assert torch.allclose(m.losses(out, b)["supcon"], expected)


def test_configs_load():
    for path in sorted((ROOT / "configs" / "clip_senet").glob("*.yaml")):
        cfg = load_experiment(path)
        assert cfg.model.name == "clip_senet", path
    veri = load_experiment(ROOT / "configs/clip_senet/veri776.yaml")
    assert (veri.data.height, veri.data.ids_per_batch, veri.data.images_per_id, veri.seed) == (320, 16, 8, 3407)
    assert veri.eval.rerank == "kreciprocal" and veri.schedule.epochs == 24 and veri.model.afem.groups == 32


def test_tiny_training_run(tiny_world, tmp_path):
    from vreid.engine.bundle import load_bundle
    from vreid.engine.run import load_data, run_training

    cfg = load_experiment(None, tiny_overrides(
        tiny_world, tmp_path, **{"model.name": "clip_senet", "model.semantic.model": "vreid-tiny-vit",
                                 "model.afem.groups": 8, "model.side_info.camera": True,
                                 "model.side_info.viewpoint": True, "eval.metric": "cosine",
                                 "schedule.epochs": 1, "train.steps_per_epoch": 3}))
    dataset = load_data(cfg)
    results = run_training(cfg, dataset=dataset)
    assert 0.0 <= results["mAP"] <= 1.0
    method = load_bundle(tmp_path)
    images = torch.randn(2, 3, 32, 32)
    again = make(info=method.info, **{"afem": {"groups": 8}})
    again.load_state_dict(method.state_dict())
    again.eval()
    cams = torch.tensor([0, 1])
    assert torch.allclose(method.embed(images, cams), again.embed(images, cams))


def _clip_config_names() -> list[str]:
    from vreid.models.backbones.open_clip_models import CLIP_CONFIGS

    return CLIP_CONFIGS.names()


def test_own_clip_configs_stay_local_to_the_model():
    before = _clip_config_names()
    tower = {"embed_dim": 32, "vision_cfg": {"image_size": 48, "layers": 1, "width": 32, "head_width": 16,
                                              "patch_size": 16}}
    narrow = make(semantic={"model": "own-tower", "clip_config": tower})
    wide = make(semantic={"model": "own-tower", "clip_config": {**tower, "embed_dim": 48}})
    assert (narrow.semantic.num_features, wide.semantic.num_features) == (32, 48)
    assert _clip_config_names() == before


def test_one_metadata_lookup_zeroes_unknown_and_unseen_ids():
    from vreid.models.side_info import rows_for_ids

    table = torch.arange(6.0).view(3, 2)
    rows = rows_for_ids(table, torch.tensor([2, -1, 0, 3]))
    assert torch.equal(rows, torch.tensor([[4.0, 5.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
