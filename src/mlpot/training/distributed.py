"""Data-parallel training over processes that ``torchrun`` starts (``torch.distributed``:
gloo on CPUs, NCCL on GPUs).

Every process holds the whole model and reads the whole data; each takes its shard
(``rank::world``) of every global batch, so the global batch size is the config's
``batch_size`` whatever the number of processes. The loss of a shard divides its sums by
the number of entries of the *global* batch (counts added over processes first), and the
gradients are summed over processes after each backward pass: the step is exactly the
one-process step on the global batch, as ``DistributedDataParallel`` computes it. (Forces
in the loss need a second backward through the model, and the loss calls model methods
beside ``forward``; summing the gradients explicitly keeps that one mechanism plain.)

Process 0 alone writes files (model, training state, history, metrics) and evaluates
the validation set; the others receive its figures, so every decision (learning-rate
schedule, early stopping, time budget) is the same everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place: ``rank`` among ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes files and evaluates the validation set."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) with others."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "cpu") -> Ranks:
    """Join the process group torchrun describes in the environment (once); on a GPU,
    each process takes the GPU of its local rank. Without a launcher: one process."""
    if launched() and not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current()


def current() -> Ranks:
    """The ranks of the process group, or one process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def sum_counts(counts: dict[str, int], device: torch.device | str) -> dict[str, int]:
    """The counts added over processes."""
    names = sorted(counts)
    values = torch.tensor([counts[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return {n: int(v) for n, v in zip(names, values.tolist(), strict=True)}


def sum_tensor(value: torch.Tensor) -> torch.Tensor:
    """A (detached) tensor added over processes."""
    value = value.detach().clone()
    dist.all_reduce(value)
    return value


def sum_gradients(module: torch.nn.Module) -> None:
    """Add every parameter's gradient over processes (a missing one counts as zero)."""
    for parameter in module.parameters():
        if not parameter.requires_grad:
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)


def broadcast_module(module: torch.nn.Module) -> None:
    """Process 0's parameters and buffers, everywhere (one starting point)."""
    for tensor in (*module.parameters(), *module.buffers()):
        dist.broadcast(tensor.data, src=0)


def broadcast(value: Any) -> Any:
    """Process 0's (picklable) value, everywhere."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if current().parallel:
        dist.barrier()
