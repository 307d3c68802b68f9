"""The defaults that follow the papers' official code (issue: deviations fixed or stated), each with its option."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vreid.config import load_experiment
from vreid.engine.freeze import FreezeModules
from vreid.methods import DataInfo, build_method
from vreid.methods.usl_pipeline import joint_labels
from vreid.models import create_backbone
from vreid.models.branches import RelPosMHSA, build_branch, trunk_info
from vreid.models.nonlocal_block import insert_non_local

TINY = DataInfo(num_classes=6, num_cameras=4, num_viewpoints=8, height=32, width=32)


# --- MBR ---------------------------------------------------------------------------------------------------------

def test_mhsa_position_term_official_is_r_i_dot_q_j():
    torch.manual_seed(0)
    mhsa = RelPosMHSA(8, (2, 3), heads=2)
    x = torch.randn(1, 8, 2, 3)
    q, k, v = (f(x).view(1, 2, 4, 6)[0] for f in (mhsa.query, mhsa.key, mhsa.value))
    r = (mhsa.rel_h + mhsa.rel_w).detach().flatten(2)             # (heads, d, HW): rows x columns, row-major
    for position, pos_logits in (("official", torch.einsum("ndi,ndj->nij", r, q)),
                                 ("paper", torch.einsum("ndi,ndj->nij", q, r))):
        mhsa.position = position
        attn = (torch.einsum("ndi,ndj->nij", q, k) + pos_logits).softmax(-1)
        expected = torch.einsum("nij,ndj->ndi", attn, v).reshape(1, 8, 2, 3)
        with torch.no_grad():
            assert torch.allclose(mhsa(x), expected, atol=1e-5), position
    with pytest.raises(ValueError, match="position"):
        RelPosMHSA(8, (2, 3), heads=2, position="transposed")


def test_bot_shortcut_conv_has_a_bias_as_officially():
    trunk = trunk_info(create_backbone("resnet_tiny_ibn_a"), 32, 32)
    assert build_branch("bot_stack", trunk)[0].shortcut[0].bias is not None
    assert build_branch("bot_stack", trunk, shortcut_bias=False)[0].shortcut[0].bias is None


def test_hybrid_conv_starts_random_unless_pretrained_is_asked():
    torch.manual_seed(0)
    trunk = trunk_info(create_backbone("resnet_tiny_ibn_a"), 32, 32)
    sliced = build_branch("grouped_layer4", trunk, groups=2)[0].conv2.weight        # what "pretrained" copies
    random_init = build_branch("grouped_mhsa", trunk, groups=2)[0].conv2.conv.weight
    pretrained = build_branch("grouped_mhsa", trunk, groups=2, conv_init="pretrained")[0].conv2.conv.weight
    half = random_init.shape[0]
    assert torch.equal(pretrained, sliced[:half])
    assert not torch.allclose(random_init, sliced[:half])


def test_hybrid_parts_split_the_3x3_stage_in_halves_on_a_four_group_layer():
    trunk = trunk_info(create_backbone("resnet_tiny_ibn_a"), 32, 32)
    mixer = build_branch("grouped_mhsa", trunk, groups=4, parts=2, attention_groups=1)[0].conv2
    width = mixer.split[0]
    assert mixer.split == [width, width] and mixer.conv.groups == 1 and len(mixer.attention) == 1
    with pytest.raises(ValueError, match="parts = groups"):
        build_branch("grouped_mhsa", trunk, groups=4, parts=2, conv_init="pretrained")


def test_trunk_freeze_keeps_bn_statistics_moving_unless_asked():
    def one_frozen_step(freeze_bn_stats: bool) -> bool:
        model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
        hook = FreezeModules(model, ["0", "1"], epochs=1, freeze_bn_stats=freeze_bn_stats)
        before = model[1].running_mean.clone()
        trainer = SimpleNamespace(epoch=0)
        hook.before_epoch(trainer)
        model.train()
        hook.before_step(trainer, None)
        model(torch.randn(8, 4) + 3.0).sum().backward()
        assert model[0].weight.grad is None          # frozen either way
        return not torch.equal(before, model[1].running_mean)

    assert one_frozen_step(freeze_bn_stats=False)    # the official MBR freeze: statistics still follow the data
    assert not one_frozen_step(freeze_bn_stats=True)


def test_mbr_freeze_hook_follows_the_config():
    cfg = load_experiment("configs/mbr/archs/mbr-4g.yaml", ["model.backbone.name=resnet_tiny_ibn_a",
                                                            "model.freeze_trunk_epochs=2"]).model
    assert build_method(cfg, TINY).hooks()[0].freeze_bn_stats is False
    cfg.freeze_trunk_bn_stats = True
    assert build_method(cfg, TINY).hooks()[0].freeze_bn_stats is True


def test_branch_options_are_written_out_with_the_builders_defaults():
    cfg = load_experiment("configs/mbr/archs/mbr-4b.yaml", ["model.backbone.name=resnet_tiny_ibn_a"]).model
    bot = cfg.branches[2].options
    assert bot["position"] == "official" and bot["shortcut_bias"] is True and bot["blocks"] == 3
    assert cfg.branches[0].options == {"last_stride": 2}


def test_official_2x2g_losses_swap_in_the_second_copy():
    two = load_experiment("configs/mbr/archs/mbr-2x2g.yaml").model
    assert [b.kind for b in two.branches] == ["grouped_mhsa", "grouped_mhsa"]
    pattern = [[(e.ce, e.triplet) for e in b.embeddings] for b in two.branches]
    assert pattern == [[(0.6, 0.0), (0.0, 1.0)], [(0.0, 0.4), (0.4, 0.0)]]
    r50 = load_experiment("configs/mbr/archs/mbr-r50-2x2g.yaml").model
    assert [b.kind for b in r50.branches] == ["grouped_layer4", "grouped_layer4"]
    assert [[(e.ce, e.triplet) for e in b.embeddings] for b in r50.branches] == [[(0.6, 0.0), (0.0, 1.0)],
                                                                                [(0.0, 1.0), (0.6, 0.0)]]


# --- SBS / MoReID non-local ----------------------------------------------------------------------------------------

def _non_local_params(**options) -> int:
    with torch.device("meta"):
        backbone = insert_non_local(create_backbone("resnet50_ibn_a"), [0, 2, 3, 0], **options)
    return sum(p.numel() for n, p in backbone.named_parameters() if ".non_local." in n)


def test_non_local_inner_width_is_fastreids_by_default():
    assert _non_local_params() == 28_687              # FastReID's Non_local: one inner channel
    assert 7.3e6 < _non_local_params(reduction=2) < 7.4e6   # Wang et al.: channels / 2


def test_sbs_config_selects_the_inner_width():
    cfg = load_experiment("configs/sbs/synthetic.yaml").model
    method = build_method(cfg, TINY)
    assert {m.theta.out_channels for m in method.modules() if type(m).__name__ == "NonLocalBlock"} == {1}
    cfg.non_local_reduction = 2
    method = build_method(cfg, TINY)
    assert {m.theta.out_channels for m in method.modules() if type(m).__name__ == "NonLocalBlock"} == {64, 128}


# --- bot -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bot", "sbs", "moreid"])
def test_bot_family_ranks_l2_normalised_bnneck_features(name):
    cfg = load_experiment(None, [f"model.name={name}", "model.backbone.name=resnet_tiny_ibn_a"]).model
    if name != "bot":
        cfg.non_local = [0, 0, 0, 0]
    method = build_method(cfg, TINY).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = method.embed(x)
    assert torch.allclose(feats.norm(dim=1), torch.ones(3), atol=1e-5)
    method.cfg.normalize_embedding = False
    raw = method.embed(x)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(3), atol=1e-2)
    assert torch.allclose(nn.functional.normalize(raw, dim=1), feats, atol=1e-5)


# --- usl co-training -------------------------------------------------------------------------------------------------

def test_cotraining_keeps_each_backbones_inliers_by_default():
    a = np.array([0, 0, 1, 1, -1, -1, 2])
    b = np.array([5, 5, -1, 6, 6, -1, -1])
    union = joint_labels([a, b])
    assert (union >= 0).tolist() == [True, True, True, True, True, False, True]
    # one class per combination: images with the same pair share it, (1, -1) and (1, 6) differ
    assert union[0] == union[1] and len({union[2], union[3]}) == 2
    inter = joint_labels([a, b], "intersection")
    assert (inter >= 0).tolist() == [True, True, False, True, False, False, False]
