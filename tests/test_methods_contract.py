"""Every registered method, tested the same way (the contract of vreid.methods.base), from its packaged
synthetic config shrunk to a tiny trunk and 32 x 32 images.

The parameters are read from METHODS when the tests are collected, so a new method gets these tests for free; a
method without `configs/<name>/synthetic.yaml` fails them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from vreid.config import load_experiment
from vreid.config.catalog import PACKAGED_CONFIGS
from vreid.engine.bundle import load_bundle, save_bundle
from vreid.engine.distributed import DistInfo
from vreid.engine.hooks import Hook
from vreid.methods import METHODS, Batch, DataInfo, ReidMethod, build_method

SIZE, IDS, PER_ID, CAMERAS, VIEWPOINTS = 32, 4, 2, 3, 8
TINY_TRUNK = "resnet_tiny_ibn_a"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def synthetic_config(name: str) -> Path:
    """The packaged `configs/<name>/synthetic.yaml`; a registered method without one fails here."""
    path = PACKAGED_CONFIGS / name / "synthetic.yaml"
    if not path.is_file():
        pytest.fail(f"method '{name}' is registered but has no packaged synthetic config {path}")
    return path


def shrink_overrides(path: Path) -> list[str]:
    """32 x 32 images, and the tiny IBN-a trunk for every backbone the config has."""
    model = load_experiment(path).model
    overrides = [f"data.height={SIZE}", f"data.width={SIZE}"]
    if hasattr(model, "backbone"):   # the tiny trunk has no ImageNet source: from random weights
        overrides += [f"model.backbone.name={TINY_TRUNK}", "model.backbone.pretrained=null"]
    if hasattr(model, "backbones"):
        overrides.append(f"model.backbones=[{', '.join(f'{{name: {TINY_TRUNK}}}' for _ in model.backbones)}]")
    return overrides


def tiny_method(name: str, seed: int = 0) -> ReidMethod:
    """The method of `configs/<name>/synthetic.yaml`, shrunk, built for IDS classes seen by CAMERAS cameras."""
    path = synthetic_config(name)
    cfg = load_experiment(path, shrink_overrides(path))
    info = DataInfo(num_classes=IDS, num_cameras=CAMERAS, num_viewpoints=VIEWPOINTS, height=cfg.data.height,
                    width=cfg.data.width, mean=tuple(cfg.data.mean), std=tuple(cfg.data.std))
    torch.manual_seed(seed)
    return build_method(cfg.model, info)


def tiny_batch(seed: int = 0, method: ReidMethod | None = None) -> Batch:
    """A P x K training batch in the contract of vreid.data.dataset, every field filled; for a method that
    trains on features (`inputs = "features"`), P x K probes with their neighbourhoods (vreid.data.features)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(IDS).repeat_interleave(PER_ID)
    n = len(labels)
    if method is not None and method.inputs == "features":
        from vreid.data.features import neighbourhood_batch

        rows = torch.randn(n, method.net.cfg.in_dim, generator=g)
        k = method.neighbours   # neighbour lists wrap around the tiny table: k may exceed n - 1
        neighbours = (torch.arange(n)[:, None] + 1 + torch.arange(k)) % n
        return neighbourhood_batch(rows, labels, neighbours, torch.arange(n))
    return {"images": torch.randn(n, 3, SIZE, SIZE, generator=g), "labels": labels, "vehicle_ids": labels + 100,
            "camera_ids": torch.arange(n) % CAMERAS, "viewpoints": torch.arange(n) % VIEWPOINTS,
            "indices": torch.arange(n)}


def give_pseudo_labels(method: ReidMethod, batch: Batch) -> None:
    """What `usl`'s pseudo-label hook does before an epoch: every backbone learns the batch's labels as clusters."""
    labels, subset = batch["labels"].numpy(), np.arange(len(batch["labels"]))
    with torch.no_grad():
        outputs = method(batch)
    for b in range(len(method.encoders)):
        method.set_pseudo_labels(b, labels, outputs[f"feat{b}"], subset)


#: method name -> what the trainer's hooks would have done before the first step (methods not listed need nothing;
#: a method with `set_pseudo_labels`, as usl and vapc, gets `give_pseudo_labels` without an entry).
PREPARE: dict[str, Callable[[ReidMethod, Batch], None]] = {}


def preparation(name: str, method: ReidMethod) -> Callable[[ReidMethod, Batch], None] | None:
    if name in PREPARE:
        return PREPARE[name]
    return give_pseudo_labels if hasattr(method, "set_pseudo_labels") else None


def trained_method(name: str) -> tuple[ReidMethod, Batch]:
    """The tiny method in train mode, ready for a training step on the tiny batch."""
    method = tiny_method(name).train()
    batch = tiny_batch(method=method)
    prepare = preparation(name, method)
    if method.unsupervised and prepare is None:
        pytest.fail(f"unsupervised method '{name}' needs a PREPARE entry (or set_pseudo_labels) that gives it labels")
    if prepare is not None:
        prepare(method, batch)
    return method, batch


class StubTrainer:
    """What step-level hooks read from the trainer: one CPU process at its first step."""

    def __init__(self) -> None:
        self.step, self.epoch, self.device, self.dist = 0, 0, torch.device("cpu"), DistInfo(0, 1)


def hooked_step(method: ReidMethod, batch: Batch, hooks: list[Hook], trainer: StubTrainer) -> None:
    """One optimizer step with the calls the trainer makes around it, in hook priority order."""
    optimizer = torch.optim.SGD(method.param_groups(load_experiment(None).optim), lr=1e-3)
    for hook in hooks:
        hook.before_step(trainer, batch)
    outputs = method(batch)
    losses = method.losses(outputs, batch)
    sum(losses.values()).backward()
    for hook in hooks:
        hook.after_backward(trainer)
    optimizer.step()
    for hook in hooks:
        hook.after_step(trainer, batch, outputs, losses)
    trainer.step += 1


def embed(method: ReidMethod, batch: Batch) -> torch.Tensor:
    """The retrieval features of the batch's images, with their side information (a features method: the
    refined embeddings of the batch's neighbourhoods)."""
    if method.inputs == "features":
        return method.embed(batch["features"])
    return method.embed(batch["images"], batch["camera_ids"], batch["viewpoints"])


methods = pytest.mark.parametrize("name", METHODS.names())


@methods
def test_forward_gives_named_outputs_and_finite_scalar_losses(name):
    method, batch = trained_method(name)
    outputs = method(batch)
    assert outputs and all(isinstance(v, torch.Tensor) for v in outputs.values())
    losses = method.losses(outputs, batch)
    assert losses, f"{name}: no losses"
    for key, loss in losses.items():
        assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss '{key}' = {loss}"


@methods
def test_backward_gives_finite_gradients(name):
    method, batch = trained_method(name)
    sum(method.losses(method(batch), batch).values()).backward()
    grads = {n: p.grad for n, p in method.named_parameters() if p.grad is not None}
    assert any(g.abs().sum() > 0 for g in grads.values()), f"{name}: no parameter got a gradient"
    assert all(torch.isfinite(g).all() for g in grads.values()), f"{name}: non-finite gradient"


@methods
def test_embed_is_finite_and_deterministic_in_eval_mode(name):
    method = tiny_method(name).eval()
    batch = tiny_batch(method=method)
    first, second = embed(method, batch), embed(method, batch)
    assert first.ndim == 2 and first.shape[0] == len(batch["labels"]) and torch.isfinite(first).all()
    assert torch.equal(first, second)


@methods
def test_hooks_and_param_groups(name):
    method = tiny_method(name)
    assert all(isinstance(h, Hook) for h in method.hooks())
    groups = method.param_groups(load_experiment(synthetic_config(name)).optim)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert grouped and len(grouped) == len(set(grouped)), f"{name}: a parameter is in two groups"
    assert set(grouped) <= {id(p) for p in method.parameters()}


@methods
def test_steps_through_the_hooks_keep_losses_finite(name):
    """Momentum encoders, queues and EMA teachers move in after_step; the next step must still train."""
    method, batch = trained_method(name)
    hooks, trainer = sorted(method.hooks(), key=lambda h: h.priority), StubTrainer()
    for hook in hooks:
        hook.before_train(trainer)
    for _ in range(2):
        hooked_step(method, batch, hooks, trainer)
    losses = method.losses(method(batch), batch)
    assert all(torch.isfinite(v) for v in losses.values()), f"{name}: {losses}"
    assert all(isinstance(h.state_dict(), dict) for h in hooks)


@methods
def test_bundle_round_trip_gives_the_same_embedding(name, tmp_path):
    method, batch = trained_method(name)
    method(batch)  # one training forward: BN statistics move away from their initial values
    method.eval()
    save_bundle(tmp_path, method)
    loaded = load_bundle(tmp_path)
    assert type(loaded) is type(method) and not loaded.training
    assert torch.allclose(embed(loaded, batch), embed(method, batch), rtol=0, atol=1e-6)
