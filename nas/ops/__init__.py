"""Operator and block modules, one file per family.

Their counting rules live in :mod:`nas.counting`, next to nothing that needs torch, so that counting
(`nas.count`) and budgets (`nas.budget`) cost no torch import; `BLOCKS` pairs each block's module
class with its rule.
"""
from ..counting import BLOCK_COUNTS, Count
from .attention import MsaBlock, MultiHeadSelfAttention, RelPosBias
from .conv import ConvNeXtBlock, MbConvBlock
from .doconv import DOConv2d, DOConvBlock
from .dynamic import CondConv2d, CondConvBlock, DynamicConv2d, DynamicConvBlock
from .ghost import GhostBottleneck, GhostModule
from .involution import Involution2d, InvolutionBlock
from .lka import LargeKernelAttention, VanBlock
from .pelk import PelkBlock, PeripheralConv, peripheral_half_grid, peripheral_index
from .resnest import ResNeStBlock, SplitAttention
from .scconv import SCConvBlock, SelfCalibratedConv
from .smt import SamBlock, ScaleAwareModulation

_MODULES = {
    "convnext": ConvNeXtBlock,
    "mbconv": MbConvBlock,
    "lka": VanBlock,
    "pelk": PelkBlock,
    "sam": SamBlock,
    "msa": MsaBlock,
    "condconv": CondConvBlock,
    "dynconv": DynamicConvBlock,
    "ghost": GhostBottleneck,
    "scconv": SCConvBlock,
    "doconv": DOConvBlock,
    "resnest": ResNeStBlock,
    "involution": InvolutionBlock,
}

# block type -> (module class, counting function); the keys are search_spaces.BLOCK_TYPES.
BLOCKS = {block: (module, BLOCK_COUNTS[block]) for block, module in _MODULES.items()}

__all__ = [
    "BLOCKS", "Count", "ConvNeXtBlock", "MbConvBlock", "VanBlock", "LargeKernelAttention", "PelkBlock",
    "PeripheralConv", "SamBlock", "ScaleAwareModulation", "MsaBlock", "MultiHeadSelfAttention", "RelPosBias",
    "peripheral_half_grid", "peripheral_index",
    "CondConv2d", "CondConvBlock", "DynamicConv2d", "DynamicConvBlock", "GhostModule", "GhostBottleneck",
    "SelfCalibratedConv", "SCConvBlock", "DOConv2d", "DOConvBlock", "SplitAttention", "ResNeStBlock",
    "Involution2d", "InvolutionBlock",
]
