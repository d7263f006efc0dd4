"""WHAT can be built: the architecture spec, its block types, and the published seed architectures."""
from .seeds import REFERENCES, SEEDS
from .spec import (
    BLOCK_DEFAULTS,
    BLOCK_TYPES,
    DOWNSAMPLE_TYPES,
    LAYOUT_CODES,
    STEM_TYPES,
    ArchSpec,
    BlockSpec,
    HeadSpec,
    SpecError,
    StageSpec,
    StemSpec,
)

__all__ = [
    "ArchSpec", "BlockSpec", "StemSpec", "StageSpec", "HeadSpec", "SpecError", "SEEDS", "REFERENCES",
    "BLOCK_TYPES", "BLOCK_DEFAULTS", "LAYOUT_CODES", "STEM_TYPES", "DOWNSAMPLE_TYPES",
]
