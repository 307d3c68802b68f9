"""The label-source seam (vreid.unsup.label_sources): the registry, the `dataset` source, the clustering sources
against the pieces they are made of (what `usl` did by hand before it moved onto the seam), the trainer's sampler
on labels with -1, the config error for an unknown source, and resume of a source's state."""
from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import CrashAt, train_run
from test_method_usl import usl_overrides
from vreid.config import load_experiment
from vreid.config.loader import ConfigError
from vreid.engine.run import load_data
from vreid.engine.trainer import Trainer
from vreid.methods.usl import UslConfig
from vreid.unsup.clustering import ClusteringConfig, cluster_features
from vreid.unsup.cotrain import random_derangement
from vreid.engine.label_source_hook import LabelSourceHook
from vreid.unsup.label_sources import (
    LABEL_SOURCES, ClusteringLabels, CotrainLabels, DatasetLabels, LabelContext, build_label_source, joint_labels,
    loosen_eps,
)
from vreid.unsup.schedules import EpsSchedule


class FixedFeatures(LabelContext):
    """A context whose models' features are fixed tables (model index -> rows of all training records)."""

    tables: dict[int, torch.Tensor] = {}

    def extract(self, module, indices):
        return self.tables[module][torch.as_tensor(indices)]


def blob_features(ids: int, per_id: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(ids, 16, generator=g), dim=1)
    x = centres.repeat_interleave(per_id, 0) + 0.05 * torch.randn(ids * per_id, 16, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def fixed_context(vehicle_ids, tables: dict[int, torch.Tensor], ids_per_batch: int = 2, seed: int = 1):
    records = [SimpleNamespace(vehicle_id=v) for v in vehicle_ids]
    trainer = SimpleNamespace(dataset=SimpleNamespace(train=records),
                              cfg=SimpleNamespace(seed=0, data=SimpleNamespace(ids_per_batch=ids_per_batch)))
    method = SimpleNamespace(cfg=SimpleNamespace(name="usl"))
    ctx = FixedFeatures(trainer, method, epoch=0, epochs=4, models=list(tables), online=list(tables),
                        rng=np.random.default_rng(seed))
    ctx.tables = tables
    return ctx


def usl_settings(**extra) -> UslConfig:
    return UslConfig(clustering=ClusteringConfig(k=5, min_samples=2, knn_backend="torch"),
                     eps=EpsSchedule(name="fixed", eps=0.5), **extra)


def test_registry_lists_the_sources():
    assert {"dataset", "clustering", "cotrain"} <= set(LABEL_SOURCES.names())
    assert type(build_label_source("cotrain", usl_settings())) is CotrainLabels
    assert UslConfig().labels == "cotrain"      # usl's default: what it did before the seam


def test_dataset_source_gives_the_dataset_ids():
    ids = [7, 3, 7, 9, 3]
    ctx = fixed_context(ids, {0: torch.randn(5, 4)})
    out = DatasetLabels().refresh(ctx)
    out.check(5)
    assert out.labels.tolist() == [1, 0, 1, 2, 0] and out.per_model[0].tolist() == [1, 0, 1, 2, 0]
    assert out.subset.tolist() == list(range(5)) and torch.equal(out.features[0], ctx.tables[0])


@pytest.mark.parametrize("name", ["clustering", "cotrain"])
def test_clustering_sources_are_their_pieces(name):
    """Per model: DBSCAN labels of its own features; cotrain: model b learns the clusters of model perm[b], perm the
    derangement drawn from the epoch's rng; the sampler gets one class per combination (joint_labels)."""
    tables = {0: blob_features(6, 4, seed=0), 1: blob_features(6, 4, seed=1)}
    ids = np.arange(6).repeat(4)
    out = build_label_source(name, usl_settings()).refresh(fixed_context(ids, tables))
    out.check(len(ids))
    own = [cluster_features(tables[b], 0.5, usl_settings().clustering) for b in (0, 1)]
    perm = random_derangement(2, np.random.default_rng(1)) if name == "cotrain" else np.arange(2)
    assert perm.tolist() == ([1, 0] if name == "cotrain" else [0, 1])
    for b in (0, 1):
        assert out.per_model[b].tolist() == own[perm[b]].tolist()
    assert out.labels.tolist() == joint_labels(out.per_model).tolist() and out.labels.max() + 1 >= 2
    assert [r["learns_from"] for r in out.report_rows] == perm.tolist()
    assert all(r["purity"] == 1.0 and r["eps"] == 0.5 for r in out.report_rows)   # blobs: clean clusters


def test_too_few_clusters_loosen_eps_then_fail_naming_the_key():
    tried = []

    def attempt(eps):
        tried.append(eps)
        return f"labels@{eps}", 0 if eps < 0.6 else 5

    assert loosen_eps(attempt, 0.4, 3, "usl") == ("labels@0.6", 0.6) and tried == [0.4, 0.45, 0.5, 0.55, 0.6]
    with pytest.raises(ConfigError, match="data.ids_per_batch") as err:
        loosen_eps(attempt, 0.4, 6, "usl")
    assert err.value.key == "data.ids_per_batch"


def test_loosened_eps_reclusters_the_same_graph(monkeypatch):
    """Too few clusters at the scheduled eps: the retries at looser eps cluster the kNN graph built once per model
    (not one graph per eps tried), and give the labels a fresh clustering at the final eps gives."""
    import vreid.unsup.clustering as clustering

    built = []
    real = clustering.sparse_rerank_graph
    monkeypatch.setattr(clustering, "sparse_rerank_graph", lambda x, **kw: built.append(len(x)) or real(x, **kw))
    tables = {0: blob_features(6, 4, seed=0), 1: blob_features(6, 4, seed=1)}
    settings = usl_settings()
    settings.eps = EpsSchedule(name="fixed", eps=0.0005)    # no two images that close: zero clusters at first
    out = build_label_source("clustering", settings).refresh(fixed_context(np.arange(6).repeat(4), tables,
                                                                           ids_per_batch=4))
    final = out.report_rows[0]["eps"]
    assert final > 0.0005 and built == [24, 24]              # loosened; one graph per model
    for b in (0, 1):
        assert out.per_model[b].tolist() == cluster_features(tables[b], final, settings.clustering).tolist()


def test_the_trainer_sampler_draws_only_records_with_a_label(tiny_world, tmp_path, one_thread):
    cfg = load_experiment(None, usl_overrides(tiny_world, tmp_path, **{"model.backbones": "[{name: resnet_tiny_ibn_a}]"}))
    trainer = Trainer(cfg, load_data(cfg))
    try:
        n = len(trainer.dataset.train)
        labels = [(i // 3) % 5 if i % 4 else -1 for i in range(n)]   # a quarter left out, 5 classes
        trainer.set_train_labels(labels)
        drawn = {int(i) for batch in trainer._train_loader() for i in batch["indices"]}
    finally:
        trainer.close()
    assert drawn == {i for i in range(n) if labels[i] >= 0}


def test_unknown_source_is_one_line_naming_the_key_and_the_choices():
    with pytest.raises(ConfigError) as err:
        load_experiment(None, ["model.name=usl", "model.labels=nope"])
    message = str(err.value)
    assert "\n" not in message and "model.labels" in message and "nope" in message
    assert all(name in message for name in ("dataset", "clustering", "cotrain"))


def test_resume_restores_the_source_state(tiny_world, tmp_path, one_thread):
    """Neighbourhood sampling redrawn every 3 epochs: epoch 2 must cluster the subset epoch 1 drew, also when the
    run stopped after epoch 1 and resumed (the source's subset and window come back from the checkpoint)."""
    extra = {"model.neighborhood_fraction": 0.7, "model.resample_every": 3, "schedule.epochs": 2,
             "train.steps_per_epoch": 1, "train.checkpoint_every_epochs": 1}
    straight = load_experiment(None, usl_overrides(tiny_world, tmp_path / "straight", **extra))
    _, whole = train_run(straight)
    broken = load_experiment(None, usl_overrides(tiny_world, tmp_path / "broken", **extra))
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_run(broken, hooks=[CrashAt(2)])
    _, resumed = train_run(broken, resume=True)

    def source(trainer) -> ClusteringLabels:
        return next(h for h in trainer.hooks if isinstance(h, LabelSourceHook)).source

    assert source(resumed).window_start == 0 and np.array_equal(source(resumed).subset, source(whole).subset)
    assert resumed.labels == whole.labels
    rows = [list(csv.DictReader(open(p / "clusters.csv"))) for p in (tmp_path / "straight", tmp_path / "broken")]
    assert rows[0] == rows[1] and [r["epoch"] for r in rows[0]] == ["1", "1", "2", "2"]
