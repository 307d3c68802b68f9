"""FreezeModules keeps a sub-module's weights and BN statistics fixed for the first epochs, then releases it."""
from types import SimpleNamespace

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
