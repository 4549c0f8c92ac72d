"""One run on several processes with torch.distributed (``torchrun --nproc-per-node K taskgeom train ...``).

Data parallel in the exact sense: every rank draws the same global batch (same seed, same augmentation,
on its own copy of the task data) and takes its contiguous share; the model is wrapped in
``DistributedDataParallel`` (gradients averaged over ranks = the gradient of the global batch's mean
loss), and BatchNorm layers are synchronised across ranks (``torch.nn.SyncBatchNorm`` on GPUs; on the
CPU, where PyTorch's SyncBatchNorm does not run, :class:`CPUSyncBatchNorm` all-reduces the batch sums
with autograd), so that a K-process run follows the single-process run with the same global batch to
float tolerance. Rank 0 alone records checkpoints, writes the store and saves the training state; every
rank resumes from that state after a kill.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Dist", "setup", "finish", "CPUSyncBatchNorm", "wrap_model"]


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (equal shares)."""
        if not self.active:
            return x
        if x.shape[0] % self.world:
            raise ValueError(
                f"the global batch of {x.shape[0]} does not split evenly over {self.world} processes; "
                "choose --batch-size divisible by the number of processes"
            )
        k = x.shape[0] // self.world
        return x[self.rank * k : (self.rank + 1) * k]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, obj):
        """``obj`` of rank 0 on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup(device_name: str) -> tuple[Dist, str]:
    """The process group of a ``torchrun`` launch (none for a single process) and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    return Dist(dist.get_rank(), dist.get_world_size(), local), device_name


def finish() -> None:
    """This process's end of a ``torchrun`` launch (nothing for a single process): wait for every rank, then
    close the process group. A group left open is torn down at interpreter exit, where gloo's communication
    threads can still be running: a rank then aborts ("terminate called without an active exception",
    SIGABRT) after its work is done, and torchrun fails the whole run. Under torchrun, a rank other than 0
    then exits at once (it writes nothing)."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        dist.barrier()
        dist.destroy_process_group()
        if rank != 0 and os.environ.get("TORCHELASTIC_RUN_ID"):
            # A torchrun worker other than rank 0 has written nothing and closed its group: it leaves without
            # the interpreter's teardown, where torch's remaining threads could still abort it (seen once
            # more in CI under load, with the group closed) and fail a finished run.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)
        return g


class CPUSyncBatchNorm(torch.nn.BatchNorm2d):
    """BatchNorm over the global batch of all ranks, on the CPU: per-channel sums and sums of squares are
    all-reduced (differentiably), the running statistics updated as BatchNorm2d does."""

    def forward(self, x):
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        count = torch.tensor([x.numel() / c], dtype=x.dtype)
        stats = _AllReduceSum.apply(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
                self.num_batches_tracked.add_(1)
        y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def _convert_cpu(module: torch.nn.Module) -> torch.nn.Module:
    out = module
    if isinstance(module, torch.nn.BatchNorm2d) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        out.load_state_dict(module.state_dict())
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out


def wrap_model(model: torch.nn.Module, d: Dist, device: torch.device):
    """(model with synchronised BatchNorm, its DistributedDataParallel wrapper for training steps)."""
    if not d.active:
        return model, model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model, DistributedDataParallel(model, device_ids=[device.index])
    model = _convert_cpu(model)
    return model, DistributedDataParallel(model)
