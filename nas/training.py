"""Full-size training of an exported architecture with timm's training parts, resumable after a kill.

The search trains small proxies; this trains the model an export folder describes (`nas.export`), at
full size, and writes the result back into the folder: trained weights, the dataset's classes, the
training's input size and normalisation, its numbers in config.json and the model card. The folder
then loads with `timm.create_model("local-dir:DIR", pretrained=True)`.

The parts are timm's: `create_optimizer_v2` (which honours `no_weight_decay()`), `create_scheduler_v2`
(cosine with warmup, stepped per update by default so that short runs anneal too), label-smoothing or
soft-target cross-entropy with `Mixup` / CutMix, `ModelEmaV3`, `accuracy`. Data are the in-memory
tensors of `trials.data` (all of a dataset's training images unless `max_train`), batched by indexing.

Resume: a checkpoint (model, optimizer, scheduler, EMA, epoch, step in the epoch, RNG states) is written
to DIR/checkpoint/last.pth every `checkpoint_every_s` seconds and at each epoch's end, atomically (a
temporary file, then os.replace). Each epoch's batch order derives from (seed, epoch) alone, so the same
command after a kill (`kill -9` included) reloads the checkpoint, skips the steps already taken and
continues exactly where the checkpoint left off: on the same machine the result is bit-identical to an
uninterrupted run.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import timm
import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, accuracy, random_seed

import trials.data as trial_data
from search_spaces import SEEDS
from trials.data import DATASET_NAMES, DatasetError, TrialData, check_dataset, load_dataset

from .budget import fit_to_budget, parse_flops
from .export import export_model, export_trial, record_training
from .ops.dynamic import DynamicConv2d, anneal_temperature, set_temperature

__all__ = ["SCHEDULERS", "TrainConfig", "TrainResult", "TrainingError", "resolve_model_dir", "load_training_data",
           "train", "evaluate", "setup_logging", "check_inputs", "describe", "CHECKPOINT_NAME"]

_logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint/last.pth"
# timm's schedulers that need no validation metric (plateau does)
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt", "constant", "none")
_CHECKPOINT_VERSION = 1


class TrainingError(ValueError):
    """Input that cannot be trained on; the message is one line and says what to do."""


@dataclass
class TrainConfig:
    """Settings of one training run. Those in `trajectory()` decide the result; a resumed run must use the
    same ones (the others, such as the device or the checkpoint interval, may change between runs)."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int = 10
    img_size: int = 32
    batch_size: int = 128
    lr: float = 2e-3  # AdamW at batch 128; the search's proxies use 2e-3 at batch 64
    min_lr: float | None = None  # cosine floor; None: lr / 100
    opt: str = "adamw"
    weight_decay: float = 0.05
    sched: str = "cosine"
    sched_on_epochs: bool = False  # per update by default: a 1-epoch run anneals too
    warmup_epochs: float | None = None  # None: a tenth of the run, at most 5 epochs
    warmup_lr: float = 1e-6
    smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    hflip: float = 0.0  # probability of a horizontal flip per image (off: the synthetic set's labels are chiral)
    drop_path: float | None = None  # None: the spec's own rate
    clip_grad: float | None = None
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    model_ema_warmup: bool = True  # timm's EMA warmup: short runs otherwise average mostly the initial weights
    max_train: int | None = None
    max_val: int | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch.set_num_threads; None keeps torch's choice
    grad_checkpointing: bool = False
    checkpoint_every_s: float = 60.0
    log_every: int = 50
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise TrainingError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
        for name in ("epochs", "img_size", "batch_size", "log_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.img_size % 32:
            raise TrainingError(f"img_size must be a multiple of 32 (the last stage's stride), got {self.img_size}")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise TrainingError(f"mixup / cutmix pair each batch with its reverse: use an even batch size, "
                                f"not {self.batch_size}")
        if not 0 <= self.hflip <= 1 or not 0 <= self.smoothing < 1:
            raise TrainingError("hflip is a probability in [0, 1] and smoothing a fraction in [0, 1)")
        for name in ("max_train", "max_val", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise TrainingError(f"seed must be >= 0, got {self.seed}")
        if self.sched not in SCHEDULERS:
            raise TrainingError(f"unknown scheduler {self.sched!r}; choose one of {', '.join(SCHEDULERS)}")
        if self.opt.lower() not in list_optimizers():
            raise TrainingError(f"unknown optimizer {self.opt!r}; timm.optim.list_optimizers() names them (adamw, "
                                "sgd, lamb, ...)")
        if self.lr <= 0 or self.checkpoint_every_s < 0:
            raise TrainingError("lr must be > 0 and checkpoint_every_s >= 0")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise TrainingError(f"device must be cpu or cuda, got {self.device!r}")

    @property
    def resolved_warmup_epochs(self) -> float:
        return min(5.0, self.epochs / 10) if self.warmup_epochs is None else self.warmup_epochs

    @property
    def resolved_min_lr(self) -> float:
        return self.lr / 100 if self.min_lr is None else self.min_lr

    def trajectory(self) -> dict[str, Any]:
        """The settings that decide the trained weights (checked on resume)."""
        ignore = {"device", "threads", "grad_checkpointing", "checkpoint_every_s", "log_every", "eval_batch_size"}
        return {k: v for k, v in asdict(self).items() if k not in ignore}


@dataclass
class TrainResult:
    """What a run produced; accuracies are percentages on the held-out split."""

    export_dir: Path
    model: nn.Module  # the weights written (the EMA's module when those scored higher), in eval mode
    top1: float
    top5: float
    weights: str  # "model" or "ema"
    top1_untrained: float
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: tuple[int, int] | None = None  # (epoch, step) of the checkpoint a run continued from
    duration_s: float = 0.0


# ----------------------------------------------------------------------------------------------- inputs

def resolve_model_dir(source: str, out: Path | None = None, budget: str | None = None) -> Path:
    """The export folder to train, exporting it first when `source` is not one.

    `source` is an export folder (config.json + model.safetensors; trained in place, or copied to `out`), a
    seed name of `search_spaces.SEEDS` (exported full size to `out`, or fitted to `budget` FLOPs first), or
    RUN_DIR:TRIAL (that trial of a search run, exported to `out`, default RUN_DIR/exports/trialNNNN[-seed]).
    An `out` that already holds an export is reused as it is: that is how a killed run finds its checkpoint.
    """
    if budget is not None and source not in SEEDS:
        raise TrainingError(f"--budget applies to a seed name (one of {', '.join(SEEDS)}), not to {source!r}")
    if out is not None and (out / "config.json").is_file():
        _logger.info("using the export in %s", out)
        return out
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainingError(f"--out {out} exists and is not an export folder (no config.json); choose a new folder")
    if source in SEEDS:
        if out is None:
            raise TrainingError(f"a seed name ({source}) needs --out DIR: the folder to export it to and train in")
        spec = SEEDS[source]
        if budget is not None:
            spec, note = fit_to_budget(spec, parse_flops(budget))
            _logger.info("%s", note or f"{source} fits {budget} as it is")
        return export_model(spec, out, title=f"hybridnas {source}" + (f" at {budget}" if budget else ""))
    run, sep, trial = source.rpartition(":")
    if sep and trial.isdigit() and Path(run).is_dir():
        if not (Path(run) / "trials.csv").is_file():
            raise TrainingError(f"{run}: no trials.csv; RUN_DIR:TRIAL needs the directory of a search run")
        return export_trial(Path(run), int(trial), out)
    path = Path(source)
    if not path.is_dir():
        raise TrainingError(f"{source}: no such export folder, seed name or RUN_DIR:TRIAL; give a folder written by "
                            f"scripts/export.py, a seed ({', '.join(list(SEEDS)[:4])}, ...) or RUN_DIR:TRIAL_NUMBER")
    if not (path / "config.json").is_file():
        raise TrainingError(f"{path}: not an export folder (no config.json); export a trial first with "
                            "scripts/export.py, or pass RUN_DIR:TRIAL_NUMBER")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "README.md"):
            if (path / name).is_file():
                shutil.copy2(path / name, out / name)
        _logger.info("copied the export %s to %s", path, out)
        return out
    return path


def load_training_data(cfg: TrainConfig) -> tuple[TrialData, tuple[float, ...], tuple[float, ...]]:
    """The dataset as in-memory tensors, and the per-channel mean and std it was normalised with.

    `trials.data` standardises both splits with the training split's statistics but does not return them;
    an exported model needs them (pretrained_cfg mean / std). They are read off on the way: the raw and the
    standardised training images fix the per-channel affine map between them (std = std(raw) / std(z),
    mean = mean(raw) - std * mean(z)), whatever formula the loader uses.
    """
    recorded: dict[str, tuple[float, ...]] = {}
    standardise = trial_data._standardised

    def recording(data: TrialData) -> TrialData:
        raw = data.train_x
        out = standardise(data)
        dims = (0, 2, 3)
        std = raw.std(dim=dims) / out.train_x.std(dim=dims).clamp_min(1e-12)
        mean = raw.mean(dim=dims) - std * out.train_x.mean(dim=dims)
        recorded.update(mean=tuple(mean.tolist()), std=tuple(std.tolist()))
        return out

    with mock.patch.object(trial_data, "_standardised", recording):
        data = load_dataset(cfg.dataset, cfg.data_dir, img_size=cfg.img_size, seed=cfg.seed,
                            max_train=cfg.max_train, max_val=cfg.max_val)
    if "mean" not in recorded:
        raise TrainingError(f"dataset {cfg.dataset}: could not read its normalisation")
    return data, recorded["mean"], recorded["std"]


# ------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
             device: torch.device | str = "cpu") -> dict[str, float]:
    """Top-1 and top-5 accuracy (percent) and mean cross-entropy; leaves the model in eval mode.

    no_grad rather than inference_mode: modules that cache tensors in eval (DO-Conv's folded kernel)
    must be able to use them in training afterwards.
    """
    model.eval()
    device = torch.device(device)
    top1 = top5 = loss = 0.0
    for i in range(0, len(y), batch_size):
        xb, yb = _to_device(x[i:i + batch_size], device), y[i:i + batch_size].to(device)
        with _autocast(device):
            logits = model(xb)
        logits = logits.float()
        k = min(5, logits.shape[1])
        a1, a5 = accuracy(logits, yb, topk=(1, k))
        top1 += a1.item() * len(yb)
        top5 += a5.item() * len(yb)
        loss += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
    n = max(1, len(y))
    return dict(top1=top1 / n, top5=top5 / n, loss=loss / n)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); full precision on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


# ------------------------------------------------------------------------------------------ checkpoints

def _rng_states(device: torch.device) -> dict[str, Any]:
    states = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then os.replace: a kill at any moment leaves a whole checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    # our own file, with numpy's RNG state in it: not loadable with weights_only=True
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != _CHECKPOINT_VERSION:
        raise TrainingError(f"{path}: checkpoint of another version; delete {path.parent} to train from the start")
    saved, now = state["settings"], cfg.trajectory()
    changed = [k for k in now if saved.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise TrainingError(f"{path} was made with {k}={saved.get(k)!r}, not {now[k]!r}: rerun with the same "
                            f"settings to resume, or delete {path.parent} to train again")
    return state


# ---------------------------------------------------------------------------------------------- training

def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The batch order of an epoch: a function of (seed, epoch) only, so a resumed run repeats it."""
    return torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))


def _hflip(x: torch.Tensor, p: float, seed: int, epoch: int, step: int) -> torch.Tensor:
    """Flip each image with probability p; the draws depend on (seed, epoch, step) only."""
    flip = torch.from_numpy(np.random.default_rng([seed, epoch, step, 1]).random(len(x)) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _build_model(export_dir: Path, num_classes: int, cfg: TrainConfig) -> nn.Module:
    """The folder's model as timm builds it (so that the trained folder reloads identically), with the
    dataset's classes: the folder's weights are the start, a new head where the class count differs."""
    kwargs: dict[str, Any] = dict(num_classes=num_classes)
    if cfg.drop_path is not None:
        kwargs["drop_path_rate"] = cfg.drop_path
    return timm.create_model(f"local-dir:{export_dir}", pretrained=True, **kwargs)


def train(export_dir: Path, cfg: TrainConfig) -> TrainResult:
    """Train the model of `export_dir` on `cfg.dataset`, resuming from its checkpoint if there is one, and
    write the trained model into the folder (`nas.export.record_training`)."""
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA device here; use --device cpu")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ckpt_path = export_dir / CHECKPOINT_NAME
    state = _load_checkpoint(ckpt_path, cfg)

    t0 = time.perf_counter()
    data, mean, std = load_training_data(cfg)
    load_s = time.perf_counter() - t0
    n = len(data.train_y)
    bs = min(cfg.batch_size, n)
    steps = n // bs  # the ragged last batch is dropped: a batch of one breaks BatchNorm
    if steps == 0:
        raise TrainingError(f"dataset {cfg.dataset} has no training images")
    _logger.info("data: %s, %d training and %d held-out images at %d px, %d classes (%.1f s); %d steps of %d an "
                 "epoch", data.name, n, len(data.val_y), data.img_size, data.num_classes, load_s, steps, bs)

    random_seed(cfg.seed)  # torch, numpy (Mixup draws from it) and python; a resume restores the saved states
    model = _build_model(export_dir, data.num_classes, cfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    optimizer = create_optimizer_v2(model, cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.resolved_warmup_epochs,
        warmup_lr=cfg.warmup_lr, min_lr=cfg.resolved_min_lr, step_on_epochs=cfg.sched_on_epochs,
        updates_per_epoch=steps)
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                      num_classes=data.num_classes)
        loss_fn: nn.Module = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss()
    ema = ModelEmaV3(model, decay=cfg.model_ema_decay, use_warmup=cfg.model_ema_warmup) if cfg.model_ema else None
    dynamic = any(isinstance(m, DynamicConv2d) for m in model.modules())
    anneal_epochs = min(10.0, cfg.epochs / 4)  # DynamicConv: tau 30 -> 1 (paper: first 10 epochs)

    val_x, val_y = data.val_x, data.val_y
    train_x, train_y = data.train_x, data.train_y
    if device.type == "cuda":  # the whole dataset fits: index batches on the device
        train_x, train_y, val_x, val_y = (t.to(device) for t in (train_x, train_y, val_x, val_y))

    def set_progress(progress: float) -> None:
        if dynamic:
            temperature = anneal_temperature(progress, epochs=anneal_epochs)
            set_temperature(model, temperature)
            if ema is not None:
                set_temperature(ema.module, temperature)

    if state is None:
        start_epoch, start_step, num_updates, elapsed = 0, 0, 0, 0.0
        history: list[dict[str, Any]] = []
        set_progress(0.0)
        untrained = evaluate(model, val_x, val_y, cfg.eval_batch_size, device)
        _logger.info("untrained: top-1 %.2f%%, top-5 %.2f%% on %d held-out images", untrained["top1"],
                     untrained["top5"], len(val_y))
        loss_sum, loss_count, resumed_from = 0.0, 0, None
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        start_epoch, start_step, num_updates = state["epoch"], state["step"], state["num_updates"]
        history, untrained, elapsed = state["history"], state["untrained"], state["elapsed_s"]
        loss_sum, loss_count = state["loss_sum"], state["loss_count"]
        _set_rng_states(state["rng"], device)
        resumed_from = (start_epoch, start_step)
        _logger.info("resumed from %s: epoch %d, step %d of %d (%d updates done)", ckpt_path, start_epoch + 1,
                     start_step, steps, num_updates)

    session_start = time.perf_counter()

    def checkpoint(epoch: int, step: int) -> None:
        _save_checkpoint(ckpt_path, dict(
            version=_CHECKPOINT_VERSION, settings=cfg.trajectory(), epoch=epoch, step=step, num_updates=num_updates,
            model=model.state_dict(), optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            ema=ema.module.state_dict() if ema is not None else None, rng=_rng_states(device), history=history,
            untrained=untrained, elapsed_s=elapsed + time.perf_counter() - session_start, loss_sum=loss_sum,
            loss_count=loss_count))

    last_save = time.monotonic()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = _epoch_order(cfg.seed, epoch, n)
        window_start, window_images, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0
        for step in range(start_step, steps):
            set_progress(epoch + step / steps)
            idx = order[step * bs:(step + 1) * bs]
            x, y = _to_device(train_x[idx], device), train_y[idx].to(device)
            if cfg.hflip > 0:
                x = _hflip(x, cfg.hflip, cfg.seed, epoch, step)
            if mixup is not None:
                x, y = mixup(x, y)
            with _autocast(device):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            num_updates += 1
            if scheduler is not None:
                scheduler.step_update(num_updates=num_updates)
            if ema is not None:
                ema.update(model, step=num_updates)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingError(f"the training loss became {value} at epoch {epoch + 1}, step {step + 1}; lower "
                                    f"--lr (now {cfg.lr:g}) or set --clip-grad")
            loss_sum, loss_count = loss_sum + value, loss_count + 1
            window_loss, window_steps, window_images = window_loss + value, window_steps + 1, window_images + len(x)
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                rate = window_images / max(time.perf_counter() - window_start, 1e-9)
                _logger.info("epoch %d/%d step %d/%d: loss %.4f, lr %.3g, %.0f images/s", epoch + 1, cfg.epochs,
                             step + 1, steps, window_loss / window_steps, optimizer.param_groups[0]["lr"], rate)
                window_start, window_images, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0
            if time.monotonic() - last_save >= cfg.checkpoint_every_s and step + 1 < steps:
                checkpoint(epoch, step + 1)
                last_save = time.monotonic()
        start_step = 0
        if scheduler is not None:
            scheduler.step(epoch + 1)
        set_progress(epoch + 1)
        record = dict(epoch=epoch + 1, train_loss=loss_sum / max(loss_count, 1),
                      **evaluate(model, val_x, val_y, cfg.eval_batch_size, device))
        if ema is not None:
            ema.module.eval()  # re-folds DO-Conv kernels from the averaged weights
            ema_scores = evaluate(ema.module, val_x, val_y, cfg.eval_batch_size, device)
            record.update(ema_top1=ema_scores["top1"], ema_top5=ema_scores["top5"])
        history.append(record)
        loss_sum, loss_count = 0.0, 0
        _logger.info("epoch %d/%d: train loss %.4f, top-1 %.2f%%, top-5 %.2f%%%s", epoch + 1, cfg.epochs,
                     record["train_loss"], record["top1"], record["top5"],
                     f" (EMA: top-1 {record['ema_top1']:.2f}%, top-5 {record['ema_top5']:.2f}%)" if ema else "")
        checkpoint(epoch + 1, 0)
        last_save = time.monotonic()

    duration = elapsed + time.perf_counter() - session_start
    final = history[-1]
    use_ema = ema is not None and final["ema_top1"] > final["top1"]
    chosen = ema.module if use_ema else model
    top1, top5 = (final["ema_top1"], final["ema_top5"]) if use_ema else (final["top1"], final["top5"])
    training = dict(
        dataset=cfg.dataset, data_dir=str(cfg.data_dir) if cfg.data_dir else None, epochs=cfg.epochs,
        train_images=n, eval_images=len(val_y), eval_split=_eval_split(cfg.dataset), img_size=cfg.img_size,
        num_classes=data.num_classes, top1=round(top1, 3), top5=round(top5, 3),
        top1_untrained=round(untrained["top1"], 3), top5_untrained=round(untrained["top5"], 3),
        weights="ema" if use_ema else "model", model_ema=cfg.model_ema,
        top1_model=round(final["top1"], 3), top1_ema=round(final["ema_top1"], 3) if ema else None,
        date=dt.date.today().isoformat(), duration_s=round(duration, 1), device=_device_name(device),
        hparams=_hparams(cfg, bs), history=history,
        versions=dict(torch=torch.__version__, timm=timm.__version__, python=sys.version.split()[0]))
    record_training(export_dir, chosen.state_dict(), num_classes=data.num_classes, img_size=cfg.img_size,
                    mean=mean, std=std, training=training, label_names=data.class_names)
    _logger.info("done in %.1f min: top-1 %.2f%%, top-5 %.2f%% (%s weights; untrained top-1 %.2f%%); wrote %s",
                 duration / 60, top1, top5, "EMA" if use_ema else "the model's", untrained["top1"], export_dir)
    return TrainResult(export_dir, chosen.eval(), top1, top5, "ema" if use_ema else "model", untrained["top1"],
                       history, resumed_from, duration)


def _eval_split(dataset: str) -> str:
    return {"fashion-mnist": "the test split", "cifar10": "the test batch", "synthetic": "generated held-out set",
            "imagefolder": "val/ or a per-class hold-out"}[dataset]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


def _hparams(cfg: TrainConfig, batch_size: int) -> dict[str, Any]:
    hp: dict[str, Any] = dict(opt=cfg.opt, lr=cfg.lr, min_lr=cfg.resolved_min_lr, batch_size=batch_size,
                              weight_decay=cfg.weight_decay, sched=cfg.sched,
                              sched_step="epoch" if cfg.sched_on_epochs else "update",
                              warmup_epochs=cfg.resolved_warmup_epochs, smoothing=cfg.smoothing, seed=cfg.seed)
    for name in ("mixup", "cutmix", "hflip", "drop_path", "clip_grad"):
        if getattr(cfg, name):
            hp[name] = getattr(cfg, name)
    if cfg.model_ema:
        hp["model_ema_decay"] = cfg.model_ema_decay
    if cfg.max_train:
        hp["max_train"] = cfg.max_train
    return hp


def setup_logging(export_dir: Path | None = None) -> list[logging.Handler]:
    """Progress to stderr, or (with `export_dir`) everything, appended across resumed runs, to
    EXPORT_DIR/train.log. Returns the handlers added, for the caller to remove."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if export_dir is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler.addFilter(lambda r: r.name.startswith(("nas", "trials", "search_spaces", "__main__")))
    else:
        handler = logging.FileHandler(export_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    return [handler]


def check_inputs(cfg: TrainConfig) -> None:
    """The checks that need no model or data loading: the dataset's files, the device."""
    try:
        check_dataset(cfg.dataset, cfg.data_dir)
    except DatasetError as err:
        raise TrainingError(str(err)) from None
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA device here; use --device cpu")


def describe(result: TrainResult) -> str:
    """One JSON line about the run, for scripts reading the command's stdout."""
    return json.dumps(dict(export_dir=str(result.export_dir), top1=round(result.top1, 3), top5=round(result.top5, 3),
                           weights=result.weights, top1_untrained=round(result.top1_untrained, 3),
                           resumed_from=result.resumed_from, duration_s=round(result.duration_s, 1)))

