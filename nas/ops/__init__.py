"""Operator and block modules, one file per family, each with the counting rule of its blocks."""
from .attention import MsaBlock, MultiHeadSelfAttention, RelPosBias, count_msa
from .base import Count
from .conv import ConvNeXtBlock, MbConvBlock, count_convnext, count_mbconv
from .doconv import DOConv2d, DOConvBlock, count_doconv
from .dynamic import CondConv2d, CondConvBlock, DynamicConv2d, DynamicConvBlock, count_condconv, count_dynconv
from .ghost import GhostBottleneck, GhostModule, count_ghost
from .involution import Involution2d, InvolutionBlock, count_involution
from .lka import LargeKernelAttention, VanBlock, count_lka
from .pelk import PelkBlock, PeripheralConv, count_pelk, peripheral_half_grid, peripheral_index
from .resnest import ResNeStBlock, SplitAttention, count_resnest
from .scconv import SCConvBlock, SelfCalibratedConv, count_scconv
from .smt import SamBlock, ScaleAwareModulation, count_sam

# block type -> (module class, counting function); the keys are search_spaces.BLOCK_TYPES.
BLOCKS = {
    "convnext": (ConvNeXtBlock, count_convnext),
    "mbconv": (MbConvBlock, count_mbconv),
    "lka": (VanBlock, count_lka),
    "pelk": (PelkBlock, count_pelk),
    "sam": (SamBlock, count_sam),
    "msa": (MsaBlock, count_msa),
    "condconv": (CondConvBlock, count_condconv),
    "dynconv": (DynamicConvBlock, count_dynconv),
    "ghost": (GhostBottleneck, count_ghost),
    "scconv": (SCConvBlock, count_scconv),
    "doconv": (DOConvBlock, count_doconv),
    "resnest": (ResNeStBlock, count_resnest),
    "involution": (InvolutionBlock, count_involution),
}

__all__ = [
    "BLOCKS", "Count", "ConvNeXtBlock", "MbConvBlock", "VanBlock", "LargeKernelAttention", "PelkBlock",
    "PeripheralConv", "SamBlock", "ScaleAwareModulation", "MsaBlock", "MultiHeadSelfAttention", "RelPosBias",
    "peripheral_half_grid", "peripheral_index",
    "CondConv2d", "CondConvBlock", "DynamicConv2d", "DynamicConvBlock", "GhostModule", "GhostBottleneck",
    "SelfCalibratedConv", "SCConvBlock", "DOConv2d", "DOConvBlock", "SplitAttention", "ResNeStBlock",
    "Involution2d", "InvolutionBlock",
]
