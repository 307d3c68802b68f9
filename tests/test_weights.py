"""Loading local weight files of every supported format into vreid backbones."""
import warnings

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from vreid.fileio import atomic_path
from vreid.models import WeightsError, create_backbone, load_pretrained, read_state_dict
from vreid.models.backbones.open_clip_models import build_tiny_clip


def save(obj, path):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def tv_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


@pytest.fixture(scope="module")
def tv18():
    torch.manual_seed(0)
    m = torchvision.models.resnet18()
    with torch.no_grad():  # non-trivial BN statistics, so a missed buffer would show
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


X = torch.randn(2, 3, 64, 64)


def test_torchvision_state_dict(tmp_path, tv18):
    path = save(tv18.state_dict(), tmp_path / "resnet18.pth")
    ours = create_backbone("resnet18", pretrained=str(path), last_stride=2).eval()
    report = ours.pretrained_report
    assert report.missing == [] and report.unexpected == [] and sorted(report.dropped) == ["fc.bias", "fc.weight"]
    with torch.no_grad():
        assert torch.allclose(ours.forward_features(X), tv_features(tv18, X), atol=1e-5)


def test_timm_state_dict_into_vreid_and_timm_family(tmp_path):
    torch.manual_seed(1)
    tm = timm.create_model("resnet18", pretrained=False).eval()
    path = save(tm.state_dict(), tmp_path / "timm_resnet18.pth")
    ours = create_backbone("resnet18", pretrained=str(path), last_stride=2).eval()
    wrapped = create_backbone("timm:resnet18", pretrained=str(path), last_stride=2).eval()
    assert wrapped.pretrained_report.missing == []
    with torch.no_grad():
        ref = tm.forward_features(X)
        assert torch.allclose(ours.forward_features(X), ref, atol=1e-5)
        assert torch.allclose(wrapped.forward_features(X), ref, atol=1e-5)


def test_timm_vit_checkpoint_resized_to_reid_crops(tmp_path):
    torch.manual_seed(5)
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32).eval()
    path = save(src.state_dict(), tmp_path / "vit.pth")
    same = create_backbone("timm:vit_tiny_patch16_224", img_size=32, pretrained=str(path)).eval()
    assert same.pretrained_report.missing == [] and same.pretrained_report.unexpected == []
    assert [k.split(".")[-2] for k in same.pretrained_report.dropped] == ["head", "head"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(same.forward_features(x), src.forward_features(x), atol=1e-5)
    tall = create_backbone("timm:vit_tiny_patch16_224", img_size=(64, 32), pretrained=str(path))
    assert tall.pretrained_report.mismatched == []  # timm's filter resampled the position embedding
    assert tall.forward_features(torch.randn(1, 3, 64, 32)).shape == (1, 9, 192)


def test_safetensors_and_containers(tmp_path):
    torch.manual_seed(2)
    src = create_backbone("resnet_tiny_ibn_a").eval()
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    st = tmp_path / "tiny.safetensors"
    with atomic_path(st) as tmp:
        save_file(sd, str(tmp))
    wrapped = save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ckpt.pth")
    prefixed = save({"model": {f"backbone.{k}": v for k, v in sd.items()}}, tmp_path / "fastreid.pth")
    with torch.no_grad():
        ref = src.forward_features(X)
        for path in (st, wrapped, prefixed):
            dst = create_backbone("resnet_tiny_ibn_a", pretrained=str(path)).eval()
            assert dst.pretrained_report.missing == [], path
            assert torch.allclose(dst.forward_features(X), ref, atol=1e-6), path
    renamed = save({f"base.body.{k}": v for k, v in sd.items()}, tmp_path / "renamed.pth")
    dst = create_backbone("resnet_tiny_ibn_a")
    assert load_pretrained(dst, renamed, prefix_map={"base.body.": ""}, strict=True).missing == []


def test_plain_weights_into_ibn_report_split_norms(tmp_path, tv18):
    path = save(tv18.state_dict(), tmp_path / "resnet18.pth")
    m = create_backbone("resnet18_ibn_a")
    report = load_pretrained(m, path)
    assert report.ibn_missing and set(report.missing) == set(report.ibn_missing)
    assert all(".bn1." in k for k in report.unexpected) and "IBN-a split norms" in str(report)
    assert torch.equal(m.layer4[0].bn1.running_var, tv18.layer4[0].bn1.running_var)
    with pytest.raises(WeightsError, match="strict"):
        load_pretrained(create_backbone("resnet18_ibn_a"), path, strict=True)


def test_ibn_official_style_checkpoint(tmp_path):
    src = create_backbone("resnet18_ibn_a")
    sd = dict(src.state_dict(), **{"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    path = save({"state_dict": sd}, tmp_path / "resnet18_ibn_a.pth")
    report = load_pretrained(create_backbone("resnet18_ibn_a"), path, strict=True)
    assert report.missing == [] and len(report.dropped) == 2


@pytest.mark.parametrize("name,size,ls", [("vreid-tiny-vit", 32, 1), ("vreid-tiny-rn", 64, 2)])
def test_open_clip_state_dict(tmp_path, name, size, ls):
    torch.manual_seed(3)
    full = build_tiny_clip(name).eval()
    path = save(full.state_dict(), tmp_path / "open_clip.pth")
    m = create_backbone(f"clip:{name}", pretrained=str(path), last_stride=ls).eval()
    report = m.pretrained_report
    assert report.missing == [] and report.unexpected == [] and report.ignored > 0  # the text tower
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(m.forward_features(x)[:, 0], full.visual(x), atol=1e-5)


def test_openai_format_state_dict_and_torchscript(tmp_path):
    torch.manual_seed(4)
    full = build_tiny_clip("vreid-tiny-vit").eval()
    x = torch.randn(2, 3, 32, 32)
    # OpenAI's files: fp16 weights plus a few scalar entries that are not parameters.
    openai_sd = {k: v.half() for k, v in full.state_dict().items()}
    openai_sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(16), vocab_size=torch.tensor(128))
    plain = save(openai_sd, tmp_path / "openai.pt")

    class ImageOnly(nn.Module):  # a TorchScript archive whose state dict has the `visual.*` keys
        def __init__(self, visual):
            super().__init__()
            self.visual = visual

        def forward(self, images):
            return self.visual(images)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(ImageOnly(full.visual), x, check_trace=False)
        script = tmp_path / "openai_jit.pt"
        with atomic_path(script) as tmp:
            torch.jit.save(traced, str(tmp))
    assert set(read_state_dict(script)) == {k for k in full.state_dict() if k.startswith("visual.")}
    with torch.no_grad():
        ref = full.visual(x)
        m = create_backbone("clip:vreid-tiny-vit", pretrained=str(script)).eval()
        assert torch.allclose(m.forward_features(x)[:, 0], ref, atol=1e-5)
        m = create_backbone("clip:vreid-tiny-vit", pretrained=str(plain)).eval()
        assert m.pretrained_report.missing == []
        assert torch.allclose(m.forward_features(x)[:, 0], ref, atol=2e-2)  # fp16 rounding


def test_errors_name_the_file(tmp_path, tv18):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth"):
        create_backbone("resnet18", pretrained=str(missing))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth.*cannot read"):
        load_pretrained(create_backbone("resnet18"), garbage)
    wrong = save({"encoder.w": torch.zeros(3), "decoder.b": torch.zeros(2)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError) as e:
        load_pretrained(create_backbone("resnet18"), wrong)
    msg = str(e.value)
    assert "wrong.pth" in msg and "missing (" in msg and "unexpected (2: " in msg and "more)" in msg
    other_arch = save(tv18.state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(WeightsError) as e:
        load_pretrained(create_backbone("resnet_tiny_ibn_a"), other_arch)
    assert "shape mismatches (" in str(e.value) and "layer1.0.conv1.weight file [64, 64, 3, 3]" in str(e.value)
    no_tensors = save({"epoch": 1}, tmp_path / "empty.pth")
    with pytest.raises(WeightsError, match="no tensors"):
        load_pretrained(create_backbone("resnet18"), no_tensors)
