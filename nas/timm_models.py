"""HybridNet as timm models: `timm.create_model('hybridnas', spec=...)`, one name per seed
(`hybridnas_van_b2`, ...), and `timm.create_model('local-dir:PATH')` for exported searches.

Registered once both `nas` and `timm` are imported (see `nas/__init__.py`). The `hybridnas_` prefix
keeps every name clear of timm's own.
"""
from __future__ import annotations

import sys
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from search_spaces import SEEDS
from search_spaces.spec import ArchSpec

from .model import HybridNet

__all__ = ["create_hybridnas", "MODEL_PREFIX"]

MODEL_PREFIX = "hybridnas"


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.9,
            "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "stem.0", "classifier": "head.fc", "license": "apache-2.0", **kwargs}


default_cfgs = generate_default_cfgs({
    f"{MODEL_PREFIX}.untrained": _cfg(),
    **{f"{MODEL_PREFIX}_{name}.untrained": _cfg() for name in SEEDS},
})


def create_hybridnas(variant: str, spec: ArchSpec | dict[str, Any] | str, pretrained: bool = False,
                     **kwargs: Any) -> HybridNet:
    """Build through timm's builder: pretrained weights, features_only, num_classes, pretrained_cfg."""
    if isinstance(spec, str):
        spec = ArchSpec.from_json(spec)
    elif isinstance(spec, dict):
        spec = ArchSpec.from_dict(spec)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    model = build_model_with_cfg(HybridNet, variant, pretrained, spec=spec,
                                 feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True), **kwargs)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


@register_model
def hybridnas(pretrained: bool = False, spec: ArchSpec | dict[str, Any] | str | None = None,
              **kwargs: Any) -> HybridNet:
    """Any architecture of the space: pass its spec (an ArchSpec, its dict, or its JSON)."""
    if spec is None:
        raise ValueError("hybridnas needs spec=...: an architecture spec (dict or JSON), e.g. from a run's "
                         "pareto.json, or use an exported folder with timm.create_model('local-dir:PATH')")
    return create_hybridnas(MODEL_PREFIX, spec, pretrained, **kwargs)


def _register_seed(name: str) -> None:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> HybridNet:
        return create_hybridnas(f"{MODEL_PREFIX}_{name}", SEEDS[name], pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = f"{MODEL_PREFIX}_{name}"
    entrypoint.__doc__ = f"The seed architecture {name} ({SEEDS[name].layout})."
    entrypoint.__module__ = __name__
    setattr(sys.modules[__name__], entrypoint.__name__, entrypoint)
    register_model(entrypoint)


for _name in SEEDS:
    _register_seed(_name)
