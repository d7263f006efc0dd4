"""Found architectures out of a run, as folders timm (and the Hugging Face hub layout) understand.

Each folder holds `config.json` (architecture, model_args with the spec, pretrained_cfg with the
search's numbers), `model.safetensors` and a short model card. `timm.create_model('local-dir:DIR')`
rebuilds the model offline once `nas` is imported.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file

from search_spaces.spec import ArchSpec

from .timm_models import MODEL_PREFIX, create_hybridnas

__all__ = ["ExportError", "export_model", "export_run", "select_trials"]

_logger = logging.getLogger(__name__)


class ExportError(ValueError):
    """A run or trial that cannot be exported; the message says what to do."""


def export_model(spec: ArchSpec, out_dir: Path, numbers: dict[str, Any] | None = None, init_seed: int = 0,
                 title: str = "") -> Path:
    """Write one architecture (full size, seeded initialisation) to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(init_seed)
    model = create_hybridnas(MODEL_PREFIX, spec).eval()
    pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in ("file", "source", "tag")}
    # timm's PretrainedCfg has no free-form fields: the numbers go in as notes, and whole under "search"
    notes = [f"{k}={v}" for k, v in (numbers or {}).items()] + [f"weights=seeded init (torch seed {init_seed})"]
    pretrained_cfg.update(architecture=MODEL_PREFIX, notes=notes,
                          description=f"hybrid-nas architecture, layout {spec.layout}")
    config = dict(architecture=MODEL_PREFIX, num_classes=model.num_classes, num_features=model.num_features,
                  model_args=dict(spec=spec.to_dict()), pretrained_cfg=pretrained_cfg, search=numbers or {})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=list))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    (out_dir / "README.md").write_text(_model_card(spec, numbers or {}, init_seed, title or out_dir.name))
    return out_dir


def _model_card(spec: ArchSpec, numbers: dict[str, Any], init_seed: int, title: str) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in numbers.items() if k != "spec")
    return f"""# {title}

A backbone found by hybrid-nas: layout `{spec.layout}` (stages: {', '.join(str(s.depth) + 'x' + s.layout
                                                                           for s in spec.stages)}).

| search result | value |
|---|---|
{rows}

FLOPs are multiply-accumulates at 224x224 with 1000 classes; accuracy is the search's proxy top-1
(small images, narrower and shallower proxy), useful for ranking only.

**Weights**: a seeded initialisation (torch seed {init_seed}) of the full-size model, not trained:
the search trains proxies, not this model. Train it at full scale before use.

```python
import nas, timm  # importing nas registers the architecture with timm
model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True, num_classes=1000)
backbone = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", features_only=True, out_indices=(0, 1, 2, 3))
```
"""


def select_trials(run_dir: Path, top: int | None = None, trials: list[int] | None = None) -> pd.DataFrame:
    """Rows of trials.csv to export: the given trial numbers, or the front's `top` by accuracy."""
    table = run_dir / "trials.csv"
    if not table.is_file():
        raise ExportError(f"{run_dir}: no trials.csv; give the directory of a search run (runs/NAME)")
    frame = pd.read_csv(table, keep_default_na=False, na_values=[""])
    if trials:
        chosen = frame[frame.number.isin(trials)]
        missing = sorted(set(trials) - set(chosen.number))
        if missing:
            raise ExportError(f"{run_dir}: no trial {missing[0]} in trials.csv; pick numbers from its 'number' column")
        return chosen
    front_file = run_dir / "pareto.json"
    front = json.loads(front_file.read_text()) if front_file.is_file() else []
    if not front:
        raise ExportError(f"{run_dir}: the Pareto front is empty (no completed trial yet); wait or pass --trial N")
    numbers = [r["number"] for r in sorted(front, key=lambda r: -r["accuracy"])][:top or len(front)]
    return frame[frame.number.isin(numbers)].set_index("number").loc[numbers].reset_index()


def export_run(run_dir: Path, top: int | None = 3, trials: list[int] | None = None,
               out: Path | None = None) -> list[Path]:
    """Export trials of a run (default: the 3 most accurate on the front) to `out` (run_dir/exports)."""
    chosen = select_trials(run_dir, top, trials)
    out = out or run_dir / "exports"
    paths = []
    for row in chosen.itertuples():
        spec = ArchSpec.from_json(row.spec)
        name = f"trial{row.number:04d}" + (f"-{row.seed}" if isinstance(row.seed, str) and row.seed else "")
        numbers = dict(trial=int(row.number), seed=row.seed if isinstance(row.seed, str) else "", layout=row.layout,
                       params=int(row.params), flops=int(row.flops), latency_ms=_num(row.latency_ms),
                       proxy_accuracy=_num(row.accuracy), state=row.state, run=str(run_dir))
        paths.append(export_model(spec, out / name, numbers, title=f"{MODEL_PREFIX} {name}"))
        _logger.info("exported trial %d (%s) to %s", row.number, row.layout, paths[-1])
    return paths


def _num(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)
