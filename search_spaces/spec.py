"""The architecture spec: plain, validated, JSON-serialisable data describing one backbone.

A spec says WHAT a network is (stem, four stages of blocks, head); `nas.build_model` turns it into
a module and `nas.count` counts it. Every field is checked by :func:`ArchSpec.validate`, which names
the offending field and what is allowed, so a bad spec fails before anything is built.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = [
    "BLOCK_TYPES", "BLOCK_DEFAULTS", "LAYOUT_CODES", "STEM_TYPES", "DOWNSAMPLE_TYPES", "STRIDING_BLOCKS",
    "SpecError", "BlockSpec", "StemSpec", "StageSpec", "HeadSpec", "ArchSpec",
]


class SpecError(ValueError):
    """An architecture spec that cannot be built; the message names the field and the fix."""


# Each block type with its parameters and their defaults. A block spec may only set these keys.
BLOCK_DEFAULTS: dict[str, dict[str, Any]] = {
    # ConvNeXt block: depthwise k x k, LayerNorm, MLP, layer scale.
    "convnext": {"kernel": 7, "mlp_ratio": 4.0, "layer_scale": 1e-6},
    # CoAtNet's MBConv: pre-norm BN, 1x1 expand, depthwise k x k, SE, 1x1 project.
    "mbconv": {"kernel": 3, "expand_ratio": 4.0, "se_ratio": 0.25},
    # VAN block: large kernel attention (K x K decomposed with dilation d) and a conv-FFN.
    "lka": {"kernel": 21, "dilation": 3, "mlp_ratio": 4.0, "layer_scale": 1e-2},
    # PeLK block: partial peripheral conv (shared-parameter K x K depthwise), LayerNorm, MLP.
    "pelk": {"kernel": 51, "center": 5, "conv_ratio": 0.375, "mlp_ratio": 4.0, "layer_scale": 1e-6},
    # SMT block with scale-aware modulation (SAM): multi-head mixed conv + scale-aware aggregation.
    "sam": {"heads": 4, "expand_ratio": 2, "mlp_ratio": 4.0, "layer_scale": 0.0},
    # Multi-head self-attention over the whole map; CoAtNet style (rel_pos, plain MLP) or SMT style
    # (v_conv: depthwise 3x3 on the values, mlp "conv": the MLP carries a depthwise conv).
    "msa": {"heads": 8, "mlp_ratio": 4.0, "rel_pos": False, "v_conv": False, "mlp": "plain",
            "qkv_bias": True, "layer_scale": 0.0},
    # Conv variants (issue 5). Except Ghost, each is the spatial mixer of a residual block
    # x + layer_scale(MLP(BN(mixer(x)))), the MLP being 1x1 convs of mlp_ratio * width hidden channels.
    # CondConv: depthwise k x k, per-sample kernel = sigmoid-routed sum of `experts` kernels.
    "condconv": {"kernel": 3, "experts": 8, "mlp_ratio": 4.0, "layer_scale": 1e-6},
    # DynamicConv: depthwise k x k, softmax(./temperature) attention over `num_kernels` kernels.
    "dynconv": {"kernel": 3, "num_kernels": 4, "temperature": 30.0, "mlp_ratio": 4.0, "layer_scale": 1e-6},
    # GhostNet's bottleneck: two Ghost modules (primary k x k conv to ceil(out/ratio) channels, cheap
    # dw_kernel depthwise convs for the rest), expanding to mlp_ratio * width and back.
    "ghost": {"ratio": 2, "kernel": 1, "dw_kernel": 3, "mlp_ratio": 4.0},
    # SCNet's self-calibrated conv: k x k convs on two halves, one gated by an avg-pool-`pooling` view.
    "scconv": {"kernel": 3, "pooling": 4, "mlp_ratio": 4.0, "layer_scale": 1e-6},
    # DO-Conv: depthwise k x k conv over-parameterised by a depthwise kernel D (d_mul >= kernel^2).
    "doconv": {"kernel": 3, "d_mul": 9, "mlp_ratio": 4.0, "layer_scale": 1e-6},
    # ResNeSt split attention: k x k, `radix` splits per cardinal group, attention MLP width / reduction.
    "resnest": {"kernel": 3, "radix": 2, "cardinality": 1, "reduction": 4, "mlp_ratio": 4.0, "layer_scale": 1e-6},
    # Involution: a K x K kernel per position (generator reduction r), shared by groups of
    # ~group_channels channels.
    "involution": {"kernel": 7, "group_channels": 16, "reduction": 4, "mlp_ratio": 4.0, "layer_scale": 1e-6},
}
BLOCK_TYPES = tuple(BLOCK_DEFAULTS)
# One-letter codes for layout strings such as C-C-T-T (CoAtNet) or S-S-SM-M (SMT); an MSA block with
# relative position bias is CoAtNet's transformer block "T".
LAYOUT_CODES = {"convnext": "X", "mbconv": "C", "lka": "L", "pelk": "P", "sam": "S", "msa": "M",
                "condconv": "K", "dynconv": "D", "ghost": "G", "scconv": "Q", "doconv": "O", "resnest": "R",
                "involution": "I"}

# Stem types and their total stride.
STEM_TYPES = {
    "overlap": 4,  # VAN: one k x k stride-4 conv + norm
    "patch": 4,  # ConvNeXt / PeLK: 4 x 4 stride-4 conv + LayerNorm
    "conv2": 4,  # SMT: k x k stride-2 conv-BN-ReLU, then 2 x 2 stride-2 conv + LayerNorm
    "deep": 2,  # CoAtNet: 3 x 3 stride-2 conv-BN-GELU, then 3 x 3 conv
}
# Ways a stage changes resolution: its stride and what it is.
DOWNSAMPLE_TYPES = {
    "none": 1,  # stage 1 after a stride-4 stem
    "overlap": 2,  # 3 x 3 stride-2 conv + norm (VAN, SMT)
    "patch": 2,  # norm + 2 x 2 stride-2 conv (ConvNeXt, PeLK)
    "block": 2,  # the stage's first block strides itself (CoAtNet)
}
STRIDING_BLOCKS = ("mbconv", "msa")  # the blocks that can downsample their stage themselves ('block')
NORMS = ("bn", "ln")
MLP_KINDS = ("plain", "conv")


def _check(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise SpecError(f"{where}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class BlockSpec:
    """One block type with its parameters (unset parameters take the type's defaults)."""

    type: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type in BLOCK_DEFAULTS:
            object.__setattr__(self, "params", {**BLOCK_DEFAULTS[self.type], **self.params})

    def __hash__(self) -> int:
        return hash((self.type, json.dumps(self.params, sort_keys=True)))

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    @property
    def code(self) -> str:
        if self.type == "msa" and self.params.get("rel_pos"):
            return "T"
        return LAYOUT_CODES.get(self.type, "?")

    def validate(self, where: str, width: int) -> None:
        _check(self.type in BLOCK_DEFAULTS, where,
               f"unknown block type {self.type!r}; choose one of {', '.join(BLOCK_TYPES)}")
        unknown = sorted(set(self.params) - set(BLOCK_DEFAULTS[self.type]))
        _check(not unknown, where, f"{self.type} blocks take no parameter {unknown[0] if unknown else ''!r}; "
               f"allowed: {', '.join(BLOCK_DEFAULTS[self.type])}")
        p = self.params
        where = f"{where} ({self.type})"
        for key in ("mlp_ratio", "expand_ratio", "se_ratio", "conv_ratio", "layer_scale"):
            if key in p:
                _check(_is_number(p[key]) and p[key] >= 0, where, f"{key} must be a number >= 0, got {p[key]!r}")
        for key in ("mlp_ratio", "expand_ratio"):
            if key in p:
                _check(p[key] > 0, where, f"{key} must be > 0, got {p[key]!r}")
        if "kernel" in p and self.type == "lka":  # the nominal receptive field; its convs are checked below
            _check(_is_int(p["kernel"]) and p["kernel"] >= 1, where,
                   f"kernel must be an integer >= 1, got {p['kernel']!r}")
        elif "kernel" in p:
            _check(_is_int(p["kernel"]) and p["kernel"] >= 1 and p["kernel"] % 2 == 1, where,
                   f"kernel must be an odd integer >= 1, got {p['kernel']!r}")
        if "dilation" in p:
            d = p["dilation"]
            _check(_is_int(d) and d >= 1, where, f"dilation must be an integer >= 1, got {d!r}")
            _check(2 * d - 1 <= p["kernel"], where,
                   f"dilation {d} is too large for kernel {p['kernel']}: need 2*dilation-1 <= kernel")
        if "heads" in p:
            h = p["heads"]
            _check(_is_int(h) and h >= 1, where, f"heads must be an integer >= 1, got {h!r}")
            _check(width % h == 0, where, f"width {width} is not divisible by {h} heads")
        if self.type == "lka":
            dilated = -(-p["kernel"] // p["dilation"])
            _check(dilated % 2 == 1, where, f"kernel {p['kernel']} with dilation {p['dilation']} needs a dilated "
                   f"kernel of {dilated}, which is even; pick kernel and dilation with ceil(kernel/dilation) odd")
        if self.type == "pelk":
            c = p["center"]
            _check(_is_int(c) and c >= 1 and c % 2 == 1 and c <= p["kernel"], where,
                   f"center must be an odd integer between 1 and kernel {p['kernel']}, got {c!r}")
            _check(0 < p["conv_ratio"] <= 1 and int(width * p["conv_ratio"]) >= 1, where,
                   f"conv_ratio {p['conv_ratio']} leaves no channel of width {width} for the conv")
        if self.type == "sam":
            h = p["heads"]
            _check(_is_int(p["expand_ratio"]) and p["expand_ratio"] >= 1, where,
                   f"expand_ratio must be an integer >= 1, got {p['expand_ratio']!r}")
            _check(3 + 2 * (h - 1) <= 15, where, f"{h} heads give kernels up to {3 + 2 * (h - 1)}; use at most 7 heads")
        if self.type == "msa":
            _check(p["mlp"] in MLP_KINDS, where, f"mlp must be one of {MLP_KINDS}, got {p['mlp']!r}")
            for key in ("rel_pos", "v_conv", "qkv_bias"):
                _check(isinstance(p[key], bool), where, f"{key} must be true or false, got {p[key]!r}")
        if self.type == "mbconv":
            _check(p["se_ratio"] < 1, where, f"se_ratio must be in [0, 1), got {p['se_ratio']!r}")
        for key, low in (("experts", 1), ("num_kernels", 1), ("ratio", 2), ("pooling", 1), ("radix", 1),
                         ("cardinality", 1), ("reduction", 1), ("group_channels", 1)):
            if key in p:
                _check(_is_int(p[key]) and p[key] >= low, where, f"{key} must be an integer >= {low}, got {p[key]!r}")
        if "dw_kernel" in p:
            _check(_is_int(p["dw_kernel"]) and p["dw_kernel"] >= 1 and p["dw_kernel"] % 2 == 1, where,
                   f"dw_kernel must be an odd integer >= 1, got {p['dw_kernel']!r}")
        if "temperature" in p:
            _check(_is_number(p["temperature"]) and p["temperature"] > 0, where,
                   f"temperature must be a number > 0, got {p['temperature']!r}")
        if "d_mul" in p:
            need = p["kernel"] ** 2
            _check(_is_int(p["d_mul"]) and p["d_mul"] >= need, where,
                   f"d_mul must be an integer >= kernel*kernel = {need}, got {p['d_mul']!r}")


@dataclass(frozen=True)
class StemSpec:
    """The stem: how the image becomes the first feature map (stride 4, or 2 for 'deep')."""

    type: str = "patch"
    width: int | None = None  # None: the first stage's width (required for a stride-2 stem)
    kernel: int = 4
    norm: str = "ln"

    @property
    def stride(self) -> int:
        return STEM_TYPES[self.type]

    def validate(self) -> None:
        _check(self.type in STEM_TYPES, "stem", f"unknown type {self.type!r}; choose one of {', '.join(STEM_TYPES)}")
        _check(self.width is None or (_is_int(self.width) and self.width >= 1), "stem",
               f"width must be null or an integer >= 1, got {self.width!r}")
        _check(self.width is not None or self.stride == 4, "stem",
               f"a {self.type!r} stem needs a width (its first stage downsamples from it)")
        _check(_is_int(self.kernel) and self.kernel >= 1, "stem",
               f"kernel must be an integer >= 1, got {self.kernel!r}")
        _check(self.norm in NORMS, "stem", f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.type == "patch":
            _check(self.kernel == 4, "stem", "a 'patch' stem has kernel 4 (4x4, stride 4)")
        if self.type in ("overlap", "conv2", "deep"):
            _check(self.kernel % 2 == 1, "stem", f"a {self.type!r} stem needs an odd kernel, got {self.kernel}")


@dataclass(frozen=True)
class StageSpec:
    """One stage: its downsampling, then `depth` blocks cycling through the `blocks` pattern."""

    depth: int
    width: int
    blocks: tuple[BlockSpec, ...]
    downsample: str = "patch"
    down_norm: str = "ln"
    norm_out: bool = False  # a LayerNorm closing the stage (VAN, SMT)

    @property
    def stride(self) -> int:
        return DOWNSAMPLE_TYPES[self.downsample]

    def block(self, index: int) -> BlockSpec:
        """The spec of block `index` of this stage (the pattern repeats)."""
        return self.blocks[index % len(self.blocks)]

    @property
    def layout(self) -> str:
        """The stage's code in a layout string: 'C', 'M', or 'SM' for a SAM/MSA alternation."""
        return "".join(b.code for b in self.blocks)

    def validate(self, where: str, width_mult: float) -> None:
        _check(_is_int(self.depth) and self.depth >= 1, where, f"depth must be an integer >= 1, got {self.depth!r}")
        _check(_is_int(self.width) and self.width >= 1, where, f"width must be an integer >= 1, got {self.width!r}")
        _check(isinstance(self.blocks, tuple) and len(self.blocks) >= 1
               and all(isinstance(b, BlockSpec) for b in self.blocks), where,
               "blocks must be a non-empty list of block specs")
        _check(self.downsample in DOWNSAMPLE_TYPES, where,
               f"unknown downsample {self.downsample!r}; choose one of {', '.join(DOWNSAMPLE_TYPES)}")
        _check(self.down_norm in NORMS, where, f"down_norm must be one of {NORMS}, got {self.down_norm!r}")
        _check(isinstance(self.norm_out, bool), where, f"norm_out must be true or false, got {self.norm_out!r}")
        width = int(self.width * width_mult)
        _check(width >= 1, where, f"width {self.width} x width_mult {width_mult} leaves no channel")
        for i, block in enumerate(self.blocks):
            block.validate(f"{where} block {i}", width)
        pelk = {(b.kernel, int(width * b.conv_ratio)) for b in self.blocks if b.type == "pelk"}
        _check(len(pelk) <= 1, where, "the PeLK blocks of a stage share one positional embedding: "
               "give them the same kernel and conv_ratio")
        if self.downsample == "block":
            _check(self.blocks[0].type in STRIDING_BLOCKS, where,
                   f"downsample 'block' needs a first block that can stride (mbconv or msa), not {self.blocks[0].type}")


@dataclass(frozen=True)
class HeadSpec:
    """The classifier head: global average pool, optional LayerNorm and pre-logits layer, linear."""

    norm: bool = True
    hidden: int | None = None  # a Linear + tanh pre-logits layer of this size (timm's CoAtNet)

    def validate(self) -> None:
        _check(isinstance(self.norm, bool), "head", f"norm must be true or false, got {self.norm!r}")
        _check(self.hidden is None or (_is_int(self.hidden) and self.hidden >= 1), "head",
               f"hidden must be null or an integer >= 1, got {self.hidden!r}")


@dataclass(frozen=True)
class ArchSpec:
    """A whole backbone: stem, exactly four stages (strides 4, 8, 16, 32), head.

    `width_mult` scales every stage width (int(width * width_mult), as SLaK widens ConvNeXt by 1.3);
    `sparsity` is the fraction of conv/linear weights held at zero by a fixed mask (SLaK, PeLK).
    """

    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec = HeadSpec()
    width_mult: float = 1.0
    sparsity: float = 0.0
    drop_path_rate: float = 0.0
    name: str = ""

    def widths(self) -> list[int]:
        """The effective stage widths after the width multiplier."""
        return [int(s.width * self.width_mult) for s in self.stages]

    def stem_width(self) -> int:
        """The stem's output width: its own (times width_mult) or the first stage's."""
        if self.stem.width is None:
            return self.widths()[0]
        return max(1, int(self.stem.width * self.width_mult))

    @property
    def layout(self) -> str:
        """A layout string such as 'C-C-M-M' (CoAtNet) or 'S-S-SM-M' (SMT)."""
        return "-".join(s.layout for s in self.stages)

    def validate(self) -> ArchSpec:
        """Check every field; raise SpecError naming the first problem. Returns self."""
        _check(isinstance(self.stem, StemSpec), "stem", "must be a stem spec")
        self.stem.validate()
        got = len(self.stages) if isinstance(self.stages, tuple) else repr(self.stages)
        _check(isinstance(self.stages, tuple) and len(self.stages) == 4, "stages",
               f"need exactly 4 stages (strides 4, 8, 16, 32), got {got}")
        _check(_is_number(self.width_mult) and self.width_mult > 0, "width_mult",
               f"must be a number > 0, got {self.width_mult!r}")
        _check(_is_number(self.sparsity) and 0 <= self.sparsity < 1, "sparsity",
               f"must be in [0, 1), got {self.sparsity!r}")
        _check(_is_number(self.drop_path_rate) and 0 <= self.drop_path_rate < 1, "drop_path_rate",
               f"must be in [0, 1), got {self.drop_path_rate!r}")
        stride = self.stem.stride
        for i, stage in enumerate(self.stages):
            where = f"stage {i + 1}"
            _check(isinstance(stage, StageSpec), where, "must be a stage spec")
            stage.validate(where, self.width_mult)
            stride *= stage.stride
            _check(stride == 4 * 2 ** i, where,
                   f"downsample {stage.downsample!r} puts this stage at stride {stride}, it must be at {4 * 2 ** i}"
                   + (" (use downsample 'none' after a stride-4 stem)" if i == 0 else ""))
        if self.stages[0].downsample == "none":
            _check(self.stem_width() == self.widths()[0], "stem",
                   f"width {self.stem.width} must match stage 1 width {self.stages[0].width} when stage 1 does not "
                   "downsample (or leave the stem width null)")
        self.head.validate()
        return self

    # --- plain data -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings) that json.dumps accepts."""
        data = asdict(self)
        data["stages"] = list(data["stages"])
        for stage in data["stages"]:
            stage["blocks"] = [dict(type=b["type"], **b["params"]) for b in stage["blocks"]]
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        """Build and validate a spec from plain data (as written by :meth:`to_dict`)."""
        if not isinstance(data, dict):
            raise SpecError(f"spec: expected a JSON object, got {type(data).__name__}")
        _known(data, cls, "spec")
        try:
            stem = StemSpec(**_known(data.get("stem", {}), StemSpec, "stem"))
            stages = []
            for i, raw in enumerate(data.get("stages", [])):
                raw = dict(_known(raw, StageSpec, f"stage {i + 1}"))
                blocks = raw.pop("blocks", None)
                if not isinstance(blocks, list) or not blocks:
                    raise SpecError(f"stage {i + 1}: blocks must be a non-empty list")
                parsed = []
                for j, b in enumerate(blocks):
                    if not isinstance(b, dict) or "type" not in b:
                        raise SpecError(f"stage {i + 1} block {j}: needs a 'type'; "
                                        f"choose one of {', '.join(BLOCK_TYPES)}")
                    b = dict(b)
                    parsed.append(BlockSpec(b.pop("type"), b))
                stages.append(StageSpec(blocks=tuple(parsed), **raw))
            head = HeadSpec(**_known(data.get("head", {}), HeadSpec, "head"))
            rest = {k: v for k, v in data.items() if k not in ("stem", "stages", "head")}
            spec = cls(stem=stem, stages=tuple(stages), head=head, **rest)
        except TypeError as err:  # a missing required field
            raise SpecError(f"spec: {err}") from None
        return spec.validate()

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"spec: not valid JSON ({err})") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> ArchSpec:
        return replace(self, **changes)


def _known(data: Any, cls: type, where: str) -> dict[str, Any]:
    """Reject keys a dataclass does not have, naming the allowed ones."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__}")
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return data
