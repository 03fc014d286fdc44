"""Data-parallel training over processes: ``torchrun --nproc_per_node N -m yolo_transfer train`` (or
``train --devices 0,1,2,3``, which starts the same processes through torch's elastic launcher).

Every process holds the whole model; :class:`Distributed` is what the trainer asks about the others. The
user's ``--batch`` is the global batch: each of the ``world_size`` processes loads ``batch // world_size``
images per step through a DistributedSampler reseeded every epoch, and the loss is scaled by the world size
so that DDP's gradient average equals the gradient of the global batch in one process. At every phase start
the model is wrapped anew in DDP over the parameters that train in that phase (the frozen prefix stays out of
autograd and out of DDP). Rank 0 alone validates, prints and writes files; the others receive its metrics,
so every rank takes the same decisions (phase ends, early stop). Backends: nccl on CUDA, gloo on the CPU;
collectives time out after ``YOLO_TRANSFER_DDP_TIMEOUT`` seconds (default 1800), so a lost rank ends the run
with an error instead of a hang.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from yolo_transfer.engine.device import select_device
from yolo_transfer.errors import ConfigError, TrainingError, YoloTransferError

TIMEOUT_ENV = "YOLO_TRANSFER_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
REFUSED = 2  # the exit code of a refused input, as the command line's
PEER_LOST = 3  # the exit code of a rank whose collective failed because another rank ended first
# what gloo (the CPU) and NCCL (CUDA) say when a collective fails because another process ended
PEER_LOST_SIGNS = ("Connection closed by peer", "Connection reset by peer", "remote process exited")
T = TypeVar("T")


@dataclass
class Distributed:
    """This process's place among the training processes (one process: rank 0 of 1, nothing to share)."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    net: nn.Module | None = field(default=None, repr=False)  # what the forward pass runs: the model or DDP

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- the model and the data -----------------------------------------------------------------------

    def wrap(self, model: nn.Module, trainable: list[int], sync_bn: bool = False) -> None:
        """Set :attr:`net` for a phase that trains the modules ``trainable`` (call after freezing).

        Under DDP the previous phase's wrapper (and its gradient hooks) goes first; with ``sync_bn`` the
        BatchNorm layers of the trainable modules become SyncBatchNorm (same parameters and buffers)."""
        self.net = model
        if self.world_size == 1:
            return
        gc.collect()
        if sync_bn:
            for index in trainable:
                nn.SyncBatchNorm.convert_sync_batchnorm(model.model[index])
        cuda = self.device.type == "cuda"
        self.net = DistributedDataParallel(model, device_ids=[self.device.index] if cuda else None)

    def shard(self, loader: DataLoader, batch: int, seed: int) -> DataLoader:
        """``loader`` as this rank's part: a DistributedSampler, ``batch // world`` of the global ``batch``.

        Ranks augment with their own random streams; rank 0 keeps the loader's own, so one process trains
        exactly as without DDP."""
        if self.world_size == 1:
            return loader
        sampler = DistributedSampler(
            loader.dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed
        )
        generator = torch.Generator()
        generator.manual_seed(seed + self.rank)
        loader.dataset.rng = np.random.default_rng(seed + self.rank)
        return DataLoader(
            loader.dataset, batch_size=self.rank_batch(batch), sampler=sampler, generator=generator,
            num_workers=loader.num_workers, collate_fn=loader.collate_fn,
            worker_init_fn=loader.worker_init_fn, pin_memory=loader.pin_memory,
        )  # fmt: skip

    def rank_batch(self, batch: int) -> int:
        """This rank's share of the global ``batch``; ConfigError unless the processes share it evenly."""
        return rank_share(batch, self.world_size)

    @staticmethod
    def set_epoch(loader: DataLoader, epoch: int) -> None:
        """Reseed the sampler's shuffle for ``epoch`` (the same order on every rank, another every epoch)."""
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)

    # ---- agreeing --------------------------------------------------------------------------------------

    def from_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` on rank 0, its result on every rank (the others wait for it)."""
        if self.world_size == 1:
            return compute()
        box = [compute() if self.is_main else None]
        torch_dist.broadcast_object_list(box, src=0, device=self._comm_device)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on one (e.g. a rank's clock passed the time budget)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([int(flag)], device=self._comm_device)
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. writes a cache), the others after it."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Standard output of ranks other than 0 goes nowhere (errors still reach stderr)."""
        if self.is_main:
            yield
            return
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def launched() -> bool:
    """Whether torchrun (or ``--devices``) started this process as one rank of a run."""
    return "RANK" in os.environ


def rank_share(batch: int, world_size: int) -> int:
    """Each of ``world_size`` processes' share of the global ``batch``; ConfigError unless it divides."""
    if batch % world_size:
        raise ConfigError(
            f"batch {batch} is the global batch and must divide evenly between the {world_size} training "
            f"processes (e.g. --batch {max(1, batch // world_size) * world_size})"
        )
    return batch // world_size


def check_world(device_type: str, world: int, batch: int, sync_bn: bool) -> None:
    """ConfigError for a setting every one of ``world`` training processes would refuse."""
    rank_share(batch, world)
    if device_type not in ("cuda", "cpu"):
        raise ConfigError(f"training on {world} processes needs CUDA GPUs or the CPU, not {device_type}")
    if sync_bn and device_type != "cuda":
        raise ConfigError("--sync-bn needs CUDA GPUs: SyncBatchNorm does not run on the CPU")


@contextlib.contextmanager
def session(device_name: str, batch: int, sync_bn: bool = False) -> Iterator[Distributed]:
    """The :class:`Distributed` of this process, with the process group set up for the block.

    Under a launcher (``WORLD_SIZE`` > 1) each rank trains on ``cuda:LOCAL_RANK`` (nccl) when ``device_name``
    is a CUDA device, else on the CPU (gloo). Settings every rank would refuse (a global ``batch`` that does
    not divide evenly, ``sync_bn`` without CUDA) are refused before the ranks connect."""
    device = select_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Distributed(device)
        return
    check_world(device.type, world, batch, sync_bn)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    try:
        yield Distributed(device, torch_dist.get_rank(), local_rank, torch_dist.get_world_size())
    finally:
        torch_dist.destroy_process_group()


# ---- train --devices: the same processes as torchrun, started from here ----------------------------------


def parse_devices(text: str) -> tuple[str, int, str | None]:
    """``--devices 0,1,2,3`` -> (``cuda``, 4, ``CUDA_VISIBLE_DEVICES``); ``cpu,cpu`` -> (``cpu``, 2, None)."""
    parts = [part.strip().lower() for part in text.split(",") if part.strip()]
    if parts and all(part == "cpu" for part in parts):
        return "cpu", len(parts), None
    if parts and all(part.isdigit() for part in parts) and len(set(parts)) == len(parts):
        return "cuda", len(parts), ",".join(parts)
    raise ConfigError(
        f"--devices {text!r}: give distinct GPU indices such as 0,1,2,3 (or cpu,cpu on the CPU)"
    )


def launch(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run the command ``handler(args)`` in one process per device of ``args.devices``, as torchrun would
    on one machine; returns its exit code.

    The processes find each other on a free local port. A refused input (exit code 2) was explained by rank
    0; any other failure stops the other ranks and raises a TrainingError naming the rank and its exit code
    or signal, or saying that it lost contact with a rank that ended first (the launcher names the first
    process it finds ended, which is not always the one that ended first)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    devices = args.devices
    kind, count, visible = parse_devices(devices)
    if kind == "cuda":
        if torch.cuda.device_count() < count:
            raise ConfigError(
                f"--devices {devices}: this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )
        os.environ["CUDA_VISIBLE_DEVICES"] = visible  # the launched ranks see these GPUs as cuda:0..N-1
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=count, run_id=f"yolo-transfer-{os.getpid()}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
    )  # fmt: skip
    sys.stdout.flush()
    try:
        elastic_launch(config, _rank_main)(handler, argparse.Namespace(**{**vars(args), "device": kind}))
    except ChildFailedError as err:
        if REFUSED in (failure.exitcode for failure in err.failures.values()):
            return REFUSED
        failed = ", ".join(f"rank {rank} ({_how(failure)})" for rank, failure in sorted(err.failures.items()))
        lost = len(err.failures)
        raise TrainingError(
            f"{lost} of {count} training processes failed: {failed}; the others were stopped"
        ) from None
    return 0


def _how(failure) -> str:
    """How a launched process ended: ``signal SIGKILL``, ``exit code 1`` or its lost contact."""
    if failure.exitcode == PEER_LOST:
        return "it lost contact with another training process, which ended first"
    return f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"


def _peer_lost(err: RuntimeError) -> bool:
    """Whether ``err`` is a collective that failed because another rank's process ended."""
    return any(sign in str(err) for sign in PEER_LOST_SIGNS)


def _rank_main(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> None:
    """One launched rank: the command; its error printed as the command line does, with exit code 2 (a
    refused setting, the same on every rank, by rank 0 alone), or exit code 3 when it lost contact with a
    rank that ended first (that rank's failure is the one to report)."""
    try:
        code = handler(args)
    except YoloTransferError as err:
        if os.environ.get("RANK") == "0" or not isinstance(err, ConfigError):
            print(f"error: {err}", file=sys.stderr)
        sys.exit(REFUSED)
    except RuntimeError as err:
        if not _peer_lost(err):
            raise
        print(f"rank {os.environ.get('RANK')}: lost contact with another training process", file=sys.stderr)
        sys.exit(PEER_LOST)
    if code:
        sys.exit(code)
