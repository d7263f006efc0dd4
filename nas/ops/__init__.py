"""Operator and block modules, one file per family, each with the counting rule of its blocks."""
from .attention import MsaBlock, MultiHeadSelfAttention, RelPosBias, count_msa
from .base import Count
from .conv import ConvNeXtBlock, MbConvBlock, count_convnext, count_mbconv
from .lka import LargeKernelAttention, VanBlock, count_lka
from .pelk import PelkBlock, PeripheralConv, count_pelk, peripheral_half_grid, peripheral_index
from .smt import SamBlock, ScaleAwareModulation, count_sam

# block type -> (module class, counting function); the keys are search_spaces.BLOCK_TYPES.
BLOCKS = {
    "convnext": (ConvNeXtBlock, count_convnext),
    "mbconv": (MbConvBlock, count_mbconv),
    "lka": (VanBlock, count_lka),
    "pelk": (PelkBlock, count_pelk),
    "sam": (SamBlock, count_sam),
    "msa": (MsaBlock, count_msa),
}

__all__ = [
    "BLOCKS", "Count", "ConvNeXtBlock", "MbConvBlock", "VanBlock", "LargeKernelAttention", "PelkBlock",
    "PeripheralConv", "SamBlock", "ScaleAwareModulation", "MsaBlock", "MultiHeadSelfAttention", "RelPosBias",
    "peripheral_half_grid", "peripheral_index",
]
