"""MoReID and its parts: non-local insertion, the EMA key encoder, the labelled FIFO queue, DDP gather + enqueue,
and a tiny end-to-end run through the trainer (key encoder and queue survive a checkpoint and resume)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import tiny_overrides
from vreid.config import load_experiment
from vreid.engine.distributed import DistInfo
from vreid.engine.momentum import FeatureQueue, MomentumQueueHook, ema_update_, make_key_encoder
from vreid.methods import DataInfo, build_method
from vreid.methods.moreid import MoReIDConfig
from vreid.models import create_backbone
from vreid.models.backbones.config import BackboneConfig
from vreid.models.nonlocal_block import NonLocalStage, insert_non_local


class FakeTrainer:
    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        self.dist, self.device, self.step = DistInfo(rank, world_size), torch.device("cpu"), 0


def tiny_moreid(**kw) -> torch.nn.Module:
    cfg = MoReIDConfig(backbone=BackboneConfig(name="resnet_tiny_ibn_a"), non_local=[0, 1, 1, 0], dict_size=16, **kw)
    return build_method(cfg, DataInfo(num_classes=6, height=32, width=32))


def batch(n_ids: int = 3, k: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(n_ids * k, 3, 32, 32, generator=g),
            "labels": torch.arange(n_ids).repeat_interleave(k)}


def test_non_local_keeps_names_and_starts_as_identity():
    net = create_backbone("resnet_tiny_ibn_a").eval()
    x = torch.randn(2, 3, 32, 32)
    before, names = net(x), set(net.state_dict())
    insert_non_local(net, [0, 1, 1, 0])
    assert isinstance(net.layer2, NonLocalStage) and "0" in net.layer3.non_local
    assert names <= set(net.state_dict())  # pretrained weights still load by name
    assert torch.allclose(net(x), before)
    with pytest.raises(ValueError, match="only 1 residual blocks"):
        insert_non_local(create_backbone("resnet_tiny_ibn_a"), [0, 2, 0, 0])


def test_key_encoder_gets_no_gradient_and_follows_the_ema_rule():
    method = tiny_moreid(momentum=0.9)
    b = batch()
    out = method(b)
    assert out["keys"].shape == out["feat"].shape and not out["keys"].requires_grad
    sum(method.losses(out, b).values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in method.key_encoder.parameters())
    # key encoder and its query are not part of the method's weights or parameters
    assert not any(k.startswith(("key_encoder", "query_encoder")) for k in method.state_dict())
    keys_before = [p.clone() for p in method.key_encoder.parameters()]
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.5)
    hook = method.hooks()[-1]
    assert isinstance(hook, MomentumQueueHook)
    hook.after_step(FakeTrainer(), b, out, {})
    for k_old, k_new, q in zip(keys_before, method.key_encoder.parameters(), method.query_encoder.parameters()):
        assert torch.allclose(k_new, 0.9 * k_old + 0.1 * q, atol=1e-6)


def test_ema_update_moves_float_buffers_and_copies_counters():
    q = torch.nn.BatchNorm1d(3)
    k = make_key_encoder(q)
    q.running_mean.fill_(1.0)
    q.num_batches_tracked.fill_(7)
    ema_update_(k, q, 0.75)
    assert torch.allclose(k.running_mean, torch.full((3,), 0.25)) and int(k.num_batches_tracked) == 7


def test_queue_holds_the_last_keys_with_their_labels():
    queue = FeatureQueue(size=5, dim=2)
    assert (queue.labels == -1).all()
    for step in range(4):  # 4 batches of 2 keys = 8 keys into 5 slots
        feats = torch.tensor([[step, 0.0], [step, 1.0]])
        queue.enqueue(feats, torch.tensor([10 * step, 10 * step + 1]))
    feats, labels = queue.ordered()
    assert labels.tolist() == [11, 20, 21, 30, 31]
    assert feats[:, 0].tolist() == [1, 2, 2, 3, 3]
    restored = FeatureQueue(5, 2)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.ordered()[1], labels) and restored.ptr == queue.ptr
    queue.enqueue(torch.zeros(7, 2), torch.arange(7))  # more than it holds: the newest 5
    assert queue.ordered()[1].tolist() == [2, 3, 4, 5, 6]


def test_queue_contributes_negatives_only():
    method = tiny_moreid(he_reduction="sum")
    method.eval()  # fixed BN statistics: the same images give the same features
    b = batch()
    out = method(b)
    base = method.he(out["feat"], b["labels"])
    # fill the dictionary with keys of the batch's own identities: no positives, no negatives -> same loss
    method.queue.enqueue(out["feat"] + 50.0, b["labels"])
    assert torch.allclose(method.losses(out, b)["he"], base)
    # keys of other identities right on top of the anchors: hardest negatives at ~0 -> the loss grows
    method.queue.enqueue(out["feat"].repeat(3, 1)[:16], torch.full((16,), 5))
    assert float(method.losses(out, b)["he"].detach()) > float(base.detach()) + 1e-3


def _ddp_worker(rank: int, world_size: int, port: int, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        method = tiny_moreid()
        b = batch(seed=rank)
        b["labels"] = b["labels"] + 3 * rank  # ranks hold different identities
        out = method(b)
        hook = method.hooks()[-1]
        hook.after_step(FakeTrainer(rank, world_size), b, out, {})
        feats, labels = method.queue.ordered()
        torch.save({"labels": labels, "feats": feats, "keys": out["keys"]}, f"{result_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_enqueues_keys_from_every_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # rank 0's keys, then rank 1's
    assert torch.equal(r0["labels"], r1["labels"]) and torch.allclose(r0["feats"], r1["feats"])
    assert torch.allclose(r0["feats"], torch.cat([r0["keys"], r1["keys"]]))


def test_tiny_training_run_keeps_queue_in_checkpoint(tiny_world, tmp_path):
    from safetensors.torch import load_file

    from vreid.engine.run import load_data
    from vreid.engine.trainer import Trainer

    overrides = tiny_overrides(tiny_world, tmp_path, **{
        "model.name": "moreid", "model.non_local": "[0,1,1,0]", "model.dict_size": 16,
        "model.freeze_backbone_steps": 2, "train.checkpoint_every_epochs": 1, "schedule.epochs": 1})
    cfg = load_experiment(None, overrides)
    dataset = load_data(cfg)
    trainer = Trainer(cfg, dataset)
    try:
        results = trainer.fit()
    finally:
        trainer.close()
    resumed = Trainer(cfg, dataset)  # a fresh process picking the run up: the dictionary comes back
    resumed._resume()
    assert torch.equal(resumed.method.queue.labels, trainer.method.queue.labels)
    assert torch.allclose(resumed.method.queue.features, trainer.method.queue.features)
    assert resumed.method.queue.ptr == trainer.method.queue.ptr
    for a, b in zip(resumed.method.key_encoder.state_dict().values(), trainer.method.key_encoder.state_dict().values()):
        assert torch.equal(a, b)
    assert 0.0 <= results["mAP"] <= 1.0
    assert trainer.method.queue.count == min(16, trainer.step * 8)
    hook_state = trainer.state()["hooks"]
    (key,) = [k for k in hook_state if k.endswith("MomentumQueueHook")]
    assert torch.equal(hook_state[key]["queue"]["labels"], trainer.method.queue.labels)
    state = load_file(str(next((tmp_path / "checkpoints").glob("step-*")) / "state.safetensors"))
    assert any(v.shape == (16,) and v.dtype == torch.long for v in state.values())  # the queue labels
    assert not any(k.startswith("key_encoder") for k in load_file(str(tmp_path / "model.safetensors")))
