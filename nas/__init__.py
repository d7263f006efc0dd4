"""HOW to build, count, search and export hybrid backbones.

`nas.count` needs no torch; `nas.build_model` and `nas.HybridNet` load on first use, so that importing
the package (and the command line, which lives in it) costs no torch, timm or Ray import.
The timm models (`hybridnas`, `hybridnas_<seed>`) are registered as soon as both `nas` and `timm` are
imported, in either order: `import nas, timm` is all `timm.create_model("hybridnas_van_b0")` needs.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any

from .count import ModelCount, count  # after the import `nas.count` names this function, not the module
from .latency import LatencyTable, predict_latency

__all__ = ["build_model", "count", "predict_latency", "LatencyTable", "HybridNet", "ModelCount", "timm_models"]

_LAZY = {"build_model": "model", "HybridNet": "model", "timm_models": "timm_models"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    return module if name == "timm_models" else getattr(module, name)


class _RegisterWithTimm(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs timm's own loader, then registers our models: `nas` need not import timm (4 s) itself."""

    def __init__(self) -> None:
        self._loader: importlib.abc.Loader | None = None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps find_spec below from finding us again
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # timm's own, for anything that reads it
        self._loader.exec_module(module)
        importlib.import_module(f"{__name__}.timm_models")


if "timm" in sys.modules:
    importlib.import_module(f"{__name__}.timm_models")
else:
    sys.meta_path.insert(0, _RegisterWithTimm())
