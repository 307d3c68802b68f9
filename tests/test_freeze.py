"""FreezeModules keeps a sub-module's weights and BN statistics fixed for the first epochs, then releases it."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from vreid.engine.freeze import FreezeModules


def test_frozen_module_does_not_change_then_trains():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    hook = FreezeModules(model, ["0", "1"], epochs=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def step(epoch):
        trainer = SimpleNamespace(epoch=epoch)
        hook.before_epoch(trainer)
        model.train()
        hook.before_step(trainer, None)
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()

    step(0)
    after = model.state_dict()
    for k in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["2.weight"], after["2.weight"])
    step(1)
    assert not torch.equal(before["0.weight"], model.state_dict()["0.weight"])


def _requires_grad(module: nn.Module) -> bool:
    return all(p.requires_grad for p in module.parameters())


def test_step_valued_freeze_releases_mid_epoch():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    hook = FreezeModules(model, ["0"], steps=2)
    hook.before_epoch(SimpleNamespace(epoch=0, step=0))
    seen = []
    for step in range(4):
        hook.before_step(SimpleNamespace(epoch=0, step=step), None)
        seen.append(_requires_grad(model[0]))
    assert seen == [False, False, True, True] and _requires_grad(model[1])


def test_epoch_valued_freeze_holds_in_a_run_resumed_mid_epoch():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    hook = FreezeModules(model, ["0"], epochs=1)
    hook.before_step(SimpleNamespace(epoch=0, step=5), None)  # resumed mid-epoch: no before_epoch call
    assert not _requires_grad(model[0])


def test_a_freeze_needs_exactly_one_unit():
    model = nn.Sequential(nn.Linear(4, 4))
    for units in ({}, {"epochs": 1, "steps": 1}):
        with pytest.raises(ValueError, match="exactly one of epochs and steps"):
            FreezeModules(model, ["0"], **units)


def test_sbs_freezes_its_backbone_with_the_same_hook():
    from vreid.config.loader import build
    from vreid.methods import DataInfo, build_method
    from vreid.methods.sbs import SbsConfig

    cfg = build(SbsConfig, {"backbone": {"name": "resnet_tiny_ibn_a"}, "non_local": [0, 0, 0, 0],
                                "freeze_backbone_steps": 3})
    method = build_method(cfg, DataInfo(num_classes=4, num_cameras=2, height=32, width=32))
    (hook,) = [h for h in method.hooks() if isinstance(h, FreezeModules)]
    assert (hook.unit, hook.steps, hook.modules) == ("steps", 3, [method.backbone])
