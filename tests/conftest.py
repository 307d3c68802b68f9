"""Shared fixtures: a tiny synthetic world rendered once per test session, and a tiny training config."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")  # before torch is imported (below, through vreid)

from vreid.engine.hooks import Hook  # noqa: E402


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A VeRi-776-layout synthetic dataset: 16 vehicles (8 train, 8 test), 3 cameras, 32 px images."""
    from vreid.synth import SynthConfig, render_dataset

    root = tmp_path_factory.mktemp("world") / "veri"
    render_dataset(root, SynthConfig(ids=16, cameras=3, seed=5, preset="easy", size=32, layout="veri776",
                                     workers=1))
    return root


def tiny_overrides(root, out, **extra) -> list[str]:
    """A config that trains in seconds on CPU: tiny IBN-a ResNet, 32x32 images, P=4 x K=2, no workers."""
    base = {
        "data.root": root, "data.layout": "veri776", "data.height": 32, "data.width": 32,
        "data.ids_per_batch": 4, "data.images_per_id": 2, "data.workers": 0, "data.test_batch_size": 64,
        "model.name": "bot", "model.backbone.name": "resnet_tiny_ibn_a",
        "optim.lr": 1e-3, "schedule.name": "warmup_cosine", "schedule.epochs": 2, "schedule.warmup_epochs": 1,
        "train.tensorboard": False, "train.progress": False, "train.checkpoint_every_epochs": 0,
        "output_dir": out, "seed": 7,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="session")
def finished_run(tiny_world, tmp_path_factory):
    """(run folder, results) of a finished tiny `bot` run on `tiny_world` (trained through run_training)."""
    from vreid.config import load_experiment
    from vreid.engine.run import run_training

    out = tmp_path_factory.mktemp("finished") / "run"
    return out, run_training(load_experiment(None, tiny_overrides(tiny_world, out)))


class CrashAt(Hook):
    """Simulates the process dying after step `step` (everything since the last checkpoint is lost)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, trainer, batch, outputs, losses) -> None:
        if trainer.step == self.step:
            raise RuntimeError("simulated kill")


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny tensors: faster, and far faster when other jobs share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_run(cfg, hooks=(), resume=False):
    """(results, trainer) of one Trainer run of `cfg`, the trainer closed afterwards."""
    from vreid.engine.run import load_data
    from vreid.engine.trainer import Trainer

    trainer = Trainer(cfg, load_data(cfg), hooks=hooks)
    try:
        return trainer.fit(resume=resume), trainer
    finally:
        trainer.close()


def build_from_config(method_dir: str, config: str, *overrides: str, num_classes: int = 6, device: str = "cpu"):
    """The method of `configs/<method_dir>/<config>.yaml` (seeded, on `device`) and its config."""
    import torch

    from vreid.config import load_experiment
    from vreid.methods import DataInfo, build_method

    cfg = load_experiment(f"configs/{method_dir}/{config}.yaml", list(overrides))
    info = DataInfo(num_classes=num_classes, height=cfg.data.height, width=cfg.data.width)
    torch.manual_seed(0)
    with torch.device(device):
        return build_method(cfg.model, info), cfg


def random_batch(size: int = 64, ids: int = 3, per_id: int = 2) -> dict:
    """A training batch of random images: `ids` identities with `per_id` images each."""
    import torch

    g = torch.Generator().manual_seed(1)
    labels = torch.arange(ids).repeat_interleave(per_id)
    return {"images": torch.randn(len(labels), 3, size, size, generator=g), "labels": labels}
