"""Found architectures out of a run, as folders timm (and the Hugging Face hub layout) understand.

Each folder holds `config.json` (architecture, model_args with the spec, pretrained_cfg with the
search's numbers), `model.safetensors` and a short model card. `timm.create_model('local-dir:DIR')`
rebuilds the model offline once `nas` is imported. `record_training` turns such a folder into a trained
model (`nas.training`): weights, classes, input size and normalisation, and the training's numbers.
"""
from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file

from search_spaces.spec import ArchSpec

from .timm_models import MODEL_PREFIX, create_hybridnas

__all__ = ["ExportError", "export_model", "export_run", "export_trial", "select_trials", "record_training",
           "write_model_card"]

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
                  model_args=dict(spec=spec.to_dict()), pretrained_cfg=pretrained_cfg, search=numbers or {},
                  export=dict(title=title or out_dir.name, init_seed=init_seed))
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=list))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    write_model_card(out_dir)
    return out_dir


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file and os.replace: a kill leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def record_training(out_dir: Path, state_dict: dict[str, torch.Tensor], *, num_classes: int, img_size: int,
                    mean: tuple[float, ...], std: tuple[float, ...], training: dict[str, Any],
                    label_names: tuple[str, ...] | None = None, interpolation: str = "bilinear",
                    crop_pct: float = 1.0) -> None:
    """Make an exported folder the trained model: its weights, its classes (so that
    `timm.create_model("local-dir:DIR", pretrained=True)` builds the trained head), the training's input
    size and normalisation in pretrained_cfg (what `timm.data.resolve_data_config` hands to a transform),
    the training's numbers under "training" and in the model card."""
    config = json.loads((out_dir / "config.json").read_text())
    _atomic_write(out_dir / "model.safetensors", lambda tmp: save_file(
        {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}, str(tmp)))
    cfg = config["pretrained_cfg"]
    cfg.update(num_classes=num_classes, input_size=[3, img_size, img_size], mean=list(mean), std=list(std),
               interpolation=interpolation, crop_pct=crop_pct)
    cfg.pop("pool_size", None)  # a 224 figure; at another size it would mislead
    notes = [n for n in cfg.get("notes", []) if not n.startswith("weights=")]
    epochs = f"{training['epochs']} epoch" + ("s" if training["epochs"] != 1 else "")
    cfg["notes"] = notes + [f"weights=trained on {training['dataset']} ({epochs}, top-1 {training['top1']:.2f}%)"]
    config["num_classes"] = num_classes
    if label_names:
        config["label_names"] = list(label_names)
    config["training"] = training
    _atomic_write(out_dir / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=2, default=list)))
    write_model_card(out_dir)


def write_model_card(out_dir: Path) -> Path:
    """(Re)write README.md from config.json: the architecture, the training if any, the search's numbers."""
    config = json.loads((out_dir / "config.json").read_text())
    spec = ArchSpec.from_dict(config["model_args"]["spec"])
    meta = config.get("export", {})
    card = _model_card(spec, config.get("search", {}), meta.get("init_seed", 0), meta.get("title", out_dir.name),
                       config.get("training"), config["pretrained_cfg"])
    _atomic_write(out_dir / "README.md", lambda tmp: tmp.write_text(card))
    return out_dir / "README.md"


def _training_section(t: dict[str, Any], cfg: dict[str, Any]) -> str:
    if t.get("weights") == "ema":
        which = "the exponential moving average (EMA) of the weights, which scored higher than the weights themselves"
    elif t.get("model_ema"):
        which = "the weights at the end of training (their EMA scored lower)"
    else:
        which = "the weights at the end of training"
    untrained = f" (untrained: {t['top1_untrained']:.2f}%)" if t.get("top1_untrained") is not None else ""
    mean = ", ".join(f"{v:.4f}" for v in cfg.get("mean", ()))
    std = ", ".join(f"{v:.4f}" for v in cfg.get("std", ()))
    pixels = {"fashion-mnist": "grey pixels scaled to [0, 1] and copied to three channels",
              "synthetic": "the generated images"}.get(t["dataset"], "RGB pixels scaled to [0, 1]")
    epochs = f"{t['epochs']} epoch" + ("s" if t["epochs"] != 1 else "")
    settings = ", ".join(f"{k} {v}" for k, v in t.get("hparams", {}).items())
    first = (f"Trained on **{t['dataset']}** ({t['train_images']:,} training images, {t['num_classes']} classes) for "
             f"{epochs} at {t['img_size']}x{t['img_size']} px on {t['date']}, in {t['duration_s'] / 60:.1f} min on "
             f"{t['device']}.")
    compared = "; the two were compared on these held-out images" if t.get("model_ema") else ""
    weights = (f"The weights are {which}{compared}. Inputs: {t['img_size']}x{t['img_size']}, {pixels}, normalised "
               f"with the training images' mean ({mean}) and std ({std}); "
               "`timm.data.resolve_data_config(model=model)` returns them.")
    return f"""## Training

{textwrap.fill(first, 110)}

| held-out images: {t['eval_images']:,} ({t['eval_split']}) | accuracy |
|---|---|
| top-1 | {t['top1']:.2f}%{untrained} |
| top-5 | {t['top5']:.2f}% |

{textwrap.fill(weights, 110)}

{textwrap.fill(f"Settings: {settings}.", 110)}

"""


def _model_card(spec: ArchSpec, numbers: dict[str, Any], init_seed: int, title: str,
                training: dict[str, Any] | None = None, pretrained_cfg: dict[str, Any] | None = None) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in numbers.items() if k != "spec")
    search = f"""| search result | value |
|---|---|
{rows}

FLOPs are multiply-accumulates at 224x224 with 1000 classes; accuracy is the search's proxy top-1
(small images, narrower and shallower proxy), useful for ranking only.

""" if rows else ""
    if training:
        weights = ""
        classes = training["num_classes"]
        trained = _training_section(training, pretrained_cfg or {})
    else:
        weights = f"""**Weights**: a seeded initialisation (torch seed {init_seed}) of the full-size model, not trained:
the search trains proxies, not this model. Train it at full scale before use (`scripts/train.py`).

"""
        classes, trained = 1000, ""
    return f"""# {title}

A backbone found by hybrid-nas: layout `{spec.layout}` (stages: {', '.join(str(s.depth) + 'x' + s.layout
                                                                           for s in spec.stages)}).

{trained}{search}{weights}```python
import nas, timm  # importing nas registers the architecture with timm
model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True)  # {classes} classes
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


def trial_folder_name(row: Any) -> str:
    """trialNNNN[-seed]: the folder a trial of trials.csv is exported to."""
    return f"trial{row.number:04d}" + (f"-{row.seed}" if isinstance(row.seed, str) and row.seed else "")


def _export_row(row: Any, run_dir: Path, out_dir: Path) -> Path:
    spec = ArchSpec.from_json(row.spec)
    numbers = dict(trial=int(row.number), seed=row.seed if isinstance(row.seed, str) else "", layout=row.layout,
                   params=int(row.params), flops=int(row.flops), latency_ms=_num(row.latency_ms),
                   proxy_accuracy=_num(row.accuracy), state=row.state, run=str(run_dir))
    path = export_model(spec, out_dir, numbers, title=f"{MODEL_PREFIX} {trial_folder_name(row)}")
    _logger.info("exported trial %d (%s) to %s", row.number, row.layout, path)
    return path


def export_run(run_dir: Path, top: int | None = 3, trials: list[int] | None = None,
               out: Path | None = None) -> list[Path]:
    """Export trials of a run (default: the 3 most accurate on the front) to `out` (run_dir/exports)."""
    chosen = select_trials(run_dir, top, trials)
    out = out or run_dir / "exports"
    return [_export_row(row, run_dir, out / trial_folder_name(row)) for row in chosen.itertuples()]


def export_trial(run_dir: Path, number: int, out_dir: Path | None = None) -> Path:
    """Export one trial of a run to `out_dir` itself (default run_dir/exports/trialNNNN[-seed])."""
    row = next(select_trials(run_dir, trials=[number]).itertuples())
    return _export_row(row, run_dir, out_dir or run_dir / "exports" / trial_folder_name(row))


def _num(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)
