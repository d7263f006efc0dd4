"""A search's settings: what `scripts/search.py` asks for, saved as the run's config.json.

Kept apart from `nas.search` (Optuna and Ray) so that the command line builds and checks it without
importing either: `--help` and bad input answer at once.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search_spaces import SEEDS
from trials.devices import DEVICES
from trials.fidelity import PROMOTION, PROXY, Fidelity
from trials.sources import DEFAULT_MIN_PER_CLASS

__all__ = ["SearchConfig", "DEFAULT_PROMOTE", "DEVICES", "gpu_share"]

LATENCY_TABLE = "latency_table.json"  # the run directory's copy of --latency-table
DEFAULT_PROMOTE = 2  # front members promoted after a search (--promote)
_PROXY_TRAIN, _PROXY_VAL = PROXY.default_sample("synthetic")  # the default dataset's


@dataclass
class SearchConfig:
    """What `scripts/search.py` asks for; defaults are the command's defaults, the proxy's from
    `trials.fidelity.PROXY`, except `promote`: 0 here (library callers, benchmarks and runs saved before
    promotions existed opt in), `DEFAULT_PROMOTE` on the command line. `promotion` is the promotions'
    fidelity as a dict (saved in config.json, so that a resumed run promotes as it started); None:
    `trials.fidelity.PROMOTION` made concrete for this proxy (`Fidelity.above`)."""

    budget_flops: float
    out: Path
    trials: int = 24
    workers: int = 2
    sampler: str = "tpe"
    seed: int = 0
    sampler_seed: int | None = None  # None: `seed`; set apart to vary the sampler alone (benchmarks)
    latency_budget_ms: float | None = None
    latency_device: str = "cpu"
    latency_threads: int = 1  # the same for every trial of a study, whatever --workers says
    latency_table: str | None = None  # predict latency from this table (copied into the run as LATENCY_TABLE)
    dataset: str = "synthetic"
    data_dir: str | None = None
    proxy_img_size: int = PROXY.img_size
    proxy_epochs: int = PROXY.epochs
    proxy_lr: float = PROXY.lr
    proxy_train: int = _PROXY_TRAIN
    proxy_val: int = _PROXY_VAL
    proxy_width: float = PROXY.width
    proxy_depth: int | None = PROXY.max_depth
    proxy_batch: int = PROXY.batch_size
    proxy_warmup: float = PROXY.warmup_epochs
    min_per_class: int = DEFAULT_MIN_PER_CLASS  # imagefolder: fewer classes rather than fewer images per class
    grace_epochs: int = 2
    ray_address: str | None = None
    cpus_per_trial: int | None = None
    device: str = "auto"  # where proxies and promotions train: auto (CUDA when Ray has GPUs), cpu or cuda
    gpus_per_trial: float | None = None  # None: the cluster's GPUs / workers, at most 1 (`gpu_share`)
    seeds: tuple[str, ...] = field(default_factory=lambda: tuple(SEEDS))
    resume: bool = False
    promote: int = 0  # front members to promote after the search (the command's default: DEFAULT_PROMOTE)
    promotion: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.promotion is None:
            self.promotion = asdict(PROMOTION.above(self.proxy_fidelity()))

    def proxy_fidelity(self) -> Fidelity:
        """The proxy this run trains, image counts included."""
        return Fidelity(width=self.proxy_width, max_depth=self.proxy_depth, img_size=self.proxy_img_size,
                        train_images=self.proxy_train, val_images=self.proxy_val, epochs=self.proxy_epochs,
                        lr=self.proxy_lr, batch_size=self.proxy_batch, warmup_epochs=self.proxy_warmup)

    def promotion_fidelity(self) -> Fidelity:
        """The fidelity this run's promotions train at, image counts included."""
        return Fidelity(**self.promotion)

    def latency_table_path(self) -> Path | None:
        """The run's own copy of its latency table (the original may move), or the original before the
        run has copied it; None when latency is measured."""
        if self.latency_table is None:
            return None
        copy = Path(self.out) / LATENCY_TABLE
        return copy if copy.is_file() else Path(self.latency_table)

    @property
    def latency_against_reference(self) -> bool:
        """Whether trials measure latency against a reference model (`trials.latency.LatencyReference`):
        on the CPU, without a table."""
        return self.latency_table is None and self.latency_device == "cpu"

    def latency_source(self) -> str:
        """Where the run's latencies come from, in words, for the report and the log."""
        if self.latency_table is None:
            return (f"latency measured on this machine's {self.latency_device}, {self.latency_threads} thread(s), "
                    "batch 1, 224x224, with the machine's other trials held meanwhile"
                    + (", against a reference model timed after each run" if self.latency_against_reference else ""))
        from .latency import LatencyTable, LatencyTableError

        try:
            table = LatencyTable.load(self.latency_table_path())
        except LatencyTableError:  # moved since the run: its name still says where latency came from
            return f"latency predicted from the latency table {self.latency_table}"
        return f"latency predicted from the latency table {self.latency_table}: {table.describe()}"

    def save(self, path: Path) -> None:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        path.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: Path) -> SearchConfig:
        data = json.loads(path.read_text())
        data["out"], data["seeds"] = Path(data["out"]), tuple(data["seeds"])
        return cls(**data)


def gpu_share(gpus: float, workers: int, asked: float | None = None) -> float:
    """The GPU fraction Ray reserves per trial: `asked`, else `gpus / workers` at most 1, so that
    `workers` concurrent trials spread over the cluster's GPUs (all of them share one GPU here)."""
    if asked is not None:
        return asked
    return min(1.0, gpus / workers) if gpus > 0 else 0.0
