"""Momentum (EMA) key encoders and labelled FIFO feature queues, and the hook that keeps them up to date.

A method that wants MoCo-style keys builds a `key_encoder = make_key_encoder(query_encoder)`, computes keys with it
under no_grad in its forward, reads `queue.features / queue.labels` in its losses, and returns
`MomentumQueueHook(...)` from `hooks()`. After every optimizer step the hook moves the key encoder by the EMA rule
and enqueues the keys of the whole (all-process) batch. The key encoder and the queue are deliberately not
submodules or buffers of the method: they stay out of the exported weights and out of DDP's buffer broadcast,
and the hook's state_dict carries them through checkpoints and resume.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vreid.engine.distributed import DistInfo, all_gather_cat
from vreid.engine.hooks import Hook


def make_key_encoder(query: nn.Module) -> nn.Module:
    """A frozen deep copy of `query`: same weights now, never trained by the optimizer."""
    key = copy.deepcopy(query)
    for p in key.parameters():
        p.requires_grad_(False)
    return key


@torch.no_grad()
def ema_update_(key: nn.Module, query: nn.Module, momentum: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q for parameters and float buffers; other buffers are copied."""
    for k, q in zip(key.parameters(), query.parameters()):
        k.lerp_(q.detach().to(k.dtype), 1.0 - momentum)
    for k, q in zip(key.buffers(), query.buffers()):
        if k.dtype.is_floating_point:
            k.lerp_(q.to(k.dtype), 1.0 - momentum)
        else:
            k.copy_(q)


class FeatureQueue:
    """A fixed-size FIFO of feature vectors with their labels; label -1 marks a slot not filled yet."""

    def __init__(self, size: int, dim: int) -> None:
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.features = torch.zeros(size, dim)
        self.labels = torch.full((size,), -1, dtype=torch.long)
        self.ptr = 0  # next slot to overwrite
        self.count = 0  # keys enqueued so far (saturates at size)

    @property
    def size(self) -> int:
        return self.features.shape[0]

    def to(self, device: torch.device | str) -> "FeatureQueue":
        self.features, self.labels = self.features.to(device), self.labels.to(device)
        return self

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Write the new keys over the oldest ones (wrapping around); keeps the last `size` keys."""
        features = features.detach().to(self.features.device, self.features.dtype)
        labels = labels.detach().to(self.labels.device, torch.long)
        n = features.shape[0]
        if n >= self.size:  # more keys than slots: only the newest fit
            features, labels, n = features[-self.size:], labels[-self.size:], self.size
        slots = (self.ptr + torch.arange(n, device=self.labels.device)) % self.size
        self.features[slots] = features
        self.labels[slots] = labels
        self.ptr = (self.ptr + n) % self.size
        self.count = min(self.count + n, self.size)

    def ordered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of the filled slots, oldest first."""
        order = (self.ptr - self.count + torch.arange(self.count, device=self.labels.device)) % self.size
        return self.features[order], self.labels[order]

    def state_dict(self) -> dict[str, Any]:
        return {"features": self.features, "labels": self.labels, "ptr": self.ptr, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["features"].shape) != tuple(self.features.shape):
            raise ValueError(f"queue state has shape {tuple(state['features'].shape)}, this queue "
                             f"{tuple(self.features.shape)}; the dictionary size or feature dim changed")
        self.features.copy_(state["features"])
        self.labels.copy_(state["labels"])
        self.ptr, self.count = int(state["ptr"]), int(state["count"])


def gather_keys(keys: torch.Tensor, labels: torch.Tensor, dist: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and labels of every process, in rank order (each process holds equal-sized P x K batches)."""
    return all_gather_cat(keys.detach().float(), dist), all_gather_cat(labels.detach(), dist)


class MomentumQueueHook(Hook):
    """After each step: EMA-update `key_encoder` from `query_encoder`, then enqueue the step's keys.

    Keys are read from `outputs[keys_output]` and labels from `batch[labels_key]`; under DDP both are gathered
    from every process first, so all processes hold the same queue. `queue` may be None (EMA only).
    """

    priority = 60

    def __init__(self, key_encoder: nn.Module, query_encoder: nn.Module, queue: FeatureQueue | None,
                 momentum: float, keys_output: str = "keys", labels_key: str = "labels") -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.key_encoder, self.query_encoder, self.queue = key_encoder, query_encoder, queue
        self.momentum, self.keys_output, self.labels_key = momentum, keys_output, labels_key

    def before_train(self, trainer) -> None:
        self.key_encoder.to(trainer.device)
        if self.queue is not None:
            self.queue.to(trainer.device)

    def after_step(self, trainer, batch, outputs, losses) -> None:
        ema_update_(self.key_encoder, self.query_encoder, self.momentum)
        if self.queue is not None and self.keys_output in outputs:
            keys, labels = gather_keys(outputs[self.keys_output], batch[self.labels_key], trainer.dist)
            self.queue.enqueue(keys, labels)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"key_encoder": dict(self.key_encoder.state_dict())}
        if self.queue is not None:
            state["queue"] = self.queue.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.key_encoder.load_state_dict(state["key_encoder"])
        if self.queue is not None and "queue" in state:
            self.queue.load_state_dict(state["queue"])
