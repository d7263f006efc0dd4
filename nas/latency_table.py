"""Make a latency table: measure the parts the space can produce on this device and fit their cost models.

First the depthwise convs the blocks use, per kernel, dilation, map size and width. Then, for every cost
model of `nas.latency` (each block type and stride at each stage resolution, each stem, downsampling,
stage norm and the head), parts drawn from random architectures of the whole space, timed in turns
with parts of about their size (eval and inference mode, channels_last, the table's thread count and
batch: `time_round_robin`); each model's coefficients are fitted by least squares on relative error,
once more without the parts whose error is over three times the median (a measurement the shared
machine disturbed), and the leave-one-out error of each fit goes into the table with what was measured.
Last, whole random models are timed to fit the end-to-end correction (model = scale * sum of its parts).
"""
from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.space import RandomChoiceTrial, sample_spec
from search_spaces.spec import BLOCK_TYPES, STEM_TYPES, STRIDING_BLOCKS, ArchSpec
from trials.latency import Call, channels_last_input, time_in_turns, to_channels_last

from .count import count
from .latency import (
    DEPTHWISE_KERNELS,
    STAGE_SIZES,
    TABLE_FORMAT,
    CostModel,
    Depthwise,
    LatencyTable,
    Part,
    depthwise_key,
    latency_parts,
    machine_description,
    part_features,
    part_flops,
    predict_latency,
)

__all__ = ["build_latency_table", "refit", "cost_model_names", "build_part", "time_forward", "time_round_robin",
           "random_specs", "measure_depthwise"]

_logger = logging.getLogger(__name__)

FULL_MODEL_GFLOPS = (0.1, 10.0)  # the range of the whole models that fit the end-to-end correction
POOL = 16  # parts timed in turns (`time_round_robin`)


def cost_model_names() -> list[str]:
    """Every cost model a complete table holds."""
    names = [f"stem/{s}" for s in STEM_TYPES]
    for i in range(1, 5):
        names += [f"downsample/{kind}/s{i}" for kind in ("overlap", "patch")] + [f"norm/s{i}"]
        names += [f"block/{t}/s{i}" for t in BLOCK_TYPES]
        names += [f"block/{t}/s{i}/stride2" for t in STRIDING_BLOCKS]
    return names + ["head"]


def _choices_for(name: str) -> dict[str, Any]:
    """Choices that make a random architecture contain a part of cost model `name`."""
    kind, *rest = name.split("/")
    if kind == "stem":
        return {"stem": rest[0]}
    if kind == "head":
        return {}
    stage = int(rest[-1][1:]) if kind != "block" else int(rest[1][1:])
    if kind == "norm":
        return {"norm_at": "stage"}
    fixed: dict[str, Any] = {"stem": "deep"} if stage == 1 else {}
    if kind == "downsample":
        return {**fixed, f"s{stage}_downsample": rest[0]}
    block, strided = rest[0], rest[-1] == "stride2"
    fixed[f"s{stage}_pattern"] = block
    if strided:
        fixed[f"s{stage}_downsample"] = "block"
    elif stage > 1 or block in STRIDING_BLOCKS:
        fixed[f"s{stage}_downsample"] = "overlap"
    if stage == 1 and not strided:
        fixed.pop("stem")
    return fixed


def _random_parts(name: str, rng: random.Random) -> Iterator[Part]:
    """Parts of cost model `name` from random architectures of the whole space (at 224 x 224)."""
    fixed = _choices_for(name)
    while True:
        spec = sample_spec(RandomChoiceTrial(rng, fixed))
        found = [p for p in latency_parts(spec) if p.model == name]
        if found:
            yield rng.choice(found)


def random_specs(rng: random.Random, gflops: tuple[float, float] = FULL_MODEL_GFLOPS) -> Iterator[ArchSpec]:
    """Random architectures of the whole space whose FLOPs fall in `gflops`."""
    while True:
        spec = sample_spec(RandomChoiceTrial(rng))
        if gflops[0] * 1e9 <= count(spec).flops <= gflops[1] * 1e9:
            yield spec


def build_part(part: Part, batch: int = 1, device: str = "cpu") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The module of one part, in eval mode and channels_last on `device`, with an input for it."""
    from .model import ClassifierHead
    from .ops import BLOCKS
    from .ops.layers import LayerNorm2d
    from .ops.pelk import make_pos_embed
    from .ops.stems import build_downsample, build_stem

    s = part.settings
    kind = part.model.split("/")[0]
    extra: tuple[torch.Tensor, ...] = ()
    if kind == "stem":
        module: nn.Module = build_stem(s["type"], 3, s["width"], s["kernel"], s["norm"])
        shape = (3, 224, 224)
    elif kind == "downsample":
        module = build_downsample(s["kind"], s["dim_in"], s["dim"], s["norm"])
        shape = (s["dim_in"], 2 * s["hw"], 2 * s["hw"])
    elif kind == "norm":
        module, shape = LayerNorm2d(s["dim"], eps=1e-6), (s["dim"], s["hw"], s["hw"])
    elif kind == "head":
        module = ClassifierHead(s["dim"], s["num_classes"], s["norm"], s["hidden"])
        shape = (s["dim"], 7, 7)
    else:
        module = BLOCKS[s["type"]][0](s["dim_in"], s["dim"], dict(s["params"]), stride=s["stride"],
                                      feat_size=(s["hw"], s["hw"]))
        shape = (s["dim_in"], s["hw"] * s["stride"], s["hw"] * s["stride"])
        if s["pos_embed"] is not None and getattr(module, "uses_pos_embed", False):
            extra = (make_pos_embed(*s["pos_embed"]).detach().to(device),)
    module = to_channels_last(module.to(device)).eval()
    return module, (channels_last_input(batch, *shape, device=device), *extra)


def time_forward(module: nn.Module, args: tuple[torch.Tensor, ...], warmup: int, runs: int) -> float:
    """Median milliseconds of `module(*args)`, run over and over alone after `warmup` calls."""
    return time_round_robin([(module, args)], warmup, runs)[0]


def time_round_robin(calls: list[Call], warmup: int, runs: int) -> list[float]:
    """Median milliseconds of each `module(*args)`, timed in turns (`trials.latency.time_in_turns`). A part
    timed over and over alone finds its weights and code hot in the caches, which it does not in a model
    (the parts of small models, each timed alone, summed 10-25 % below the model); in turns with parts
    of about its size, as in a model, the sums come within a few percent."""
    return [statistics.median(t) for t in time_in_turns(calls, warmup, runs)]


def depthwise_widths(hw: int, kernel: int, dilation: int) -> tuple[int, ...]:
    """Widths to measure a depthwise conv at: powers of two up to what the stage can hold (its blocks'
    hidden widths for the 3x3 and 5x5 convs of MLPs and MBConvs, 8x its largest width)."""
    largest = {56: 512, 28: 1024, 14: 2048, 7: 2048}[hw]
    if dilation == 1 and kernel in (3, 5):
        largest *= 8
    widths, w = [], 16
    while w <= largest:
        widths.append(w)
        w *= 2
    return tuple(widths)


def measure_depthwise(batch: int = 1, device: str = "cpu", warmup: int = 2, runs: int = 5) -> Depthwise:
    """Milliseconds of every depthwise conv in DEPTHWISE_KERNELS at every stage size, over `depthwise_widths`."""
    from .ops.base import DepthwiseConv2d

    found: Depthwise = {}
    for hw in STAGE_SIZES:
        for kernel, dilation in DEPTHWISE_KERNELS:
            points = []
            for width in depthwise_widths(hw, kernel, dilation):
                conv = to_channels_last(DepthwiseConv2d(width, kernel, dilation).to(device)).eval()
                x = channels_last_input(batch, width, hw, hw, device=device)
                points.append((width, time_forward(conv, (x,), warmup, runs)))
            found[depthwise_key(hw, kernel, dilation)] = points
    return found


def _fit(rows: list[dict[str, float]], times: list[float]) -> CostModel:
    """Least squares on relative error; refit without outliers (over 3x the median error, at least 10 %)."""
    names = sorted({k for r in rows for k, v in r.items() if v})
    x = np.array([[r.get(n, 0.0) for n in names] for r in rows], dtype=float)
    y = np.asarray(times, dtype=float)
    keep = np.ones(len(y), dtype=bool)
    for _ in range(2):
        w = 1.0 / y[keep]
        a = x[keep] * w[:, None]
        scale = np.linalg.norm(a, axis=0)
        scale[scale == 0] = 1.0
        coef, *_ = np.linalg.lstsq(a / scale, np.ones(keep.sum()), rcond=1e-10)
        coef = coef / scale
        error = np.abs(x @ coef - y) / y
        keep = error <= max(3 * float(np.median(error)), 0.10)
    a = (x[keep] / y[keep][:, None]) / scale
    hat = np.einsum("ij,ji->i", a, np.linalg.pinv(a, rcond=1e-10))  # leave-one-out via the hat matrix
    loo = np.abs((a @ (coef * scale) - 1.0) / np.clip(1.0 - hat, 1e-6, None))
    return CostModel(tuple(names), tuple(float(c) for c in coef), float(y.min()), int(keep.sum()),
                     float(np.median(loo)), float(np.percentile(loo, 90)))


def _samples_for(rows: list[dict[str, float]], base: int | None) -> int:
    if base is not None:
        return base
    terms = len({k for r in rows for k, v in r.items() if v})
    return 3 * terms + 12


def build_latency_table(device: str = "cpu", threads: int = 1, batch: int = 1, samples: int | None = None,
                        full_models: int = 24, models: list[str] | None = None, seed: int = 0,
                        warmup: int = 3, runs: int = 7) -> LatencyTable:
    """Measure and fit every cost model (or those named in `models`) on `device`.

    `samples` parts per cost model (default: 3 per feature term plus 12, 21-54); `full_models` whole random
    architectures of 0.1-10 GFLOPs then fit the end-to-end correction (0: none)."""
    names = models or cost_model_names()
    unknown = sorted(set(names) - set(cost_model_names()))
    if unknown:
        raise ValueError(f"unknown cost model {unknown[0]!r}; see nas.latency_table.cost_model_names()")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = random.Random(seed)
    start = time.perf_counter()
    fitted: dict[str, CostModel] = {}
    try:
        depthwise = measure_depthwise(batch, device)
        _logger.info("depthwise convs: %d kernels at %d map sizes, %.1f s", len(DEPTHWISE_KERNELS), len(STAGE_SIZES),
                     time.perf_counter() - start)
        drawn: list[tuple[str, Part]] = []
        for name in names:
            parts = _random_parts(name, rng)
            first = next(parts)
            target = _samples_for([part_features(first, depthwise)], samples)
            drawn += [(name, first)] + [(name, next(parts)) for _ in range(target - 1)]
        # each pool holds parts of all kinds and of about one size, as a model does: a small part timed
        # after a large one finds the caches emptied, which in a small model it does not
        rng.shuffle(drawn)
        drawn.sort(key=lambda named: part_flops(named[1]))
        measured: dict[str, tuple[list[dict[str, float]], list[float]]] = {name: ([], []) for name in names}
        kept: dict[str, list[tuple[float, dict[str, Any]]]] = {name: [] for name in names}
        for begin in range(0, len(drawn), POOL):
            pool = drawn[begin:begin + POOL]
            for (name, part), ms in zip(pool, time_round_robin([build_part(p, batch, device) for _, p in pool],
                                                               warmup, runs)):
                measured[name][0].append(part_features(part, depthwise))
                measured[name][1].append(ms)
                kept[name].append((round(ms, 5), {k: dict(v) if isinstance(v, dict) else v for k, v in part.config}))
            done = begin + len(pool)
            if done % (10 * POOL) == 0 or done == len(drawn):
                _logger.info("measured %d of %d parts (%d cost models), %.0f s", done, len(drawn), len(names),
                             time.perf_counter() - start)
        for i, name in enumerate(names, 1):
            rows, times = measured[name]
            fitted[name] = m = _fit(rows, times)
            _logger.info("[%d/%d] %s: %d parts, %.3f-%.1f ms, fit error (leave-one-out) median %.1f%%, "
                         "90th percentile %.1f%%", i, len(names), name, len(times), min(times), max(times),
                         100 * m.loo_median_error, 100 * m.loo_p90_error)
        table = LatencyTable(device=device, threads=threads, batch=batch, img_size=224, models=fitted,
                             depthwise=depthwise, measurements=kept)
        correction = _fit_correction(table, full_models, rng, device, threads, batch) if full_models else {}
    finally:
        torch.set_num_threads(previous)
    table.meta = dict(
        format=TABLE_FORMAT, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        build_s=round(time.perf_counter() - start, 1), machine=machine_description(), versions=_versions(device),
        measurement=dict(warmup=warmup, runs=runs, statistic="median", seed=seed), correction=correction)
    return table


def refit(table: LatencyTable) -> LatencyTable:
    """The table's cost models fitted again from its own measurements with this version's cost terms (and
    the correction from its whole models), without measuring anything: for a table made by an older
    version of this format, or to try other terms."""
    from .latency import _Params

    fitted = {}
    for name, rows in table.measurements.items():
        parts = [Part(name, tuple((k, _Params(v) if k == "params" else tuple(v) if isinstance(v, list) else v)
                                  for k, v in config.items())) for _, config in rows]
        fitted[name] = _fit([part_features(p, table.depthwise) for p in parts], [ms for ms, _ in rows])
    new = LatencyTable(device=table.device, threads=table.threads, batch=table.batch, img_size=table.img_size,
                       models=fitted, depthwise=table.depthwise, meta=dict(table.meta), measurements=table.measurements)
    correction = table.meta.get("correction", {})
    if correction.get("specs"):
        new.scale = 1.0
        sums = np.array([predict_latency(ArchSpec.from_dict(s), new) for s in correction["specs"]])
        measured = np.array(correction["measured_ms"])
        new.scale = _correction_fit(sums, measured)
        errors = {"median_error_before": float(np.median(np.abs(sums - measured) / measured)),
                  "median_error_after": float(np.median(np.abs(new.scale * sums - measured) / measured))}
        new.meta["correction"] = {**correction, "sum_of_parts_ms": [round(float(v), 3) for v in sums], **errors}
    return new


def _correction_fit(sums: np.ndarray, measured: np.ndarray) -> float:
    """The scale of model ms = scale * sum of its parts: the median ratio. A least-squares scale and offset
    (on relative error) let two outliers among 24 models set a 7 ms offset, 70 % of a small model."""
    return float(np.median(measured / sums))


def _fit_correction(table: LatencyTable, n: int, rng: random.Random, device: str, threads: int,
                    batch: int) -> dict[str, Any]:
    """Time `n` whole random models and fit model ms = scale * (sum of the parts)."""
    from torch.nn.utils import parametrize

    from .model import build_model

    sums, measured, chosen = [], [], []
    specs = random_specs(rng)
    x = channels_last_input(batch, 3, 224, 224, device=device)
    for i in range(n):  # each alone, over and over, as `trials.latency.measure_latency` times a model
        spec = next(specs)
        chosen.append(spec)
        model = to_channels_last(build_model(spec).to(device)).eval()
        with parametrize.cached():
            measured.append(time_forward(model, (x,), warmup=5, runs=10))
        del model
        sums.append(predict_latency(spec, table))
        _logger.info("[correction %d/%d] %.2f GFLOPs %s: measured %.1f ms, sum of parts %.1f ms", i + 1, n,
                     count(spec).flops / 1e9, spec.layout, measured[-1], sums[-1])
    s, y = np.array(sums), np.array(measured)
    table.scale = scale = _correction_fit(s, y)
    before = np.abs(s - y) / y
    after = np.abs(scale * s - y) / y
    return dict(models=n, median_error_before=float(np.median(before)), median_error_after=float(np.median(after)),
                measured_ms=[round(float(v), 3) for v in y], sum_of_parts_ms=[round(float(v), 3) for v in s],
                specs=[spec.to_dict() for spec in chosen])


def _versions(device: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("hybrid-nas")
    except PackageNotFoundError:
        ours = "unknown"
    info: dict[str, Any] = dict(torch=torch.__version__, hybrid_nas=ours, mkldnn=torch.backends.mkldnn.is_available())
    if device.startswith("cuda") and torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    gpu=torch.cuda.get_device_name(torch.device(device)))
    return info
