"""One process or many: the process group, the device, and the few collectives we need.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK, and its processes join one group, however many
there are; without them everything runs in one process, with no group. Gloo serves CPUs, NCCL GPUs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cosa.config.schema import DEVICE_NAMES, is_device_name
from cosa.errors import CosaError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """In a process group: started by ``torchrun``, also with one process, which then runs the
        code of many (DistributedDataParallel, collectives)."""
        return dist.is_available() and dist.is_initialized()


def resolve_device(name: str, local_rank: int = 0, setting: str = "--device") -> torch.device:
    """The device ``name`` (auto, cpu, cuda, cuda:N) means here; a missing GPU is an error naming ``setting``."""
    if not is_device_name(name):
        raise CosaError(f"{setting}={name}: not a device ({DEVICE_NAMES})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = f"cuda:{local_rank}" if name == "cuda" else name
    device = torch.device(resolved)
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        here = f"CUDA devices here: cuda:0..cuda:{count - 1}" if count else "no CUDA device here"
        raise CosaError(f"{setting}={name}: {device} is not available ({here}; {setting}=auto uses what there is)")
    return device


def init_distributed(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group if there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank, "train.device")
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistContext(rank, world_size, local_rank, resolved)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes (in place where the backend allows; NCCL needs a GPU copy)."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.cuda()
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        return on_gpu.to(tensor.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_process(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any process: one collective that every process must reach."""
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item())


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's ``tensor`` along dim 0, in rank order (same shape everywhere)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def average_buffers(module: torch.nn.Module, world_size: int) -> None:
    """Average floating-point buffers (BatchNorm statistics) over processes, in one collective.

    Each process updates its running statistics from its own images; averaging them after every
    step keeps all processes' networks identical, so the EMA gives one assignment network.
    """
    buffers = [buffer for buffer in module.buffers() if buffer.is_floating_point()]
    if world_size == 1 or not buffers:
        return
    flat = all_reduce_sum(torch.cat([buffer.flatten() for buffer in buffers])) / world_size
    offset = 0
    for buffer in buffers:
        buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
