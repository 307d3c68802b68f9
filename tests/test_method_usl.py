"""The `usl` method end to end: unsupervised training through the Trainer on the tiny synthetic world, with two
co-trained backbones, neighbourhood sampling and the eps schedule; plus the method's own contracts."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from vreid.config import load_experiment
from vreid.engine.run import load_data
from vreid.engine.trainer import Trainer
from vreid.methods import DataInfo, build_method

USL = {"model.name": "usl", "model.backbones": "[{name: resnet_tiny_ibn_a}, {name: resnet_tiny_ibn_a}]",
       "model.clustering": "{k: 6, min_samples: 2, knn_backend: torch}", "model.ema_momentum": 0.9,
       "model.eps": "{name: proposed, eps_min: 0.5, eps_max: 0.8}", "data.ids_per_batch": 2,
       "schedule.name": "constant", "schedule.warmup_epochs": 1}


def usl_overrides(root, out, **extra) -> list[str]:
    """The shared tiny config, with `usl` in place of bot's single `model.backbone`."""
    return [o for o in tiny_overrides(root, out, **{**USL, **extra}) if not o.startswith("model.backbone.")]


def test_unsupervised_training_through_the_trainer(tiny_world, tmp_path):
    cfg = load_experiment(None, usl_overrides(tiny_world, tmp_path, **{
        "model.neighborhood_fraction": 0.8, "model.resample_every": 1, "schedule.epochs": 2,
        "train.steps_per_epoch": 2}))
    data = load_data(cfg)
    trainer = Trainer(cfg, data)
    seen = []
    real = trainer.set_train_labels

    def spy(labels):   # the first labels the trainer gets come from clustering, not from the dataset
        seen.append(list(labels))
        real(labels)

    trainer.set_train_labels = spy
    try:
        results = trainer.fit()
    finally:
        trainer.close()
    assert trainer.method.unsupervised and len(seen) == 2
    assert trainer.step > 0 and 0.0 <= results["mAP"] <= 1.0
    n = len(data.train)
    for labels in seen:
        labels = np.array(labels)
        assert len(labels) == n and (labels == -1).sum() >= n - int(np.ceil(0.8 * n))   # outside the subset
    rows = list(csv.DictReader(open(tmp_path / "clusters.csv")))
    assert [(r["epoch"], r["backbone"]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]
    assert all(r["learns_from"] != r["backbone"] for r in rows)        # two backbones: always swapped
    assert all(0.0 <= float(r["purity"]) <= 1.0 and int(r["clusters"]) >= 2 for r in rows)
    emb = trainer.method.embed(torch.randn(3, 3, 32, 32))
    assert emb.shape == (3, 512) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-4)
    assert (tmp_path / "model.safetensors").is_file()


def test_teachers_follow_by_ema_and_are_not_trained():
    cfg = load_experiment(None, ["model.name=usl", "model.backbones=[{name: resnet_tiny_ibn_a}]",
                                 "model.ema_momentum=0.5"]).model
    m = build_method(cfg, DataInfo(num_classes=5, height=32, width=32))
    assert not any(p.requires_grad for p in m.teachers.parameters())
    trainable = {id(p) for g in m.param_groups(load_experiment(None, []).optim) for p in g["params"]}
    assert not trainable & {id(p) for p in m.teachers.parameters()}
    with pytest.raises(RuntimeError, match="no pseudo-labels"):
        m.losses(m({"images": torch.randn(4, 3, 32, 32)}), {"indices": torch.arange(4)})
    feats = torch.randn(6, 256)
    m.set_pseudo_labels(0, np.array([0, 0, 1, 1, -1, 1]), feats, np.arange(6))
    batch = {"images": torch.randn(4, 3, 32, 32), "indices": torch.tensor([0, 1, 2, 3])}
    losses = m.losses(m(batch), batch)
    assert set(losses) == {"proxy0", "hard0"} and all(torch.isfinite(v) for v in losses.values())
