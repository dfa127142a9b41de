"""The processes that train one run: one, or one per device under ``torchrun``
(DistributedDataParallel; gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import distributed as dist

from fwp.errors import UserError


@dataclass
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def any(self, *flags: bool) -> list[bool]:
        """Each flag, true on any rank."""
        values = torch.tensor(flags, dtype=torch.float32, device=self.device)
        if self.size > 1:
            dist.all_reduce(values)
        return [bool(v > 0) for v in values]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when torch sees it, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}, but torch sees no CUDA device; use --device cpu")
    return device


def setup_world(device: str = "auto") -> World:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), pick the device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        if size > 1:
            chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        atexit.register(_leave)
    return World(rank, size, chosen)


def _leave() -> None:
    """Destroy the process group while the interpreter is whole: left to finalisation, gloo's
    worker threads can abort the process (SIGABRT) after a finished run."""
    if dist.is_initialized():
        dist.destroy_process_group()
