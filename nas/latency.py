"""Latency predicted from a per-device latency table, without building the model (`predict_latency`).

A model runs its parts one after another at batch 1 (stem, each stage's downsampling, blocks and
closing norm, the head), so its latency is close to the sum of its parts' when each part is timed as
it runs in a model, in turns with other parts (`nas.latency_table.time_round_robin`). A latency
table holds, for one device, thread count and batch, a cost model per kind of part, fitted to parts
measured on that device (`nas.latency_table.build_latency_table`): a linear function of a few cost
terms of the part's shape (`part_features`: a constant for the per-call overhead, widths for
element-wise work, width products for matrix products, the measured depthwise convs, ...), one model
per block type, stride and stage resolution, times an end-to-end correction: the median ratio of
whole models' measured latency to their parts' sum. The terms come from the same shapes the counting
rules use, and like them need no torch: a prediction takes well under a millisecond.

Cost models are keyed by name (`block/lka/s2`: LKA blocks in stage 2, `block/mbconv/s3/stride2`: the
strided first MBConv of stage 3, `stem/overlap`, `downsample/patch/s4`, `norm/s1`, `head`); the table
names its feature terms, so a table from an older version with other terms is refused, not misread.
"""
from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from search_spaces.spec import ArchSpec, BlockSpec

from .counting import (
    BLOCK_COUNTS,
    block_sum_pays,
    cells_in_reach,
    count_downsample,
    count_stem,
    dynconv_hidden,
    ghost_primary_channels,
    involution_groups,
    involution_reduced,
    lka_kernels,
    pelk_conv_channels,
    resnest_cardinality,
    se_channels,
)
from .plan import plan_stages

__all__ = ["LatencyTable", "LatencyTableError", "CostModel", "Part", "latency_parts", "part_features", "part_flops",
           "predict_latency", "TABLE_FORMAT", "DEPTHWISE_KERNELS", "STAGE_SIZES", "Depthwise", "depthwise_key",
           "machine_description"]

TABLE_FORMAT = 1  # bump when the parts or their feature terms change: older tables are then refused
_ALIGN = 8  # SIMD width in floats: widths that are not multiples of it run tail loops (up to 30 % slower)


class LatencyTableError(ValueError):
    """A latency table that cannot be used for this prediction; the message says why and what to do."""


@dataclass(frozen=True)
class Part:
    """One piece of a model that runs as a unit: what builds it (`config`) and which cost model of the
    table predicts it. `count` identical copies run in the model (the blocks of a stage after its first)."""

    model: str
    config: tuple[tuple[str, Any], ...]
    count: int = 1

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.config)


def _mis(*widths: int) -> int:
    return int(any(w % _ALIGN for w in widths))


# The depthwise convs the blocks use, (kernel, dilation): a table measures each at every stage resolution
# over a range of widths, since their cost is far from proportional to kernel area and width (measured
# at 56 x 56: a 1x1 depthwise conv takes 25x a 3x3's time, and a dilated kernel whose padding passes a
# limit, e.g. 9x9 at dilation 2 or 7x7 at 3, 30-35x the undilated one's; cropping caps kernels on small
# maps; caches decide the rest).
DEPTHWISE_KERNELS = tuple((k, 1) for k in range(1, 15, 2)) + tuple((k, d) for d in (2, 3, 4) for k in (3, 5, 7, 9))
STAGE_SIZES = (56, 28, 14, 7)  # the stages' map sizes at 224 x 224
Depthwise = dict[str, list[tuple[int, float]]]  # "hw/kernel/dilation" -> [(channels, milliseconds), ...]


def depthwise_key(hw: int, kernel: int, dilation: int) -> str:
    return f"{hw}/{kernel}/{dilation}"


def _dw(depthwise: Depthwise, kernel: int, dilation: int, hw: int, channels: float) -> float:
    """Milliseconds of a depthwise conv over `channels`, interpolated in the table's measurements (linearly
    in the width; beyond the widths measured, along the last segment). A kernel the table lacks takes the
    nearest one with the same dilation, scaled by the kernel area."""
    points = depthwise.get(depthwise_key(hw, kernel, dilation))
    scale = 1.0
    if points is None:
        near = min((k for k, d in DEPTHWISE_KERNELS if d == dilation), key=lambda k: abs(k - kernel), default=None)
        points = depthwise.get(depthwise_key(hw, near, dilation)) if near is not None else None
        if points is None:
            raise LatencyTableError(f"the latency table has no depthwise conv {kernel}x{kernel} (dilation "
                                    f"{dilation}) at {hw}x{hw}; rebuild it with python scripts/latency_table.py")
        scale = kernel * kernel / (near * near)
    i = next((j for j in range(1, len(points) - 1) if channels <= points[j][0]), len(points) - 1)
    (w0, t0), (w1, t1) = points[i - 1], points[i]
    return scale * max(t0 + (t1 - t0) * (channels - w0) / (w1 - w0), 0.0)


def _block_features(kind: str, settings: dict[str, Any], depthwise: Depthwise) -> dict[str, float]:
    """Cost terms of one block: shared ones (overhead, element-wise, matrix products, misaligned widths),
    `dw`, the measured time of its depthwise convs, and its family's own (experts, heads, dense kernels).
    The stage resolution is fixed within one cost model, so the terms leave out the number of positions."""
    p: dict[str, Any] = settings["params"]
    c, c_in, hw = settings["dim"], settings["dim_in"], settings["hw"]
    ratio = p.get("mlp_ratio", p.get("expand_ratio", 0.0))
    h = int(c * ratio)
    f = {"one": 1.0, "c": c, "h": h, "cc": c * c, "ch": c * h, "mis_cc": _mis(c) * c * c, "mis_ch": _mis(c, h) * c * h}
    if settings["stride"] != 1 or c_in != c:
        f.update(c_in=c_in, c_in_c=c_in * c, c_in_h=c_in * h)
    k = p.get("kernel", 0)
    if kind in ("convnext", "doconv"):
        f["dw"] = _dw(depthwise, k, 1, hw, c)
    elif kind == "mbconv":
        f["dw"] = _dw(depthwise, k, 1, hw, h)
        f["se"] = h * se_channels(c, p)
    elif kind == "lka":
        local, dilated = lka_kernels(k, p["dilation"])
        f["dw"] = (_dw(depthwise, local, 1, hw, c) + _dw(depthwise, dilated, p["dilation"], hw, c)
                   + _dw(depthwise, 3, 1, hw, h))
    elif kind == "pelk":  # the dense path over the taps in reach, or box sums over the cells in reach
        cc = pelk_conv_channels(c, p)
        reach = min(k // 2, hw - 1)  # taps further out only ever read padding and are skipped
        if block_sum_pays(k, p["center"], reach, reach, hw, hw, False):
            first, last, _ = cells_in_reach(k, p["center"], reach)
            f["box_sums"] = cc * (last - first) ** 2
        else:
            f["dense"] = cc * (2 * reach + 1) ** 2
        f.update(conv=cc, embed=cc * k * k)
    elif kind == "sam":
        heads, e = p["heads"], p["expand_ratio"]
        f["dw"] = sum(_dw(depthwise, 3 + 2 * i, 1, hw, c / heads) for i in range(heads)) + _dw(depthwise, 3, 1, hw, h)
        f.update(expand=e * c, expand_grouped=e * c * heads, project=e * c * c)
    elif kind == "msa":  # the attention matmuls run at an efficiency that depends on the head width
        head_dim = c / p["heads"]
        f[f"attention_hd{16 if head_dim <= 24 else 32 if head_dim <= 48 else 64}"] = c
        f.update(heads=p["heads"], rel_pos=p["heads"] * int(p["rel_pos"]),
                 dw=(_dw(depthwise, 3, 1, hw, c) * int(p["v_conv"])
                     + _dw(depthwise, 3, 1, hw, h) * int(p["mlp"] == "conv")))
    elif kind in ("condconv", "dynconv"):
        n = p["experts"] if kind == "condconv" else p["num_kernels"]
        f.update(dw=k * k * c, mix=n * k * k * c, route=n * c + (dynconv_hidden(c) * c if kind == "dynconv" else 0))
    elif kind == "ghost":
        g, kd = p["ratio"], p["dw_kernel"]
        inner, outer = ghost_primary_channels(h, g), ghost_primary_channels(c, g)
        f.update({f"primary_k{k}": c * inner + h * outer, f"cheap_k{kd}": (g - 1) * (inner + outer),
                  "ghost_c": inner + outer})
    elif kind == "scconv":
        f[f"conv_k{k}"] = c * c * (3 + 1 / p["pooling"] ** 2) / 4
    elif kind == "resnest":
        r = p["radix"]
        f.update({f"conv_k{k}": c * c * r / resnest_cardinality(c, p["cardinality"]), "splits": r * c})
    elif kind == "involution":
        groups, reduced = involution_groups(c, p["group_channels"]), involution_reduced(c, p["reduction"])
        f.update({"generate": c * reduced + reduced * k * k * groups, "kernels": k * k * groups,
                  f"apply_k{k}": k * k * c})
    return f


def part_features(part: Part, depthwise: Depthwise) -> dict[str, float]:
    """The cost terms of a part, by name: the inputs of its cost model (see the module docstring);
    `depthwise` is the table's measured depthwise convs."""
    s = part.settings
    kind = part.model.split("/")[0]
    if kind == "block":
        return _block_features(s["type"], s, depthwise)
    if kind == "stem":
        w, k = s["width"], s["kernel"]
        return {"one": 1.0, "w": w, f"kw_k{k}": k * k * w, "kww": k * k * w * w, "mis_w": _mis(w) * w}
    if kind == "downsample":
        c_in, c = s["dim_in"], s["dim"]
        return {"one": 1.0, "c_in": c_in, "c": c, "c_in_c": c_in * c, "mis": _mis(c_in, c) * c_in * c}
    if kind == "norm":
        return {"one": 1.0, "c": s["dim"], "mis": _mis(s["dim"]) * s["dim"]}
    if kind == "head":
        c, hidden = s["dim"], s["hidden"] or 0
        return {"one": 1.0, "c": c, "norm": c * int(s["norm"]), "hidden": c * hidden,
                "classes": (hidden or c) * s["num_classes"]}
    raise ValueError(f"unknown part {part.model!r}")


def part_flops(part: Part) -> int:
    """Multiply-accumulates of one copy of a part (the counting rules of `nas.counting`)."""
    s = part.settings
    kind = part.model.split("/")[0]
    if kind == "stem":
        return count_stem(s["type"], 3, s["width"], s["kernel"], s["norm"], (224, 224)).flops
    if kind == "downsample":
        return count_downsample(s["kind"], s["dim_in"], s["dim"], (s["hw"], s["hw"])).flops
    if kind == "block":
        return BLOCK_COUNTS[s["type"]](s["dim_in"], s["dim"], dict(s["params"]), (s["hw"], s["hw"]), s["stride"]).flops
    if kind == "head":
        return s["dim"] * (s["hidden"] or 0) + (s["hidden"] or s["dim"]) * s["num_classes"]
    return 0  # a norm: no MACs in the papers' convention


def _block_model(block: BlockSpec, stage: int, stride: int, dim_in: int, dim: int) -> str:
    name = f"block/{block.type}/s{stage}"
    return name + "/stride2" if stride != 1 or dim_in != dim else name


def latency_parts(spec: ArchSpec, img_size: int = 224, num_classes: int = 1000) -> list[Part]:
    """The parts `nas.build_model(spec, num_classes)` runs at `img_size`, identical blocks merged."""
    parts = [Part(f"stem/{spec.stem.type}", (("type", spec.stem.type), ("width", spec.stem_width()),
                                             ("kernel", spec.stem.kernel), ("norm", spec.stem.norm)))]
    for plan in plan_stages(spec, img_size):
        stage, n = spec.stages[plan.index], plan.index + 1
        hw = plan.out_hw[0]
        if stage.downsample in ("overlap", "patch"):
            parts.append(Part(f"downsample/{stage.downsample}/s{n}", (
                ("kind", stage.downsample), ("norm", stage.down_norm), ("dim_in", plan.dim_in), ("dim", plan.dim),
                ("hw", hw))))
        counts: dict[Part, int] = {}
        pelk = next((b for b in stage.blocks if b.type == "pelk"), None)
        for b in plan.blocks:
            part = Part(_block_model(b.spec, n, b.stride, b.dim_in, b.dim), (
                ("type", b.spec.type), ("params", _Params(b.spec.params)), ("dim_in", b.dim_in), ("dim", b.dim),
                ("stride", b.stride), ("hw", hw),
                ("pos_embed", (pelk_conv_channels(plan.dim, pelk.params), pelk.kernel) if pelk else None)))
            counts[part] = counts.get(part, 0) + 1
        parts.extend(Part(p.model, p.config, c) for p, c in counts.items())
        if stage.norm_out:
            parts.append(Part(f"norm/s{n}", (("dim", plan.dim), ("hw", hw))))
    parts.append(Part("head", (("dim", spec.widths()[-1]), ("norm", spec.head.norm), ("hidden", spec.head.hidden),
                               ("num_classes", num_classes))))
    return parts


class _Params(dict):
    """A block's parameters as a hashable dict, so that identical blocks merge into one part."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True))


@dataclass
class CostModel:
    """Milliseconds = coefficients . features (clamped below at half the fastest part measured)."""

    features: tuple[str, ...]
    coef: tuple[float, ...]
    min_ms: float
    samples: int = 0
    loo_median_error: float = float("nan")  # leave-one-out relative error over the measured parts
    loo_p90_error: float = float("nan")

    def predict(self, features: dict[str, float]) -> float:
        value = sum(w * features.get(name, 0.0) for name, w in zip(self.features, self.coef))
        return max(value, 0.5 * self.min_ms)

    def to_dict(self) -> dict[str, Any]:
        return dict(features=list(self.features), coef=list(self.coef), min_ms=self.min_ms, samples=self.samples,
                    loo_median_error=self.loo_median_error, loo_p90_error=self.loo_p90_error)


@dataclass
class LatencyTable:
    """Cost models of one device at one thread count and batch, and what made them (plain JSON)."""

    device: str
    threads: int
    batch: int
    img_size: int
    models: dict[str, CostModel]
    depthwise: Depthwise = field(default_factory=dict)
    scale: float = 1.0  # end-to-end correction: model ms = scale * sum of its parts
    meta: dict[str, Any] = field(default_factory=dict)  # versions, machine, timings, fit quality
    # what was measured, per cost model: [milliseconds, the part's settings], so that a table can be refitted
    measurements: dict[str, list[tuple[float, dict[str, Any]]]] = field(default_factory=dict)
    path: str = ""  # where it was loaded from, for reports
    _features: dict[Part, dict[str, float]] = field(default_factory=dict, repr=False, compare=False)

    def features(self, part: Part) -> dict[str, float]:
        """`part_features` with this table's depthwise convs, remembered (a search predicts the same
        blocks again and again)."""
        found = self._features.get(part)
        if found is None:
            found = self._features[part] = part_features(part, self.depthwise)
        return found

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return (f"{self.device}, {self.threads} thread{'s' if self.threads > 1 else ''}, batch {self.batch}, "
                f"{self.meta.get('machine', {}).get('cpu', '?')}{where}")

    def to_dict(self) -> dict[str, Any]:
        return dict(format=TABLE_FORMAT, device=self.device, threads=self.threads, batch=self.batch,
                    img_size=self.img_size, depthwise=dict(sorted(self.depthwise.items())),
                    scale=self.scale, meta=self.meta,
                    models={name: m.to_dict() for name, m in sorted(self.models.items())},
                    measurements=dict(sorted(self.measurements.items())))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> LatencyTable:
        where = f"latency table {path}" if path else "latency table"
        if not isinstance(data, dict) or "models" not in data:
            raise LatencyTableError(f"{where}: not a latency table (no 'models'); make one with "
                                    "python scripts/latency_table.py --out FILE.json")
        if data.get("format") != TABLE_FORMAT:
            raise LatencyTableError(f"{where}: format {data.get('format')!r}, this version reads format "
                                    f"{TABLE_FORMAT}; rebuild it with python scripts/latency_table.py")
        try:
            models = {name: CostModel(tuple(m["features"]), tuple(float(c) for c in m["coef"]), float(m["min_ms"]),
                                      int(m.get("samples", 0)), float(m.get("loo_median_error", math.nan)),
                                      float(m.get("loo_p90_error", math.nan)))
                      for name, m in data["models"].items()}
            return cls(device=str(data["device"]), threads=int(data["threads"]), batch=int(data["batch"]),
                       img_size=int(data["img_size"]), models=models,
                       depthwise={str(k): [(int(w), float(t)) for w, t in v]
                                  for k, v in data.get("depthwise", {}).items()},
                       measurements=dict(data.get("measurements", {})), scale=float(data.get("scale", 1.0)),
                       meta=dict(data.get("meta", {})), path=path)
        except (KeyError, TypeError, ValueError) as err:
            raise LatencyTableError(f"{where}: malformed ({err!r}); rebuild it with "
                                    "python scripts/latency_table.py") from None

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LatencyTableError(f"latency table {path} does not exist; make one with "
                                    f"python scripts/latency_table.py --out {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise LatencyTableError(f"latency table {path} is not readable JSON ({err}); "
                                    "rebuild it with python scripts/latency_table.py") from None
        return cls.from_dict(data, str(path))


def predict_latency(spec: ArchSpec, table: LatencyTable | str | Path, num_classes: int = 1000) -> float:
    """Milliseconds `spec` takes at batch `table.batch` on the table's device and threads, at the
    table's image size: the sum of its parts' predicted times, corrected end to end.

    `table` is a LatencyTable or the path of its JSON (read once, then reused while the file is unchanged).
    Raises LatencyTableError when the table is unreadable or has no cost model for one of the spec's parts."""
    if not isinstance(table, LatencyTable):
        path = Path(table)
        try:
            table = _load_cached(str(path.resolve()), path.stat().st_mtime_ns)
        except FileNotFoundError:
            table = LatencyTable.load(path)  # raises the table's own error
    parts = latency_parts(spec, table.img_size, num_classes)
    total = 0.0
    for part in parts:
        model = table.models.get(part.model)
        if model is None:
            where = f" {table.path}" if table.path else ""
            raise LatencyTableError(f"the latency table{where} has no cost model {part.model!r} for this spec; "
                                    "rebuild it with python scripts/latency_table.py (all block types)")
        total += part.count * model.predict(table.features(part))
    return table.scale * total


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> LatencyTable:
    return LatencyTable.load(path)


def machine_description() -> dict[str, Any]:
    """Where a table was made, for its JSON: CPU model, cores, OS, Python (torch's own are added by the builder)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), system=platform.platform(), python=platform.python_version())

