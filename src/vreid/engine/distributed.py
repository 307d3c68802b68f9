"""PyTorch DDP under torchrun: process-group set-up and the few collectives the engine needs."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK).

    NCCL on CUDA, gloo on CPU. Without those variables this is a single-process run.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


@contextmanager
def process_group(device: torch.device) -> Iterator[tuple[DistInfo, torch.device]]:
    """The group torchrun describes, joined for the block (and left after it if joined here), and this
    process's device (its own GPU under NCCL)."""
    joined_here = not dist.is_initialized()
    info = init_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        yield info, device
    except BaseException:
        if joined_here:
            cleanup(info)
        raise
    if joined_here:
        barrier(info)  # leave together: a rank that tears gloo down while another still talks can abort it
        cleanup(info)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate equal-shaped tensors from every rank along dim 0 (rank order). No gradient."""
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def current_dist() -> DistInfo:
    """The process group this process has joined (torch.distributed initialised), else a lone process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _comm_device() -> torch.device:
    """Where collectives take their tensors: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_uneven(tensor: torch.Tensor, info: DistInfo, dst: int | None = None) -> list[torch.Tensor]:
    """Every rank's tensor (same ndim, sizes may differ), in rank order, on the input's device. No gradient.

    With `dst`, only rank `dst` receives them (the others get []).
    """
    if not info.enabled:
        return [tensor]
    device = _comm_device()
    local = tensor.detach().to(device)
    shape = torch.tensor(local.shape, dtype=torch.int64, device=device)
    shapes = [torch.empty_like(shape) for _ in range(info.world_size)]
    dist.all_gather(shapes, shape)
    sizes = [tuple(s.tolist()) for s in shapes]
    padded = local.new_zeros([max(dims) for dims in zip(*sizes)])  # collectives move equal shapes only
    padded[tuple(slice(0, n) for n in local.shape)] = local
    if dst is None:
        parts = [torch.empty_like(padded) for _ in range(info.world_size)]
        dist.all_gather(parts, padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(info.world_size)] if info.rank == dst else None
        dist.gather(padded, parts, dst=dst)
        if parts is None:
            return []
    return [p[tuple(slice(0, n) for n in size)].to(tensor.device) for p, size in zip(parts, sizes)]


def max_over_ranks(value: int, info: DistInfo) -> int:
    """The largest of every rank's `value` (the value itself outside a process group)."""
    if not info.enabled:
        return value
    flag = torch.tensor([value], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The elementwise sum over ranks, as a new tensor on the input's device."""
    if not info.enabled:
        return tensor
    total = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(tensor.device)


def broadcast_object(obj, info: DistInfo, src: int = 0):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
