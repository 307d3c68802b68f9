"""Engine pieces: schedules, checkpoint state round-trips, atomic writes, registry errors."""
import json
import random

import numpy as np
import pytest
import torch

from vreid.config.schema import ScheduleConfig
from vreid.engine import checkpoint as ckpt
from vreid.engine.schedule import build_schedule
from vreid.fileio import atomic_path, write_json_atomic
from vreid.registry import Registry, RegistryError


def test_warmup_multistep_values():
    f = build_schedule(ScheduleConfig(name="warmup_multistep", epochs=120, warmup_epochs=10, warmup_factor=0.01,
                                      milestones=[40, 70], gamma=0.1))
    assert f(0) == pytest.approx(0.01)
    assert f(5) == pytest.approx(0.01 * 0.5 + 0.5)
    assert f(10) == pytest.approx(1.0) and f(39.9) == pytest.approx(1.0)
    assert f(40) == pytest.approx(0.1) and f(70) == pytest.approx(0.01)


def test_warmup_multistep_hold_reproduces_the_official_mbr_timing():
    """Official MBR: base lr while the trunk is frozen (9 epochs, no scheduler), then warmup from 0 over 10
    epochs and milestones [40, 70, 100] counted from there."""
    f = build_schedule(ScheduleConfig(name="warmup_multistep", epochs=130, warmup_epochs=10, warmup_factor=0.0,
                                      milestones=[40, 70, 100], hold_epochs=9))
    assert f(0) == f(8.9) == 1.0
    assert f(9) == pytest.approx(0.0) and f(14) == pytest.approx(0.5) and f(19) == pytest.approx(1.0)
    assert f(48.9) == pytest.approx(1.0) and f(49) == pytest.approx(0.1) and f(109) == pytest.approx(0.001)


def test_warmup_cosine_values():
    f = build_schedule(ScheduleConfig(name="warmup_cosine", epochs=20, warmup_epochs=2, delay_epochs=4,
                                      warmup_factor=0.1, min_lr_factor=0.0))
    assert f(0) == pytest.approx(0.1) and f(3) == pytest.approx(1.0)
    assert f(12) == pytest.approx(0.5) and f(20) == pytest.approx(0.0, abs=1e-12)


def test_state_flatten_round_trip_with_optimizer_and_rng():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": ckpt.rng_state(), "labels": [1, -1, 2], "t": (1, 2.5)}
    expected = (random.random(), np.random.rand(), torch.rand(1))  # draws right after the snapshot
    tensors = {}
    skeleton = ckpt.flatten_state(state, tensors)
    json.dumps(skeleton)  # the skeleton must be JSON-able
    back = ckpt.unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["labels"] == [1, -1, 2] and back["t"] == (1, 2.5)
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(back["optimizer"])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt2.state_dict()["state"][0][k]))
    random.random(), np.random.rand(), torch.rand(1)  # move every generator on
    ckpt.set_rng_state(back["rng"])
    again = (random.random(), np.random.rand(), torch.rand(1))
    assert again[0] == expected[0] and again[1] == expected[1] and torch.equal(again[2], expected[2])


def test_training_checkpoint_is_atomic_and_pointer_moves(tmp_path):
    model = torch.nn.Linear(2, 2)
    ckpt.save_training_checkpoint(tmp_path, 1, model, {"step": 1})
    ckpt.save_training_checkpoint(tmp_path, 2, model, {"step": 2})
    ckpt.save_training_checkpoint(tmp_path, 3, model, {"step": 3})
    last = ckpt.latest_checkpoint(tmp_path)
    assert last.name == "step-00000003"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["step-00000002", "step-00000003"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    other = torch.nn.Linear(2, 2)
    state = ckpt.load_training_checkpoint(last, other)
    assert state["step"] == 3 and torch.equal(other.weight, model.weight)
    (last / "state.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="state.json"):
        ckpt.load_training_checkpoint(last, other)


def test_weights_that_do_not_fit_name_the_file(tmp_path):
    ckpt.save_model_weights(tmp_path / "m.safetensors", torch.nn.Linear(2, 2))
    with pytest.raises(ckpt.CheckpointError, match=r"m\.safetensors.*missing keys"):
        ckpt.load_model_weights(tmp_path / "m.safetensors", torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_registry_lists_names_on_unknown():
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(RegistryError, match="unknown thing 'b'; available: a"):
        reg.get("b")
    with pytest.raises(RegistryError, match="twice"):
        reg.register("a")(int)


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    write_json_atomic(tmp_path / "a.json", {})
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
