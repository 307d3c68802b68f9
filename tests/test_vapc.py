"""VAPC (vreid.unsup.vapc, vreid.unsup.viewpoint, vreid.methods.vapc): the viewpoint predictor on synthetic
viewpoint labels, cross-view merging (threshold, mutual nearest neighbours, viewpoint sets), the relaxing
schedule, V = 1 = plain DBSCAN, config errors, and one tiny training with and without a source stage."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_overrides
from vreid.config import load_experiment
from vreid.config.loader import ConfigError
from vreid.config.schema import DataConfig, TransformConfig
from vreid.data import load_dataset
from vreid.unsup.clustering import ClusteringConfig, cluster_features
from vreid.unsup.vapc import MergeSchedule, ViewClusters, merge_cross_view, progressive_labels
from vreid.unsup.viewpoint import (
    VIEWPOINT_BINS, ViewpointPredictorConfig, read_viewpoint_labels, train_viewpoint_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")
CLUSTERING = ClusteringConfig(k=8, min_samples=4, knn_backend="torch")


def unit(*rows) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def clusters_of(centroids: torch.Tensor, views: list[int], per: int = 3) -> tuple[torch.Tensor, ViewClusters]:
    """`per` identical features per given centroid: one intra-view cluster each, of the given viewpoint."""
    x = centroids.repeat_interleave(per, 0)
    labels = np.repeat(np.arange(len(views)), per)
    return x, ViewClusters(labels, np.asarray(views))


def view_world(ids: int = 20, views: int = 3, per: int = 6, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Features of `ids` vehicles seen from `views` viewpoints: identity centre + a shared per-view offset."""
    g = torch.Generator().manual_seed(seed)
    centres, offsets = torch.randn(ids, 32, generator=g), 1.2 * torch.randn(views, 32, generator=g)
    rows = [centres[i] + offsets[v] + 0.3 * torch.randn(32, generator=g)
            for i in range(ids) for v in range(views) for _ in range(per)]
    return F.normalize(torch.stack(rows), dim=1), np.tile(np.repeat(np.arange(views), per), ids)


# ----- merging ------------------------------------------------------------------------------------------------
def test_merging_only_joins_clusters_under_the_current_threshold():
    # A (view 0) and B (view 1): cosine distance 1 - cos(30 deg) = 0.13; C (view 0) and D (view 1): 1 - cos(60) = 0.5
    c30, s30, c60, s60 = np.cos(np.pi / 6), np.sin(np.pi / 6), np.cos(np.pi / 3), np.sin(np.pi / 3)
    cents = unit([1, 0, 0, 0], [c30, s30, 0, 0], [0, 0, 1, 0], [0, 0, c60, s60])
    x, vc = clusters_of(cents, [0, 1, 0, 1])
    assert merge_cross_view(x, vc, tau=0.1)[1] == 0
    group, merges, _ = merge_cross_view(x, vc, tau=0.3)
    assert merges == 1 and group[0] == group[1] and len({group[0], group[2], group[3]}) == 3
    group, merges, _ = merge_cross_view(x, vc, tau=0.51)
    assert merges == 2 and group[2] == group[3] and group[0] != group[2]


def test_merging_needs_mutual_nearest_neighbours_and_disjoint_viewpoints():
    # B (view 1) lists A (view 0) as its nearest cross-view cluster, but A's nearest is C (view 1): A and C merge;
    # then {A, C} holds view 1 already, so B (within tau of A) stays on its own
    cents = unit([1, 0, 0], [0.8, 0.6, 0], [0.95, -0.05, 0.3])
    x, vc = clusters_of(cents, [0, 1, 1])
    sims = cents @ cents.T
    assert sims[1, 0] > sims[1, 2] and sims[0, 2] > sims[0, 1]      # B -> A, A -> C, C -> A
    group, merges, rounds = merge_cross_view(x, vc, tau=1.0)
    assert group[0] == group[2] != group[1] and merges == 1 and rounds == 1
    # two clusters of the same viewpoint never merge, however close
    x, vc = clusters_of(unit([1, 0], [1, 0.01]), [2, 2])
    assert merge_cross_view(x, vc, tau=2.0)[1] == 0


def test_pseudo_label_count_does_not_grow_as_tau_relaxes():
    x, views = view_world()
    counts = [int(progressive_labels(x, views, 0.6, tau, CLUSTERING).labels.max()) + 1
              for tau in np.linspace(0.0, 1.2, 13)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert counts[0] == 60 and counts[-1] == 20      # 20 vehicles x 3 views, then one cluster per vehicle
    schedule = MergeSchedule(tau_0=0.5, tau_max=0.7, epochs=4)
    taus = [schedule(e) for e in range(1, 8)]
    assert taus[0] == 0.5 and taus[4:] == [0.7] * 3 and taus == sorted(taus)


def test_one_viewpoint_bin_is_plain_dbscan():
    x, views = view_world()
    one = VIEWPOINT_BINS.get("one")
    result = progressive_labels(x, np.array([one.of(int(v)) for v in views]), 0.6, 0.7, CLUSTERING)
    assert np.array_equal(result.labels, cluster_features(x, 0.6, CLUSTERING)) and result.merges == 0


def test_unknown_viewpoints_stay_outliers():
    x, views = view_world(ids=6)
    views[:5] = -1
    labels = progressive_labels(x, views, 0.6, 0.7, CLUSTERING).labels
    assert (labels[:5] == -1).all() and (labels[5:] >= 0).any()


# ----- the viewpoint predictor ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def view_world_dir(tmp_path_factory):
    """A small synthetic world (24 vehicles, 4 cameras, 32 px) whose side file labels every image's viewpoint."""
    from vreid.synth import SynthConfig, render_dataset

    root = tmp_path_factory.mktemp("views") / "veri"
    render_dataset(root, SynthConfig(ids=24, cameras=4, seed=5, preset="easy", size=32, layout="veri776", workers=1))
    return root


def test_predictor_reaches_high_accuracy_on_held_out_vehicles(view_world_dir):
    data = DataConfig(root=str(view_world_dir), height=32, width=32, workers=0,
                      transforms=TransformConfig(pad=2, random_erasing=0.0))
    ds = load_dataset(data)
    records = ds.train + ds.gallery
    cfg = ViewpointPredictorConfig(bins="three", epochs=10, lr=3e-3, batch_size=32, holdout=0.2)
    model, report = train_viewpoint_classifier(records, cfg, data, seed=0)
    truth = [cfg.view_bins.of(r.viewpoint) for r in records]
    majority = np.bincount(truth).max() / len(truth)
    assert report["heldout_images"] > 20 and report["heldout_accuracy"] >= 0.75
    assert report["heldout_accuracy"] > majority + 0.2         # far above always answering the commonest bin
    assert not any(p.requires_grad for p in model.parameters())  # frozen


def test_viewpoint_labels_csv_gives_the_predictions(tmp_path, view_world_dir):
    ds = load_dataset(DataConfig(root=str(view_world_dir)))
    records = ds.train[:3]
    rel = [str(Path(r.path).relative_to(view_world_dir)) for r in records]
    path = tmp_path / "viewpoint_labels.csv"
    path.write_text(f"path,viewpoint\n{rel[0]},left_front\n{records[1].path},1\n{rel[2]},side\n")
    five = VIEWPOINT_BINS.get("five")
    pred = read_viewpoint_labels(path, records, view_world_dir, five)
    assert pred.bins.tolist() == [five.names.index("front_side"), five.names.index("rear"), five.names.index("side")]
    path.write_text(f"path,viewpoint\n{rel[0]},upside_down\n")
    with pytest.raises(ConfigError, match="line 2") as err:
        read_viewpoint_labels(path, records, view_world_dir, five)
    assert "\n" not in str(err.value)


# ----- config errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("model.backbones=[{name: resnet_tiny_ibn_a}, {name: resnet_tiny_ibn_a}]", "model.backbones"),
    ("model.merge.tau_0=0.9", "model.merge.tau_0"),
    ("model.viewpoint.bins=seven", "model.viewpoint.bins"),
    ("model.neighborhood_fraction=0.5", "model.neighborhood_fraction"),
    ("model.merge.epochs=0", "model.merge.epochs"),
])
def test_config_errors_are_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_experiment("configs/vapc/synthetic.yaml", [override])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_packaged_configs_load():
    for name in ("synthetic", "synthetic-da", "synthetic-da-target-views", "veri776", "veriwild"):
        cfg = load_experiment(f"configs/vapc/{name}.yaml")
        assert cfg.model.name == "vapc" and cfg.model.labels == "viewpoint_progressive"
    assert load_experiment("configs/vapc/synthetic-da.yaml").model.adaptation.source_root
    from vreid.viz.leaderboard import trunk_and_start

    for name in ("synthetic", "synthetic-da"):   # the viewpoint predictor's tiny trunk is not the Re-ID trunk
        model = load_experiment(f"configs/vapc/{name}.yaml").model
        assert trunk_and_start(model) == ("timm:mobilenetv2_100", "imagenet")


# ----- training -----------------------------------------------------------------------------------------------
VAPC = {"model.name": "vapc", "model.backbones": "[{name: resnet_tiny_ibn_a}]", "data.ids_per_batch": 2,
        "model.clustering": "{k: 4, min_samples: 2, knn_backend: torch}", "model.ema_momentum": 0.9,
        "model.merge": "{tau_0: 0.3, tau_max: 0.6, epochs: 1}", "model.viewpoint.epochs": 1,
        "model.viewpoint.bins": "three", "schedule.name": "constant", "schedule.warmup_epochs": 0,
        "train.steps_per_epoch": 2}


def vapc_overrides(root, out, **extra) -> list[str]:
    return [o for o in tiny_overrides(root, out, **VAPC, **extra) if not o.startswith("model.backbone.")]


def test_training_writes_clusters_and_the_predictor_report(tiny_world, tmp_path):
    from vreid.engine.run import run_training

    results = run_training(load_experiment(None, vapc_overrides(tiny_world, tmp_path)))
    assert 0.0 <= results["mAP"] <= 1.0
    rows = list(csv.DictReader(open(tmp_path / "clusters.csv")))
    assert [float(r["tau"]) for r in rows] == [0.3, 0.6]
    for r in rows:
        assert int(r["clusters"]) == int(r["intra_clusters"]) - int(r["cross_view_merges"]) >= 2
    report = json.loads((tmp_path / "viewpoint.json").read_text())
    assert report["bins"] == ["front", "side", "rear"] and 0.0 <= report["heldout_accuracy"] <= 1.0
    assert report["fit_images"] + report["heldout_images"] == report["labelled_images"] == report["run_images_labelled"]


def test_adaptation_trains_bot_on_the_source_then_starts_vapc_from_it(tiny_world, tmp_path):
    from vreid.engine.bundle import load_bundle
    from vreid.engine.run import run_training

    out = tmp_path / "run"
    cfg = load_experiment(None, vapc_overrides(tiny_world, out, **{
        "model.adaptation.source_root": str(tiny_world), "model.adaptation.epochs": 1,
        "model.viewpoint.source.root": str(tiny_world)}))
    run_training(cfg)
    source = load_bundle(out / "stages" / "source")
    assert source.cfg.name == "bot"
    adapt_cfg = load_experiment(out / "stages" / "adapt" / "config.yaml")
    assert adapt_cfg.model.backbones[0].pretrained == str(out / "stages" / "source" / "backbone.safetensors")
    from vreid.models.backbones.config import build_backbone

    started = build_backbone(adapt_cfg.model.backbones[0])     # what the adapt stage's backbone started from
    for name, tensor in source.backbone.state_dict().items():
        assert torch.equal(started.state_dict()[name], tensor), name
    assert (out / "model.safetensors").is_file() and (out / "stages" / "adapt" / "clusters.csv").is_file()


def test_the_source_backbone_loads_into_any_trunk_family(tmp_path):
    """A timm trunk prefixes plain checkpoints with `model.`: the bot bundle's own file would not fit it."""
    from vreid.engine.bundle import save_bundle
    from vreid.methods import DataInfo, build_method
    from vreid.methods.bot import BotConfig
    from vreid.methods.vapc import source_backbone_weights
    from vreid.models.backbones.config import BackboneConfig, build_backbone

    trunk = BackboneConfig(name="timm:mobilenetv2_100", pretrained=None)
    torch.manual_seed(0)
    bot = build_method(BotConfig(backbone=trunk), DataInfo(num_classes=3, height=32, width=32))
    with torch.no_grad():
        for p in bot.parameters():
            p.add_(0.5)
    save_bundle(tmp_path, bot)
    started = build_backbone(BackboneConfig(name=trunk.name, pretrained=str(source_backbone_weights(tmp_path))))
    for name, tensor in bot.backbone.state_dict().items():
        assert torch.equal(started.state_dict()[name], tensor), name
