"""The published architectures, as points of the search space, with the numbers they must reproduce.

FLOPs are G multiply-accumulates at 1x3x224x224 with 1000 classes, counting convolutions, linear
layers and the attention matmuls (the convention of `nas.count`). "reference" is the official code
(or timm) counted that way; "published" is the paper's table. PeLK has no public code: its paper's
figures count only the nonzero weights of its 40%-sparse layers, so they are compared with our
nonzero counts.
"""
from __future__ import annotations

from typing import Any

from .spec import ArchSpec, BlockSpec, HeadSpec, StageSpec, StemSpec

__all__ = ["SEEDS", "REFERENCES", "van", "smt", "coatnet", "pelk"]


def van(name: str, widths: tuple[int, ...], depths: tuple[int, ...], mlp_ratios: tuple[float, ...]) -> ArchSpec:
    """VAN (Guo et al. 2022): 7x7 stride-4 stem, 3x3 stride-2 downsampling, LKA 21/3, BN in the blocks,
    a LayerNorm closing each stage."""
    stages = tuple(
        StageSpec(depth=d, width=w, blocks=(BlockSpec("lka", {"kernel": 21, "dilation": 3, "mlp_ratio": float(r)}),),
                  downsample="none" if i == 0 else "overlap", down_norm="ln" if i == 0 else "bn", norm_out=True)
        for i, (w, d, r) in enumerate(zip(widths, depths, mlp_ratios)))
    return ArchSpec(StemSpec("overlap", kernel=7, norm="bn"), stages, HeadSpec(norm=False), name=name)


def smt(name: str, depths: tuple[int, ...], stem_kernel: int = 3, mlp_ratios: tuple[float, ...] = (4, 4, 4, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512)) -> ArchSpec:
    """SMT (Lin et al. 2023): SAM in stages 1-2, SAM/MSA alternating in stage 3, MSA in stage 4."""
    def sam(ratio: float) -> BlockSpec:
        return BlockSpec("sam", {"heads": 4, "expand_ratio": 2, "mlp_ratio": float(ratio)})

    def msa(heads: int, ratio: float) -> BlockSpec:
        return BlockSpec("msa", {"heads": heads, "mlp_ratio": float(ratio), "v_conv": True, "mlp": "conv"})

    r = mlp_ratios
    patterns = ((sam(r[0]),), (sam(r[1]),), (sam(r[2]), msa(8, r[2])), (msa(16, r[3]),))
    stages = tuple(
        StageSpec(depth=d, width=w, blocks=p, downsample="none" if i == 0 else "overlap", down_norm="ln",
                  norm_out=True)
        for i, (w, d, p) in enumerate(zip(widths, depths, patterns)))
    return ArchSpec(StemSpec("conv2", kernel=stem_kernel, norm="ln"), stages, HeadSpec(norm=False), name=name)


def coatnet(name: str, widths: tuple[int, ...], depths: tuple[int, ...], stem_width: int) -> ArchSpec:
    """CoAtNet (Dai et al. 2021), C-C-T-T, as timm's coatnet_N_224 with the paper's 1x1 stride mode;
    keeps timm's Linear+tanh pre-logits layer so that parameter counts compare with timm exactly."""
    mbconv = BlockSpec("mbconv", {"kernel": 3, "expand_ratio": 4.0, "se_ratio": 0.25})
    stages = tuple(
        StageSpec(depth=d, width=w, downsample="block",
                  blocks=(mbconv,) if i < 2 else (BlockSpec("msa", {"heads": w // 32, "rel_pos": True}),))
        for i, (w, d) in enumerate(zip(widths, depths)))
    return ArchSpec(StemSpec("deep", width=stem_width, kernel=3, norm="bn"), stages,
                    HeadSpec(norm=True, hidden=widths[-1]), name=name)


def pelk(name: str, widths: tuple[int, ...], depths: tuple[int, ...],
         kernels: tuple[int, ...] = (51, 49, 47, 13), center: int = 5) -> ArchSpec:
    """PeLK (Chen et al. 2024): ConvNeXt/SLaK layout, partial peripheral convs, SLaK's 1.3x width and
    40% sparsity."""
    stages = tuple(
        StageSpec(depth=d, width=w, downsample="none" if i == 0 else "patch", down_norm="ln",
                  blocks=(BlockSpec("pelk", {"kernel": k, "center": center, "conv_ratio": 0.375}),))
        for i, (w, d, k) in enumerate(zip(widths, depths, kernels)))
    return ArchSpec(StemSpec("patch", kernel=4, norm="ln"), stages, HeadSpec(norm=True),
                    width_mult=1.3, sparsity=0.4, name=name)


_VAN = (32, 64, 160, 256), (64, 128, 320, 512)
SEEDS: dict[str, ArchSpec] = {
    "van_b0": van("van_b0", _VAN[0], (3, 3, 5, 2), (8, 8, 4, 4)),
    "van_b1": van("van_b1", _VAN[1], (2, 2, 4, 2), (8, 8, 4, 4)),
    "van_b2": van("van_b2", _VAN[1], (3, 3, 12, 3), (8, 8, 4, 4)),
    "van_b3": van("van_b3", _VAN[1], (3, 5, 27, 3), (8, 8, 4, 4)),
    "pelk_t": pelk("pelk_t", (96, 192, 384, 768), (3, 3, 9, 3)),
    "pelk_s": pelk("pelk_s", (96, 192, 384, 768), (3, 3, 27, 3)),
    "pelk_b": pelk("pelk_b", (128, 256, 512, 1024), (3, 3, 27, 3)),
    "coatnet_0": coatnet("coatnet_0", (96, 192, 384, 768), (2, 3, 5, 2), 64),
    "coatnet_1": coatnet("coatnet_1", (96, 192, 384, 768), (2, 6, 14, 2), 64),
    "coatnet_2": coatnet("coatnet_2", (128, 256, 512, 1024), (2, 6, 14, 2), 128),
    "smt_t": smt("smt_t", (2, 2, 8, 1)),
    "smt_s": smt("smt_s", (3, 4, 18, 2)),
    "smt_b": smt("smt_b", (4, 6, 28, 2), stem_kernel=7, mlp_ratios=(8, 6, 4, 2)),
}

# Published figures (params in millions, GMACs) and the official code measured at 224 (exact params).
REFERENCES: dict[str, dict[str, Any]] = {
    "van_b0": dict(published=(4.1, 0.9), reference=(4_105_800, 0.864), source="official VAN code"),
    "van_b1": dict(published=(13.9, 2.5), reference=(13_861_800, 2.495), source="official VAN code"),
    "van_b2": dict(published=(26.6, 5.0), reference=(26_578_472, 4.993), source="official VAN code"),
    "van_b3": dict(published=(44.8, 9.0), reference=(44_765_608, 8.925), source="official VAN code"),
    "pelk_t": dict(published=(29.0, 5.6), reference=None, source="PeLK paper, Table 4 (nonzero counts)"),
    "pelk_s": dict(published=(50.0, 10.7), reference=None, source="PeLK paper, Table 4 (nonzero counts)"),
    "pelk_b": dict(published=(89.0, 18.3), reference=None, source="PeLK paper, Table 4 (nonzero counts)"),
    "coatnet_0": dict(published=(25.0, 4.2), reference=(25_036_820, 4.142), source="timm coatnet_0_224, 1x1 stride"),
    "coatnet_1": dict(published=(42.0, 8.4), reference=(42_225_776, 8.239), source="timm coatnet_1_224, 1x1 stride"),
    "coatnet_2": dict(published=(75.0, 15.7), reference=(74_684_744, 15.502), source="timm coatnet_2_224, 1x1 stride"),
    "smt_t": dict(published=(11.5, 2.4), reference=(11_506_536, 2.461), source="official SMT code"),
    "smt_s": dict(published=(20.5, 4.7), reference=(22_550_952, 4.839), source="official SMT code"),
    "smt_b": dict(published=(32.0, 7.7), reference=(32_037_352, 7.966), source="official SMT code"),
}
