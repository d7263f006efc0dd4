"""Command-line front ends: argument parsing, input checks with one-line errors, logging set-up.

Everything here imports in milliseconds (no torch, timm, Optuna or Ray): `--help` and every bad-input
error answer at once; the search's heavy imports happen in `search_main` once the input is good.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from search_spaces import SEEDS
from trials.devices import cuda_device_count
from trials.fidelity import PROMOTION, PROXY
from trials.sources import DATASET_NAMES, DEFAULT_MIN_PER_CLASS, FASHION_MNIST_DIR, DatasetError, check_dataset

from .budget import FLOPS_HELP, BudgetError, parse_flops, parse_latency, space_floor
from .config import DEFAULT_PROMOTE, DEVICES, SearchConfig

__all__ = ["search_main", "latency_table_main", "UsageError"]


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit code 2."""


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)
_DEFAULTS = {f.name: f.default for f in fields(SearchConfig)}  # one place: SearchConfig (its proxy: PROXY)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints the usage too; keep errors to one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def search_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="search.py", description="Search hybrid vision backbones under a compute budget: "
                       "Optuna decides, Ray Tune runs proxy-trained candidates in parallel.")
    p.add_argument("--budget", help=f"FLOP budget, e.g. 5gflops, 500MFLOPs, 5G or 5e9. {FLOPS_HELP}. "
                   "Required for a new run; a resumed run keeps its own.")
    p.add_argument("--latency-budget", help="optional latency budget of the full model, e.g. 50ms")
    p.add_argument("--latency-table", type=Path, metavar="FILE",
                   help="predict latency from this table (made by scripts/latency_table.py on the device you deploy "
                        "on) instead of measuring it: known before training, so --latency-budget rejects at once, "
                        "and no full-size model is built")
    p.add_argument("--latency-device", choices=("cpu", "cuda"),
                   help="without a table: where latency is measured (default cpu; batch 1, 224x224, median of "
                        "repeated runs, the machine's other trials held meanwhile); its own choice, whatever "
                        "--device trains on")
    p.add_argument("--latency-threads", type=_positive_int,
                   help="without a table: CPU threads for latency, the same for every trial of the run whatever "
                        "--workers is (default 1; kept by --resume)")
    p.add_argument("--trials", type=_positive_int, help=f"candidates to complete (default {_DEFAULTS['trials']})")
    p.add_argument("--workers", type=_positive_int,
                   help=f"concurrent trials and promotions (default {_DEFAULTS['workers']})")
    real_train = PROMOTION.default_sample("fashion-mnist")[0]
    synthetic_train = PROMOTION.default_sample("synthetic")[0]
    p.add_argument("--promote", type=_non_negative_int, metavar="K",
                   help="after the search, train again the K front members that add most hypervolume, as the full "
                        f"model for {PROMOTION.epochs} epochs on {PROMOTION.train_factor:g}x the proxy's training "
                        f"images ({synthetic_train:,} synthetic, {real_train:,} real by default), and record their "
                        f"accuracy beside the proxy's (default {DEFAULT_PROMOTE}; 0: none; a resumed run "
                        "may change it)")
    p.add_argument("--sampler", default="tpe", choices=("tpe", "nsga2", "random"),
                   help="Optuna sampler (default tpe: multivariate, multi-objective)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampler, data and training")
    p.add_argument("--dataset", default="synthetic", choices=DATASET_NAMES,
                   help="proxy dataset (default: the embedded synthetic one); fashion-mnist reads Debian's "
                        "dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)")
    p.add_argument("--data-dir", help="folder of an imagefolder, CIFAR-10 (python batches) or Fashion-MNIST "
                   f"(four IDX files; default {FASHION_MNIST_DIR}) dataset")
    p.add_argument("--out", type=Path, help="run directory (default runs/<date>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped or killed run")
    p.add_argument("--ray-address", help="HOST:PORT or 'auto': run on an existing Ray cluster")
    p.add_argument("--cpus-per-trial", type=_positive_int, help="CPUs per trial (default: cores / workers)")
    p.add_argument("--device", choices=DEVICES, help="where proxies and promotions train: auto (default: CUDA when "
                   "the machine or Ray cluster has a GPU), cpu or cuda (bf16 autocast, channels_last)")
    p.add_argument("--gpus-per-trial", type=_positive_float, metavar="FRACTION",
                   help="GPU share Ray reserves per trial on CUDA (default: GPUs / --workers, at most 1, so that "
                        "the workers share the GPUs)")
    p.add_argument("--seeds", default="all", help="comma-separated seed names to queue first, 'all' or 'none'")
    g = p.add_argument_group("proxy training (defaults: trials.fidelity.PROXY)")
    g.add_argument("--proxy-img-size", type=_positive_int, default=PROXY.img_size,
                   help="image side in pixels (default %(default)s)")
    g.add_argument("--proxy-epochs", type=_positive_int, default=PROXY.epochs, help="epochs (default %(default)s)")
    g.add_argument("--proxy-lr", type=float, default=PROXY.lr,
                   help="AdamW learning rate, cosine schedule (default %(default)g)")
    synthetic, real = PROXY.default_sample("synthetic"), PROXY.default_sample("fashion-mnist")
    g.add_argument("--proxy-train", type=_positive_int, help=f"training images (default {synthetic[0]} on the "
                   f"synthetic data, {real[0]} on real data, where 3000 held the seeds' proxies to 84%% at most on "
                   "Fashion-MNIST)")
    g.add_argument("--proxy-val", type=_positive_int, help=f"held-out images (default {synthetic[1]} on the "
                   f"synthetic data, {real[1]} on real data: Fashion-MNIST's whole test set)")
    g.add_argument("--proxy-width", type=float, default=PROXY.width,
                   help="width multiplier of the proxy (default %(default)s)")
    g.add_argument("--proxy-depth", type=_positive_int, default=PROXY.max_depth,
                   help="blocks per stage at most in the proxy (default %(default)s)")
    g.add_argument("--min-per-class", type=_non_negative_int, default=DEFAULT_MIN_PER_CLASS,
                   help="imagefolder: when --proxy-train images spread over all classes give fewer than this many "
                        "per class, train on a seeded subset of proxy-train // N classes (default "
                        f"{DEFAULT_MIN_PER_CLASS}: below it the images drawn moved a model's score more than the "
                        "models differ; 0 keeps every class)")
    return p


def _writable_run_dir(path: Path, resume: bool) -> None:
    if resume:
        if not (path / "study.db").is_file() or not (path / "config.json").is_file():
            raise UsageError(f"--resume {path}: no study.db and config.json there; "
                             "give the directory of an earlier run")
        if not os.access(path, os.W_OK):
            raise UsageError(f"--resume {path}: the directory is not writable; fix its permissions")
        return
    if path.exists() and any(path.iterdir()):
        raise UsageError(f"--out {path} already holds a run; use --resume {path} to continue it or pick a new --out")
    try:  # as root, os.access says yes to everything: really try
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out {path}: cannot write there ({err.strerror}); choose a writable directory") from None


def _resumed_config(args: argparse.Namespace) -> SearchConfig:
    """A resumed run keeps its settings; only how much and where to run may change."""
    _writable_run_dir(args.resume, resume=True)
    saved = SearchConfig.load(args.resume / "config.json")
    changes = {k: v for k, v in dict(trials=args.trials, workers=args.workers, ray_address=args.ray_address,
                                     cpus_per_trial=args.cpus_per_trial, promote=args.promote,
                                     device=args.device, gpus_per_trial=args.gpus_per_trial).items()
               if v is not None}
    resumed = replace(saved, out=args.resume, resume=True, **changes)
    _check_devices(resumed)
    return resumed


def _check_devices(cfg: SearchConfig) -> None:
    """CUDA asked for where there is none: said now, in one line. On a Ray cluster the search checks the
    cluster's GPUs once it has joined it."""
    if cfg.gpus_per_trial is not None and cfg.device == "cpu":
        raise UsageError("--gpus-per-trial needs --device cuda or auto; drop it to train on the CPU")
    if cfg.gpus_per_trial is not None and cfg.gpus_per_trial > 1 and cfg.gpus_per_trial != int(cfg.gpus_per_trial):
        raise UsageError(f"--gpus-per-trial {cfg.gpus_per_trial:g}: above 1, Ray reserves whole GPUs; "
                         "give a fraction up to 1 or a whole number")
    local = cfg.ray_address is None
    if local and cfg.device == "cuda" and cuda_device_count() == 0:
        raise UsageError("--device cuda: no CUDA GPU here (the CUDA driver reports none); use --device cpu or auto")
    if local and cfg.latency_device == "cuda" and cfg.latency_table is None and cuda_device_count() == 0:
        raise UsageError("--latency-device cuda: no CUDA device here; use --latency-device cpu")


def _latency_source(args: argparse.Namespace) -> tuple[str | None, str, int]:
    """(table path, device, threads) of the run's latencies; a table fixes device and threads itself."""
    if args.latency_table is None:
        return None, args.latency_device or "cpu", args.latency_threads or 1
    from .latency import LatencyTable, LatencyTableError

    try:
        table = LatencyTable.load(args.latency_table)
    except LatencyTableError as err:
        raise UsageError(f"--latency-table: {err}") from None
    for flag, given, own in (("--latency-device", args.latency_device, table.device),
                             ("--latency-threads", args.latency_threads, table.threads)):
        if given is not None and given != own:
            raise UsageError(f"{flag} {given}: the latency table {args.latency_table} was made for {own}; "
                             f"drop {flag} (the table decides) or make a table for {given}")
    return str(args.latency_table.resolve()), table.device, table.threads


def parse_search_args(argv: list[str] | None = None) -> SearchConfig:
    args = search_parser().parse_args(argv)
    if args.resume is not None:
        return _resumed_config(args)
    if args.budget is None:
        raise UsageError("--budget is required for a new run, e.g. --budget 5gflops")
    try:
        budget = parse_flops(args.budget)
        latency = parse_latency(args.latency_budget) if args.latency_budget else None
    except BudgetError as err:
        raise UsageError(str(err)) from None
    floor = space_floor()
    if budget < floor:
        raise UsageError(f"--budget {args.budget}: the smallest architecture of the search space needs "
                         f"{floor / 1e6:.1f} MFLOPs; use --budget {math.ceil(floor / 1e6)}mflops or more")
    try:
        check_dataset(args.dataset, args.data_dir)
    except DatasetError as err:
        raise UsageError(str(err)) from None
    if args.seeds in ("all", ""):
        seeds = tuple(SEEDS)
    elif args.seeds == "none":
        seeds = ()
    else:
        seeds = tuple(s.strip() for s in args.seeds.split(","))
        unknown = [s for s in seeds if s not in SEEDS]
        if unknown:
            raise UsageError(f"--seeds: unknown seed {unknown[0]!r}; choose from {', '.join(SEEDS)}")
    if not 0 < args.proxy_width <= 1:
        raise UsageError(f"--proxy-width must be in (0, 1], got {args.proxy_width}")
    latency_table, latency_device, latency_threads = _latency_source(args)
    proxy_train, proxy_val = PROXY.default_sample(args.dataset)
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    cfg = SearchConfig(
        budget_flops=budget, out=out, trials=args.trials or _DEFAULTS["trials"],
        workers=args.workers or _DEFAULTS["workers"], sampler=args.sampler,
        seed=args.seed, latency_budget_ms=latency, latency_device=latency_device,
        latency_threads=latency_threads, latency_table=latency_table, dataset=args.dataset, data_dir=args.data_dir,
        proxy_img_size=args.proxy_img_size, proxy_epochs=args.proxy_epochs, proxy_lr=args.proxy_lr,
        proxy_train=args.proxy_train or proxy_train, proxy_val=args.proxy_val or proxy_val,
        proxy_width=args.proxy_width, proxy_depth=args.proxy_depth, min_per_class=args.min_per_class,
        ray_address=args.ray_address, cpus_per_trial=args.cpus_per_trial, seeds=seeds,
        promote=DEFAULT_PROMOTE if args.promote is None else args.promote, device=args.device or _DEFAULTS["device"],
        gpus_per_trial=args.gpus_per_trial)
    _check_devices(cfg)
    _writable_run_dir(out, resume=False)  # last: it creates the directory
    return cfg


def setup_logging(run_dir: Path) -> None:
    """Progress to stderr and everything to run_dir/search.log."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    console.addFilter(lambda r: r.name.startswith(("nas", "trials", "search_spaces", "__main__")))
    file = logging.FileHandler(run_dir / "search.log")
    file.setFormatter(fmt)
    root.addHandler(console)
    root.addHandler(file)


def search_main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_search_args(argv)
    except UsageError as err:
        print(f"search.py: error: {err}", file=sys.stderr)
        return 2
    from .search import SearchInputError, run_search  # Optuna, Ray and torch: only for good input

    cfg.out.mkdir(parents=True, exist_ok=True)
    setup_logging(cfg.out)
    try:
        study = run_search(cfg)
    except (DatasetError, BudgetError, SearchInputError) as err:
        print(f"search.py: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # anything else: keep the run, say how to continue
        logging.getLogger(__name__).exception("search stopped")
        print(f"search.py: error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
              f"(details in {cfg.out / 'search.log'}; the run so far is kept: --resume {cfg.out})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"search.py: interrupted; continue with: python scripts/search.py --resume {cfg.out}",
              file=sys.stderr)
        return 130
    from .search import completed_trials

    log = logging.getLogger(__name__)
    finished = len(completed_trials(study))
    if finished < cfg.trials:
        print(f"search.py: error: {finished} of {cfg.trials} trials completed (failed ones carry their error in "
              f"{cfg.out / 'trials.csv'}); continue with: python scripts/search.py --resume {cfg.out}", file=sys.stderr)
        return 1
    log.info("done: %d trials in %s (trials.csv, pareto.json, pareto.html, study.db)", finished, cfg.out)
    return 0


def latency_table_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="latency_table.py", description="Measure this machine's latency table: every block "
                       "type across widths, map sizes, kernels and ratios, stems, downsamplings and heads, fitted "
                       "into cost models that `--latency-table FILE` and nas.predict_latency use. Run it where the "
                       "models will be deployed, with nothing else running, then copy FILE to where the search runs.")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to measure (default cpu)")
    p.add_argument("--threads", type=_positive_int, default=1, help="CPU threads (torch intra-op; default 1)")
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--out", type=Path, required=True, help="the table's JSON file")
    p.add_argument("--samples", type=_int_at_least(8), metavar="N",
                   help="parts measured per cost model (default: 3 per cost term + 12, 21-54)")
    p.add_argument("--full-models", type=_non_negative_int, default=24, metavar="K",
                   help="whole random models (0.1-10 GFLOPs) timed to fit the end-to-end correction (default 24)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the parts and models drawn")
    p.add_argument("--refit", type=Path, metavar="TABLE",
                   help="measure nothing: fit the cost models of TABLE again from the measurements it holds, with "
                        "this version's cost terms, into --out")
    return p


def latency_table_main(argv: list[str] | None = None) -> int:
    args = latency_table_parser().parse_args(argv)
    if args.device == "cuda" and cuda_device_count() == 0:
        print("latency_table.py: error: --device cuda: no CUDA GPU here (the CUDA driver reports none); "
              "run it on the GPU machine, or use --device cpu", file=sys.stderr)
        return 2
    if not args.out.parent.is_dir() or not os.access(args.out.parent, os.W_OK):
        print(f"latency_table.py: error: --out {args.out}: {args.out.parent} is not a writable directory; "
              "create it or choose another place", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from .latency import LatencyTable, LatencyTableError
    from .latency_table import build_latency_table, refit

    start = time.perf_counter()
    if args.refit is not None:
        try:
            old = LatencyTable.load(args.refit)
        except LatencyTableError as err:
            print(f"latency_table.py: error: --refit: {err}", file=sys.stderr)
            return 2
        if not old.measurements:
            print(f"latency_table.py: error: --refit {args.refit} holds no measurements to fit; measure a new "
                  "table (leave out --refit)", file=sys.stderr)
            return 2
        table = refit(old)
    else:
        table = build_latency_table(device=args.device, threads=args.threads, batch=args.batch,
                                    samples=args.samples, full_models=args.full_models, seed=args.seed)
    partial = args.out.with_name(args.out.name + ".partial")
    table.save(partial)
    partial.replace(args.out)  # whole or not at all
    correction = table.meta.get("correction", {})
    logging.getLogger(__name__).info(
        "wrote %s: %d cost models, %s, in %.0f s%s", args.out, len(table.models), table.describe(),
        time.perf_counter() - start,
        f"; end-to-end median error {100 * correction['median_error_after']:.1f}% on {correction['models']} models"
        if correction else "")
    return 0
