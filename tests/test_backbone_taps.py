"""`ResNet.forward_intermediates`: every residual block's output, with the documented widths and strides, for every
registered ResNet depth; the final map is `forward_features`'; non-local stages keep working."""
from __future__ import annotations

import math

import pytest
import torch

from vreid.models.backbones.registry import BACKBONES, create_backbone
from vreid.models.nonlocal_block import NonLocalBlock, insert_non_local

pytestmark = pytest.mark.usefixtures("one_thread")

#: documented per variant: residual blocks per stage and stage output widths (layer1..layer4)
LAYOUTS = {
    "resnet_tiny_ibn_a": ((1, 1, 1, 1), (32, 64, 128, 256)),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet18_ibn_a": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ((3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet34_ibn_a": ((3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": ((3, 4, 6, 3), (256, 512, 1024, 2048)),
    "resnet50_ibn_a": ((3, 4, 6, 3), (256, 512, 1024, 2048)),
    "resnet101": ((3, 4, 23, 3), (256, 512, 1024, 2048)),
    "resnet101_ibn_a": ((3, 4, 23, 3), (256, 512, 1024, 2048)),
    "se_resnet101_ibn_a": ((3, 4, 23, 3), (256, 512, 1024, 2048)),
    "resnext101_ibn_a": ((3, 4, 23, 3), (256, 512, 1024, 2048)),
    "resnext101_32x8d": ((3, 4, 23, 3), (256, 512, 1024, 2048)),
    "resnext101_32x8d_ibn_a": ((3, 4, 23, 3), (256, 512, 1024, 2048)),
}


def test_every_registered_resnet_has_a_documented_layout():
    assert set(LAYOUTS) == {n for n in BACKBONES.names() if BACKBONES.meta(n).get("family") == "resnet"}


@pytest.mark.parametrize("last_stride", [1, 2])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_taps_have_the_documented_shapes(name, last_stride):
    blocks, widths = LAYOUTS[name]
    size = (64, 48)
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        trunk = create_backbone(name, last_stride=last_stride)
        final, taps = trunk.forward_intermediates(torch.empty(2, 3, *size), stages=(1, 2, 3, 4))
    assert trunk.stage_channels == widths
    assert trunk.stage_reductions == (4, 8, 16, 16 * last_stride)
    assert sorted(taps) == [1, 2, 3, 4]
    for s in range(1, 5):
        h, w = (math.ceil(d / trunk.stage_reductions[s - 1]) for d in size)
        assert len(taps[s]) == blocks[s - 1]
        assert all(t.shape == (2, widths[s - 1], h, w) for t in taps[s]), (s, [t.shape for t in taps[s]])
    assert final.shape == taps[4][-1].shape == (2, trunk.num_features, *taps[4][-1].shape[2:])


def test_taps_are_the_block_outputs_and_final_is_forward_features():
    torch.manual_seed(0)
    trunk = create_backbone("resnet18_ibn_a").eval()
    x = torch.randn(2, 3, 32, 32)
    final, taps = trunk.forward_intermediates(x, stages=(2, 4))
    assert sorted(taps) == [2, 4]
    expected = trunk.layer1(trunk.stem(x))
    outputs = []
    for block in trunk.layer2:
        expected = block(expected)
        outputs.append(expected)
    assert all(torch.equal(a, b) for a, b in zip(taps[2], outputs))
    assert torch.equal(final, trunk.forward_features(x)) and torch.equal(final, taps[4][-1])
    assert not any(m._forward_hooks for m in trunk.modules()), "taps must not leave hooks behind"


def test_no_stage_gives_only_the_final_map_and_bad_stages_are_refused():
    trunk = create_backbone("resnet_tiny_ibn_a").eval()
    x = torch.randn(1, 3, 32, 32)
    final, taps = trunk.forward_intermediates(x, stages=())
    assert taps == {} and torch.equal(final, trunk.forward_features(x))
    with pytest.raises(ValueError, match="1..4"):
        trunk.forward_intermediates(x, stages=(0, 5))


def test_a_non_local_stage_taps_each_residual_block_before_its_non_local_block():
    torch.manual_seed(0)
    trunk = insert_non_local(create_backbone("resnet18"), [0, 1, 2, 0]).eval()
    for m in trunk.modules():  # make the non-local blocks change their input (they start as the identity)
        if isinstance(m, NonLocalBlock):
            torch.nn.init.normal_(m.out[1].weight)
    x = torch.randn(2, 3, 32, 32)
    final, taps = trunk.forward_intermediates(x, stages=(2, 3))
    assert [len(taps[2]), len(taps[3])] == [2, 2]
    assert torch.equal(final, trunk.forward_features(x))
    stage_in = trunk.layer2(trunk.layer1(trunk.stem(x)))
    first = trunk.layer3[0](stage_in)
    assert torch.equal(taps[3][0], first)  # block 0 of layer3 is followed by a non-local block
    after_non_local = trunk.layer3.non_local["0"](first)
    assert not torch.equal(after_non_local, first)
    assert torch.equal(taps[3][1], trunk.layer3[1](after_non_local))  # block 1 reads the non-local output
