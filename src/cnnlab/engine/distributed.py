"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` processes started by
torchrun (gloo on CPU, NCCL on CUDA), one model replica each (DistributedDataParallel).

``Dist`` is what the loop and the run need to know: this process's rank, the world size, and the
few collectives they use. A single process is ``Dist()`` (world 1): every collective is then a
no-op, so the one-process path runs exactly as before.

Rules the loop follows (issue 16):

- ``--batch-size`` is the global batch: each process takes ``batch_size / world`` images per
  step from a disjoint shard of the epoch's order (the same seeded order on every rank, padded
  by wrapping so every rank runs the same number of steps);
- every stop (early stopping, time limit, NaN, Ctrl-C/SIGTERM, a callback) is agreed on by all
  ranks at the same step (``agree_stop``);
- training loss and accuracy are summed over ranks; validation is split into disjoint slices,
  so every image counts once;
- BatchNorm: SyncBatchNorm on CUDA; on CPU (where SyncBatchNorm does not run) the running
  statistics are averaged across ranks before each evaluation and save;
- only rank 0 writes the run directory;
- a collective waits at most ``TIMEOUT_S``: a rank that dies ends the others with an error
  instead of a hang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..errors import TrainingError

TIMEOUT_S = 60  # the longest any collective waits for a missing rank


class DistributedError(TrainingError):
    """Another training process failed or vanished; this one cannot go on."""

    def __init__(self, detail: str, rank: int):
        super().__init__(f"another training process stopped ({detail})", f"rank {rank}",
                         "see the other processes' errors; the last finished epoch can be resumed "
                         "(cnnlab train --resume RUN)")


def check_global_batch(batch_size: int, world: int) -> None:
    """``--batch-size`` is the global batch: it must split evenly over the processes."""
    from ..errors import ConfigError

    if batch_size % world:
        raise ConfigError(f"batch_size {batch_size} does not split over {world} processes", "--batch-size",
                          f"use a multiple of {world}, e.g. {max(world, batch_size // world * world)} "
                          "(--batch-size is the global batch)")


def launched() -> bool:
    """True inside a process started by torchrun (or its launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def describe(self) -> dict:
        return {"world_size": self.world, "backend": self.backend, "rank": self.rank}

    # ------------------------------------------------------------------ collectives
    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except (RuntimeError, ConnectionError) as e:  # gloo: "Connection closed by peer", timeouts
            raise DistributedError(short(e), self.rank) from None

    def lost_peer(self, e: BaseException) -> bool:
        """An error from a collective (DDP's gradient all-reduce included) because another rank is
        gone or stuck."""
        import torch.distributed as dist

        text = str(e)
        return self.active and (isinstance(e, (dist.DistError, ConnectionError)) or any(
            k in text for k in ("gloo", "Connection reset", "Connection closed", "NCCL", "timed out")))

    def sum(self, values: list[float], device=None) -> list[float]:
        """Element-wise sum over ranks of a few numbers."""
        if not self.active:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device or self.device())
        self._call(dist.all_reduce, t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank."""
        if not self.active:
            return flag
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        self._call(dist.all_gather_object, out, obj)
        return out

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Average floating tensors across ranks, in place."""
        if not self.active:
            return
        import torch.distributed as dist

        for t in tensors:
            if t.is_floating_point():
                self._call(dist.all_reduce, t, op=dist.ReduceOp.SUM)
                t.div_(self.world)

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


SINGLE = Dist()


def short(e: BaseException) -> str:
    """A backend's error as a few words: gloo's ends in advice and a file position."""
    import re

    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # [/path/to/pair.cc:537]
    return text.split(". ")[0]


def init(device_name: str) -> Dist:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, ...)."""
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_S))
    return Dist(rank, world, local, backend)


def finish(wait: bool = True) -> None:
    """Leave the process group together: every rank waits here until all have arrived (rank 0 after
    its test evaluation), so no rank tears its connections down while another still holds its
    own (gloo then aborts the process). A rank that died ends the wait at once (its connection
    closes); ``wait=False`` on the way out of an error."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait and dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=timedelta(hours=6))
        except RuntimeError:
            pass  # another rank failed: its own error is the one to report
    dist.destroy_process_group()


def sync_batchnorm_stats(model, d: Dist) -> None:
    """CPU ranks keep their own BatchNorm running statistics: average them before an evaluation or a
    save, so every rank holds (and rank 0 saves) the same model."""
    if not d.active or d.backend == "nccl":
        return
    bufs = [m.running_mean for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            and m.running_mean is not None]
    bufs += [m.running_var for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.running_var is not None]
    d.average_(bufs)


def wrap(model, d: Dist):
    """The module the training step calls: DistributedDataParallel over ``model`` (SyncBatchNorm on
    CUDA), or ``model`` itself in one process. Call the model's own methods (``loss``,
    ``predicted``) on ``model``, never on the wrapper."""
    if not d.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if d.backend == "nccl":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[d.local_rank])
    return DDP(model)


def shard(order: torch.Tensor, d: Dist) -> torch.Tensor:
    """This rank's part of an epoch's order: padded by wrapping to a multiple of the world size,
    then every world-th index from this rank's, so all ranks get the same number of images."""
    if not d.active:
        return order
    n = len(order)
    per = -(-n // d.world)
    padded = torch.cat([order, order[:per * d.world - n]]) if per * d.world > n else order
    return padded[d.rank::d.world]


def my_slice(n: int, d: Dist) -> slice:
    """A disjoint, contiguous slice of ``n`` items for this rank (evaluation: each item once)."""
    if not d.active:
        return slice(0, n)
    per = -(-n // d.world)
    return slice(min(n, d.rank * per), min(n, (d.rank + 1) * per))


def launch(nproc: int, argv: list[str]) -> None:
    """Start ``nproc`` processes of ``cnnlab ARGV`` on this machine through torchrun's launcher (its
    elastic agent, as ``torchrun --standalone --nproc-per-node N -m cnnlab ARGV`` would) and wait.
    A process that fails ends the others; the failure becomes one error line here."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun gives each process one thread unless told; share the cores instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--monitor-interval=1",
                       "-m", "cnnlab", *argv])
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the agent's own reports: one line below instead
    try:
        run(args)  # torchrun itself
    except SignalException as e:  # Ctrl-C or SIGTERM: the processes stop at the same step and save
        raise KeyboardInterrupt from e
    except ChildFailedError as e:
        # the cause: a process killed by a signal, else the first to fail (the others follow it)
        rank, failure = min(e.failures.items(), key=lambda kv: (kv[1].exitcode >= 0, kv[1].timestamp))
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        error = TrainingError(f"training process {rank} of {nproc} {how}", "--nproc",
                              "its own error, if it printed one, is above; a stopped run continues from its last "
                              "finished epoch with cnnlab train --resume RUN --nproc " + str(nproc))
        # exit code 2: the process said what was wrong in its one error line; a second line adds nothing
        error.reported = any(f.exitcode == 2 for f in e.failures.values())  # type: ignore[attr-defined]
        raise error from None
