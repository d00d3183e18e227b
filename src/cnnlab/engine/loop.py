"""The training loop: one explicit loop over in-memory uint8 batches.

Data stays as uint8 (N, C, H, W) on the device; each batch is indexed, converted to float,
augmented (pixel units 0..255) and normalised with the training split's statistics.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..data.augment import augment
from ..data.augment_options import AugmentOptions
from ..data.preprocess import Preprocessing
from .callbacks import early_stopping, is_improvement
from .inference import predict_logits, to_tensor  # noqa: F401 (to_tensor: part of the loop's API)
from .optim import make_optimizer
from .progress import Progress
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
    status: str = "completed"  # completed | early_stopped | time_limit | interrupted | nan_loss
    stop_reason: str = "all epochs run"
    train_time_s: float = 0.0
    nan_at: str | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def evaluate_tensors(model, x: torch.Tensor, y: torch.Tensor, prep: Preprocessing,
                     tta: str = "none") -> tuple[float, float]:
    logits = predict_logits(model, x, prep, tta=tta)
    loss = float(model.loss(logits, y))
    acc = float((model.predicted(logits) == y).float().mean())
    return loss, acc


def fit(model, prep: Preprocessing, x_train: torch.Tensor, y_train: torch.Tensor,
        x_val: torch.Tensor | None, y_val: torch.Tensor | None, *, epochs: int, batch_size: int,
        optimizer: str = "adam", lr: float | None = None, momentum: float = 0.0,
        weight_decay: float = 0.0, label_smoothing: float = 0.0, schedule: str = "constant",
        warmup: float = 0.25, monitor: str = "val_loss",
        patience: int | None = 2, min_delta: float = 0.0, restore_best: bool = True,
        augment_options: AugmentOptions | None = None, seed: int = 42, quiet: bool = False,
        time_limit: float | None = None, class_weights: torch.Tensor | None = None, sampler: str = "none",
        on_best: Callable[[int, dict], None] | None = None,
        on_epoch: Callable[[list[dict]], None] | None = None, progress: Progress | None = None) -> FitResult:
    """Train ``model`` in place; returns the history and why training stopped.

    The monitored metric falls back to the training metric when there is no validation set.
    On a NaN loss or Ctrl-C the best weights so far are restored (when ``restore_best``).
    With ``time_limit`` (seconds), training stops after the batch that passes it; that last,
    partial epoch is still validated, so a model always has a best epoch to restore.
    ``class_weights`` (K,) weight the training loss per class; ``sampler="balanced"`` draws each
    epoch's images with replacement so that every class is drawn equally often.
    """
    device = x_train.device
    # a layer with trainable: false keeps its weights (e.g. a patch_whitening first layer)
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, momentum,
                         weight_decay)
    base_lr = opt.param_groups[0]["lr"]
    g = torch.Generator(device=device).manual_seed(seed)
    cpu_g = torch.Generator().manual_seed(seed)
    off, inv = prep.tensors(device)
    aug = augment_options if augment_options is not None and augment_options.active else None
    if x_val is None:
        monitor = monitor.removeprefix("val_")
    mode = "min" if monitor.endswith("loss") else "max"
    n = len(x_train)
    steps = math.ceil(n / batch_size)
    progress = progress or Progress(epochs, steps, quiet)
    total_steps = epochs * steps
    result = FitResult()
    best_state, best_value = None, None
    if sampler == "balanced":  # each image's probability: 1 / (number of classes * its class's count)
        counts = torch.bincount(y_train.cpu())
        draw_p = (1.0 / counts.double())[y_train.cpu()]
    if class_weights is not None:
        class_weights = class_weights.to(device)
    t_start = time.perf_counter()
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            progress.epoch_begin(epoch)
            t0 = time.perf_counter()
            if sampler == "balanced":
                perm = torch.multinomial(draw_p, n, replacement=True, generator=cpu_g).to(device)
            else:
                perm = torch.randperm(n, generator=cpu_g).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            seen = 0
            for step in range(steps):
                if schedule != "constant":
                    lr_now = base_lr * lr_factor(schedule, (epoch - 1) * steps + step, total_steps, warmup)
                    for group in opt.param_groups:
                        group["lr"] = lr_now
                idx = perm[step * batch_size:(step + 1) * batch_size]
                xb = x_train[idx].float()
                if aug is not None:
                    xb = augment(xb, aug, g)
                xb = ((xb - off) * inv).contiguous(memory_format=torch.channels_last)
                yb = y_train[idx]
                logits = model(xb)
                loss = model.loss(logits, yb, label_smoothing, class_weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    loss_sum += loss.detach() * len(idx)
                    correct += (model.predicted(logits) == yb).sum()
                seen += len(idx)
                if time_limit is not None and time.perf_counter() - t_start > time_limit:
                    result.status = "time_limit"
                    result.stop_reason = (f"time limit of {time_limit:g} s reached in epoch {epoch} "
                                          f"(after {step + 1} of {steps} batches)")
                    progress.step(step + 1, {"loss": float(loss_sum) / seen, "accuracy": float(correct) / seen})
                    break
                if progress.live or step == steps - 1 or step % 50 == 0:
                    running = float(loss_sum) / seen
                    if not math.isfinite(running):
                        result.status, result.nan_at = "nan_loss", f"epoch {epoch}, batch {step + 1}"
                        result.stop_reason = f"loss became NaN at {result.nan_at}"
                        break
                    progress.step(step + 1, {"loss": running, "accuracy": float(correct) / seen})
            if result.status == "nan_loss":
                break
            logs = {"epoch": epoch, "loss": float(loss_sum) / seen, "accuracy": float(correct) / seen}
            if x_val is not None:
                logs["val_loss"], logs["val_accuracy"] = evaluate_tensors(model, x_val, y_val, prep)
            logs["lr"] = opt.param_groups[0]["lr"]
            logs["time_s"] = time.perf_counter() - t0
            result.history.append(logs)
            note = ""
            if is_improvement(logs[monitor], best_value, mode, min_delta):
                best_value, result.best_epoch = logs[monitor], epoch
                best_state = copy.deepcopy(model.state_dict())
                note = f" - {monitor} improved"
                if on_best is not None:
                    on_best(epoch, best_state)
            progress.epoch_end(epoch, logs, note)
            if on_epoch is not None:
                on_epoch(result.history)
            if result.status == "time_limit":
                break
            stop, _, reason = early_stopping([h[monitor] for h in result.history], mode, patience, min_delta)
            if stop:
                result.status, result.stop_reason = "early_stopped", f"early stopping on {monitor}: {reason}"
                break
    except KeyboardInterrupt as e:
        from .signals import Terminated

        result.status = "interrupted"
        result.stop_reason = ("stopped by SIGTERM" if isinstance(e, Terminated)
                              else "interrupted by the user (Ctrl-C)")
    result.train_time_s = time.perf_counter() - t_start
    if best_state is not None and (restore_best or result.status == "nan_loss"):
        model.load_state_dict(best_state)
    model.eval()
    return result

