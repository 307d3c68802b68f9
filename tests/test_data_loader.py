"""Transforms (seeded, shapes, normalisation), the sample dict and the batch contract of both loaders."""
from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from test_data_trees import make_veri776
from vreid.config.schema import DataConfig, TransformConfig
from vreid.data import (
    BATCH_KEYS,
    ImageDataset,
    build_test_loader,
    build_train_loader,
    build_transforms,
    camera_index,
    load_layout,
    relabel,
)


def cfg(**kw) -> DataConfig:
    t = TransformConfig(flip_prob=0.5, pad=4, color_jitter=0.3, random_erasing=0.5, autoaugment_prob=0.5)
    base = dict(height=32, width=16, ids_per_batch=2, images_per_id=2, test_batch_size=4, workers=0, transforms=t)
    return DataConfig(**{**base, **kw})


def picture(seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(40, 30, 3, generator=g) * 255).to(torch.uint8).numpy())


def test_same_seed_same_tensor_different_seed_different():
    train, _ = build_transforms(cfg())
    img = picture()
    a, b = train(img, seed=123), train(img, seed=123)
    assert a.shape == (3, 32, 16) and torch.equal(a, b)
    assert any(not torch.equal(a, train(img, seed=s)) for s in range(124, 130))


def test_seeded_transform_leaves_global_rng_alone():
    train, _ = build_transforms(cfg())
    torch.manual_seed(0)
    random.seed(0)
    expected = (torch.rand(1).item(), random.random())
    torch.manual_seed(0)
    random.seed(0)
    train(picture(), seed=7)
    assert (torch.rand(1).item(), random.random()) == expected


def test_test_transform_shape_and_normalisation():
    c = cfg(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    _, test = build_transforms(c)
    out = test(Image.new("RGB", (20, 50), (255, 128, 0)))
    assert out.shape == (3, 32, 16)
    assert torch.allclose(out[:, 0, 0], torch.tensor([2.0, (128 / 255 - 0.5) / 0.25, -2.0]), atol=1e-4)


def test_train_loader_batch_contract_and_reproducibility(tmp_path):
    ds = load_layout("veri776", make_veri776(tmp_path))
    labels, _ = relabel(ds.train)
    loader = build_train_loader(ds.train, labels, cfg(), seed=1, epoch=0)
    batches = list(loader)
    assert len(batches) == loader.batch_sampler.batches_per_epoch
    b = batches[0]
    assert tuple(b) == BATCH_KEYS
    assert b["images"].shape == (4, 3, 32, 16) and b["images"].dtype == torch.float32
    for k in BATCH_KEYS[1:]:
        assert b[k].shape == (4,) and b[k].dtype == torch.long
    for lab, idx, vid, cam in zip(b["labels"], b["indices"], b["vehicle_ids"], b["camera_ids"]):
        rec = ds.train[int(idx)]
        assert labels[int(idx)] == int(lab) and rec.vehicle_id == int(vid) and rec.camera_id == int(cam)
    assert (b["viewpoints"] == -1).all()
    again = list(build_train_loader(ds.train, labels, cfg(), seed=1, epoch=0, start_batch=1))
    assert torch.equal(again[0]["images"], batches[1]["images"])


@pytest.mark.slow
def test_worker_count_does_not_change_augmentation(tmp_path):
    ds = load_layout("veri776", make_veri776(tmp_path))
    labels, _ = relabel(ds.train)
    a = next(iter(build_train_loader(ds.train, labels, cfg(workers=0), seed=2)))
    b = next(iter(build_train_loader(ds.train, labels, cfg(workers=2), seed=2)))
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["indices"], b["indices"])


def test_test_loader_keeps_order_and_camera_map(tmp_path):
    ds = load_layout("veri776", make_veri776(tmp_path))
    records = ds.query + ds.gallery
    cams = camera_index(records)
    assert cams == {3: 0, 4: 1}
    batches = list(build_test_loader(records, cfg(), camera_map=cams))
    assert [len(b["indices"]) for b in batches] == [4, 1]
    assert torch.cat([b["indices"] for b in batches]).tolist() == list(range(5))
    assert torch.cat([b["camera_ids"] for b in batches]).tolist() == [cams[r.camera_id] for r in records]
    assert (torch.cat([b["labels"] for b in batches]) == -1).all()
    sample = ImageDataset(records)[0]
    assert sample["label"] == -1 and sample["viewpoint"] == -1 and isinstance(sample["image"], Image.Image)
