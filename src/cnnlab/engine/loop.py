"""The training loop: one explicit loop over in-memory uint8 batches.

Data stays as uint8 (N, C, H, W) on the device; each batch is indexed, converted to float,
augmented (pixel units 0..255) and normalised with the training split's statistics.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.augment import augment
from ..data.augment_options import AugmentOptions
from ..data.preprocess import Preprocessing
from . import signals
from .allocator import keep_freed_memory
from .callbacks import TrainState, call
from .distributed import SINGLE, Dist, my_slice, shard, sync_batchnorm_stats, wrap
from .inference import predict_logits, to_tensor  # noqa: F401 (to_tensor: part of the loop's API)
from .optim import make_optimizer
from .precision import autocast, autocast_dtype
from .resume import load_resume_point
from .schedules import lr_factor


def resolve_device(name: str) -> torch.device:
    from ..errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA is not available on this machine", "--device cuda",
                          "use --device cpu or auto")
    return torch.device(name)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based
    status: str = "completed"  # completed | early_stopped | time_limit | interrupted | nan_loss | stopped
    stop_reason: str = "all epochs run"
    train_time_s: float = 0.0
    nan_at: str | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)


@dataclass(frozen=True)
class Plan:
    """What the loop does, built once from the configuration (``plan_from(cfg)``). It declares no
    defaults: every value comes from TrainConfig, where each key is declared once."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float | None
    momentum: float
    weight_decay: float
    label_smoothing: float
    schedule: str
    warmup: float
    seed: int
    augment: AugmentOptions
    sampler: str  # none | balanced
    class_weights: tuple | None  # one loss weight per class, or None
    precision: str  # auto | fp32 | bf16 | fp16 (engine.precision)


def plan_from(cfg, class_weights=None) -> Plan:
    """The loop's plan from a TrainConfig (read by attribute: the engine does not import config)."""
    return Plan(cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay,
                cfg.label_smoothing, cfg.schedule, cfg.warmup, cfg.seed, cfg.augment_options(), cfg.sampler,
                tuple(class_weights) if class_weights is not None else None, cfg.precision)


@dataclass
class FitData:
    """uint8 (N, C, H, W) images and int64 labels on the training device, and the scaling."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    prep: Preprocessing


class Running:
    """An epoch's loss and accuracy so far, summed on the device (read back only when asked)."""

    def __init__(self, device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.seen = 0

    def add(self, loss: torch.Tensor, hits: torch.Tensor, n: int) -> None:
        with torch.no_grad():
            self.loss_sum += loss.detach() * n
            self.correct += hits.sum()
        self.seen += n

    def loss(self) -> float:
        return float(self.loss_sum) / self.seen

    def logs(self, dist: Dist = SINGLE) -> dict:
        """This rank's figures, or (``dist``) every rank's together."""
        if not dist.active:
            return {"loss": self.loss(), "accuracy": float(self.correct) / self.seen}
        loss_sum, correct, seen = dist.sum([float(self.loss_sum), float(self.correct), float(self.seen)])
        return {"loss": loss_sum / seen, "accuracy": correct / seen}


def evaluate_tensors(model, x: torch.Tensor, y: torch.Tensor, prep: Preprocessing,
                     tta: str = "none", dist: Dist = SINGLE, dtype: torch.dtype | None = None) -> tuple[float, float]:
    """Loss and accuracy on ``x``; with ``dist``, each rank scores a disjoint slice and the sums
    are combined, so every image counts once."""
    if dist.active:
        part = my_slice(len(x), dist)
        x = x[part] if isinstance(x, torch.Tensor) else x.subset(np.arange(len(x))[part])
        y = y[part]
        loss_sum = correct = 0.0
        if len(x):
            logits = logits_for(model, x, prep, tta=tta, dtype=dtype)
            loss_sum = float(model.loss(logits, y)) * len(x)
            correct = float((model.predicted(logits) == y).sum())
        loss_sum, correct, n = dist.sum([loss_sum, correct, float(len(x))])
        return loss_sum / n, correct / n
    logits = logits_for(model, x, prep, tta=tta, dtype=dtype)
    loss = float(model.loss(logits, y))
    acc = float((model.predicted(logits) == y).float().mean())
    return loss, acc


def logits_for(model, x, prep: Preprocessing, tta: str = "none", dtype: torch.dtype | None = None) -> torch.Tensor:
    """Logits of uint8 images: a (N, C, H, W) tensor on the model's device, or images on disk
    (data.diskcache.DiskImages), read a chunk at a time."""
    if isinstance(x, torch.Tensor):
        return predict_logits(model, x, prep, tta=tta, dtype=dtype)
    device = next(model.parameters()).device
    return torch.cat([predict_logits(model, to_tensor(x[i:i + 1024], device), prep, tta=tta, dtype=dtype)
                      for i in range(0, len(x), 1024)])


def batch_reader(x, device: torch.device):
    """``read(idx)``: the uint8 (b, C, H, W) batch at positions ``idx`` on ``device``. Images on disk
    are read here (into pinned memory and copied without blocking, on CUDA)."""
    if isinstance(x, torch.Tensor):
        return lambda idx: x[idx]
    pin = device.type == "cuda"

    def read(idx: torch.Tensor) -> torch.Tensor:
        t = torch.from_numpy(x[idx.cpu().numpy()]).permute(0, 3, 1, 2)
        return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

    return read


def agree_stop(state: TrainState, dist: Dist) -> None:
    """Every rank stops at the same step, for the first stopping rank's reason: a time limit, a
    NaN, Ctrl-C or a callback seen on one rank ends training on all of them."""
    if signals.requested is not None and not state.stop:
        state.request_stop(signals.requested, "interrupted")
    if not dist.active or not dist.any(state.stop):
        return
    first = next(info for info in dist.gather((state.stop, state.status, state.stop_reason, state.nan_at)) if info[0])
    state.stop, state.status, state.stop_reason, state.nan_at = first


def fit(model, data: FitData, plan: Plan, callbacks: list, resume: dict | None = None,
        dist: Dist = SINGLE, run_dir: str | None = None) -> FitResult:
    """Train ``model`` in place; returns the history and why training stopped.

    The loop does the schedule, batches, augmentation, normalisation, the step and the NaN guard;
    everything else (best checkpoint, early stopping, history, time limit, progress, a user's own)
    is a callback (engine/callbacks.py). A NaN loss stops training; Ctrl-C or SIGTERM stops it
    cleanly. ``plan.class_weights`` weight the training loss per class; ``plan.sampler ==
    "balanced"`` draws each epoch's images with replacement so every class is drawn equally often.
    ``resume`` (a ``training_state`` saved after some epoch) continues from the next epoch exactly as
    an uninterrupted run would: the same weights, optimizer state, random states and history.
    ``dist``: this process's place among data-parallel processes (engine/distributed.py); each takes
    its shard of every batch, and they agree on every stop. ``run_dir``: where the run is written,
    for callbacks (``state.run_dir``).
    """
    from .signals import Terminated

    keep_freed_memory()  # before the first step's tensors (engine/allocator.py)
    loop = _Loop(model, data, plan, callbacks, dist, run_dir)
    state = loop.state
    if resume is not None:
        load_resume_point(resume, model, loop.opt, loop.scaler, state, dist)
        state.epoch = state.resumed_from = resume["epoch"]
        state.history, state.best_epoch = list(resume["history"]), resume["best_epoch"]
    call(callbacks, "on_train_begin", state)
    try:
        for epoch in range(state.epoch + 1, plan.epochs + 1):
            if not loop.epoch(epoch):
                break
    except RuntimeError as e:  # DDP's own all-reduce (in backward) found another rank gone
        if not dist.lost_peer(e):
            raise
        from .distributed import DistributedError, short

        raise DistributedError(short(e), dist.rank) from None
    except KeyboardInterrupt as e:
        state.stop, state.status = True, "interrupted"
        state.stop_reason = "stopped by SIGTERM" if isinstance(e, Terminated) else "interrupted by the user (Ctrl-C)"
    if loop.ahead is not None:
        loop.ahead.shutdown(wait=True, cancel_futures=True)
    train_time = time.perf_counter() - state.t_start
    call(callbacks, "on_train_end", state)
    model.eval()
    return FitResult(state.history, state.best_epoch, state.status, state.stop_reason, train_time, state.nan_at)


class _Loop:
    """One fit's working parts (optimizer, generators, batch reader, scaler) and its epochs and
    steps; ``fit`` runs it and turns its end into a FitResult."""

    def __init__(self, model, data: FitData, plan: Plan, callbacks: list, dist: Dist, run_dir: str | None):
        self.model, self.data, self.plan, self.callbacks, self.dist = model, data, plan, callbacks, dist
        x_train, y_train = data.x_train, data.y_train
        self.device = device = y_train.device
        self.read = batch_reader(x_train, device)
        # images on disk: a thread reads the next batch while this one trains
        self.ahead = None if isinstance(x_train, torch.Tensor) else \
            ThreadPoolExecutor(1, thread_name_prefix="cnnlab-read")
        # a layer with trainable: false keeps its weights (e.g. a patch_whitening first layer)
        self.opt = make_optimizer(plan.optimizer, [p for p in model.parameters() if p.requires_grad], plan.lr,
                                  plan.momentum, plan.weight_decay)
        self.base_lr = self.opt.param_groups[0]["lr"]
        self.net = wrap(model, dist)  # the step's forward; the model's own methods stay on `model`
        self.amp_dtype = autocast_dtype(plan.precision, device)  # None: float32
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        # augmentation: each rank its own; the epoch's order: the same on every rank
        self.g = torch.Generator(device=device).manual_seed(plan.seed + 7919 * dist.rank)
        self.cpu_g = torch.Generator().manual_seed(plan.seed)
        self.off, self.inv = data.prep.tensors(device)
        self.aug = plan.augment if plan.augment.active else None
        self.n = len(x_train)
        self.batch = plan.batch_size // dist.world  # --batch-size is the global batch
        self.steps = math.ceil(math.ceil(self.n / dist.world) / self.batch)
        self.total_steps = plan.epochs * self.steps
        if plan.sampler == "balanced":  # each image's probability: 1 / (number of classes * its class's count)
            self.draw_p = (1.0 / torch.bincount(y_train.cpu()).double())[y_train.cpu()]
        self.class_weights = (torch.tensor(plan.class_weights, dtype=torch.float32, device=device)
                              if plan.class_weights is not None else None)
        self.state = TrainState(model, plan.epochs, self.steps, t_start=time.perf_counter(), optimizer=self.opt,
                                generators={"order": self.cpu_g, "augment": self.g}, dist=dist, scaler=self.scaler,
                                run_dir=run_dir)

    def epoch(self, epoch: int) -> bool:
        """Train one epoch and validate it; False when training stops after it."""
        state, plan, model, dist = self.state, self.plan, self.model, self.dist
        state.epoch = epoch
        model.train()
        call(self.callbacks, "on_epoch_begin", state)
        if state.optimizer is not self.opt:  # a callback changed it (fine-tuning's second phase)
            self.opt = state.optimizer
            self.base_lr = self.opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        if plan.sampler == "balanced":
            perm = torch.multinomial(self.draw_p, self.n, replacement=True, generator=self.cpu_g).to(self.device)
        else:
            perm = torch.randperm(self.n, generator=self.cpu_g).to(self.device)
        perm = shard(perm, dist)
        run = Running(self.device)
        state.running = run.logs
        self.batches(epoch, perm, run)
        if state.status == "nan_loss":
            return False
        logs = {"epoch": epoch, **run.logs(dist)}
        sync_batchnorm_stats(model, dist)  # every rank evaluates (and rank 0 saves) the same model
        data = self.data
        if data.x_val is not None and data.y_val is not None:
            # in float32, as predictions are: the restored best epoch scores what history says
            logs["val_loss"], logs["val_accuracy"] = evaluate_tensors(model, data.x_val, data.y_val, data.prep,
                                                                      dist=dist)
        logs["lr"] = self.opt.param_groups[0]["lr"]
        logs["time_s"] = time.perf_counter() - t0
        state.history.append(logs)
        call(self.callbacks, "on_epoch_end", state, logs)
        agree_stop(state, dist)
        return not state.stop

    def batches(self, epoch: int, perm: torch.Tensor, run: Running) -> None:
        """The epoch's steps over ``perm``, until its end or a stop (NaN loss, a callback's)."""
        state, plan, batch, steps = self.state, self.plan, self.batch, self.steps
        pending = self.ahead.submit(self.read, perm[:batch]) if self.ahead is not None else None
        for step in range(steps):
            if plan.schedule != "constant":
                lr_now = self.base_lr * lr_factor(plan.schedule, (epoch - 1) * steps + step, self.total_steps,
                                                  plan.warmup)
                for group in self.opt.param_groups:
                    group["lr"] = lr_now
            idx = perm[step * batch:(step + 1) * batch]
            if pending is not None:
                xb = pending.result().float()
                if step + 1 < steps and self.ahead is not None:
                    pending = self.ahead.submit(self.read, perm[(step + 1) * batch:(step + 2) * batch])
            else:
                xb = self.read(idx).float()
            self.step(xb, idx, run)
            if (step == steps - 1 or step % 50 == 0) and not math.isfinite(run.loss()):
                state.nan_at = f"epoch {epoch}, batch {step + 1}"
                state.request_stop(f"loss became NaN at {state.nan_at}", "nan_loss")
            else:
                call(self.callbacks, "on_batch_end", state, step + 1)
            agree_stop(state, self.dist)
            if state.stop:  # e.g. the time limit: this partial epoch is still validated
                state.partial_epoch = step + 1 < steps
                break

    def step(self, xb: torch.Tensor, idx: torch.Tensor, run: Running) -> None:
        """One optimizer step on the images ``xb`` (float pixels) of the training indices ``idx``."""
        model, opt, scaler = self.model, self.opt, self.scaler
        if self.aug is not None:
            xb = augment(xb, self.aug, self.g)
        xb = ((xb - self.off) * self.inv).contiguous(memory_format=torch.channels_last)
        yb = self.data.y_train[idx]
        with autocast(self.amp_dtype, self.device):
            logits = self.net(xb)
        logits = logits.float()  # the loss in float32
        loss = model.loss(logits, yb, self.plan.label_smoothing, self.class_weights)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        run.add(loss, model.predicted(logits) == yb, len(idx))
