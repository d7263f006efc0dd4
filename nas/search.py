"""The search: Optuna decides, Ray Tune runs the proxy-trained candidates in parallel.

The Optuna study (SQLite in the run directory) is the record of the run: every candidate, its
parameters, its numbers and its fate. Ray Tune runs each candidate as a trial (ASHA stops poor ones
after an epoch or two); a candidate over the FLOP budget is rejected by the searcher in the time of
one count, told to Optuna as infeasible (constraint violated) and never reaches Ray. The sampled space
is narrowed to the budget (`nas.budget.budget_limits`) so that small budgets are not mostly rejections;
the seeds go first, scaled into the budget, twins merged into one trial (`fit_seeds`).
Resuming reopens the study, fails the trials a killed run left RUNNING, re-queues their candidates
and runs only what is missing.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from search_spaces import SEEDS
from search_spaces.space import SearchSpace, spec_to_params
from search_spaces.spec import ArchSpec
from trials.data import DEFAULT_MIN_PER_CLASS

from .budget import SeedDoesNotFit, budget_limits, fit_to_budget
from .count import count

__all__ = ["SearchConfig", "BudgetedOptunaSearch", "run_search", "open_study", "fit_seeds", "FittedSeed",
           "STUDY_NAME", "OBJECTIVES"]

_logger = logging.getLogger(__name__)
STUDY_NAME = "hybrid-nas"
OBJECTIVES = (("accuracy", "max"), ("flops", "min"), ("latency_ms", "min"))
# Values told to Optuna for a candidate rejected before training (its constraint marks it infeasible).
_REJECTED_LATENCY_MS = 1e9


@dataclass
class SearchConfig:
    """What `scripts/search.py` asks for; defaults are the command's defaults."""

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
    dataset: str = "synthetic"
    data_dir: str | None = None
    proxy_img_size: int = 32
    proxy_epochs: int = 4
    proxy_lr: float = 2e-3
    proxy_train: int = 3000
    proxy_val: int = 1000
    proxy_width: float = 0.5
    proxy_depth: int = 2
    min_per_class: int = DEFAULT_MIN_PER_CLASS  # imagefolder: fewer classes rather than fewer images per class
    grace_epochs: int = 2
    ray_address: str | None = None
    cpus_per_trial: int | None = None
    seeds: tuple[str, ...] = field(default_factory=lambda: tuple(SEEDS))
    resume: bool = False

    def save(self, path: Path) -> None:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        path.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: Path) -> SearchConfig:
        data = json.loads(path.read_text())
        data["out"], data["seeds"] = Path(data["out"]), tuple(data["seeds"])
        return cls(**data)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; choose tpe, nsga2 or random")


def open_study(run_dir: Path, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """The run's study (created if new), stored in `run_dir/study.db` for optuna-dashboard."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{(run_dir / 'study.db').resolve()}")
    return optuna.create_study(storage=storage, study_name=STUDY_NAME, sampler=sampler, load_if_exists=True,
                               directions=["maximize" if m == "max" else "minimize" for _, m in OBJECTIVES])


class BudgetedOptunaSearch(OptunaSearch):
    """OptunaSearch that rejects over-budget candidates before they run, records trial numbers and
    errors as user attributes, and tells Optuna PRUNED for trials ASHA stopped early."""

    def __init__(self, *, budget_flops: float, latency_budget_ms: float | None, full_epochs: int,
                 img_size: int = 224, max_rejections: int = 2000, **kwargs: Any) -> None:
        self.budget_flops = budget_flops
        self.latency_budget_ms = latency_budget_ms
        self.full_epochs = full_epochs
        self.img_size = img_size
        self.max_rejections = max_rejections
        super().__init__(**kwargs)

    def suggest(self, trial_id: str) -> dict | None:
        for _ in range(self.max_rejections):
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials[trial_id]
            spec = ArchSpec.from_json(config["spec"])
            counted = count(spec, self.img_size)
            ot_trial.set_user_attr("spec", config["spec"])
            ot_trial.set_user_attr("layout", spec.layout)
            ot_trial.set_user_attr("params", counted.params)
            ot_trial.set_user_attr("flops", counted.flops)
            if counted.flops <= self.budget_flops:
                config["trial_number"] = ot_trial.number
                config["seed_name"] = ot_trial.user_attrs.get("seed", "")
                return config
            # over budget: infeasible, told at once, never trained
            ot_trial.set_constraint("flops_over_budget", float(counted.flops - self.budget_flops))
            ot_trial.set_constraint("latency_over_budget", 0.0)
            ot_trial.set_user_attr("rejected", "over the FLOP budget")
            self._ot_study.tell(ot_trial, [0.0, float(counted.flops), _REJECTED_LATENCY_MS])
            del self._ot_trials[trial_id]
        raise RuntimeError(f"{self.max_rejections} candidates in a row were over the FLOP budget "
                           f"({self.budget_flops / 1e9:.3g} G); a budget this close to the smallest architecture "
                           "leaves almost nothing to search: raise --budget")

    def close_unstarted(self) -> None:
        """Candidates asked for but never started when the search stopped: closed, not left RUNNING."""
        for trial_id, ot_trial in list(self._ot_trials.items()):
            if trial_id not in self._completed_trials:
                ot_trial.set_user_attr("skipped", "not run: the search had stopped")
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
                self._completed_trials.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        result = result or {}
        for key in ("latency_ms", "accuracy", "duration_s", "epoch", "node"):
            if key in result:
                ot_trial.set_user_attr(key, result[key])
        latency = result.get("latency_ms")
        if error or "error" in result or result.get("accuracy") is None or latency is None or math.isnan(latency):
            # no constraints for a failed trial: Optuna rejects NaN, and a crash has no latency to compare
            ot_trial.set_user_attr("error", result.get("error", "the trial's process died (crash or out of memory)"))
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        over = (latency - self.latency_budget_ms) if self.latency_budget_ms else 0.0
        ot_trial.set_constraint("flops_over_budget", float(result.get("flops", 0) - self.budget_flops))
        ot_trial.set_constraint("latency_over_budget", float(over))
        if result.get("infeasible"):
            ot_trial.set_user_attr("rejected", "over the latency budget")
            self._ot_study.tell(ot_trial, [0.0, float(result["flops"]), float(latency)])
        elif result.get("epoch", 0) < self.full_epochs:
            ot_trial.set_user_attr("pruned", f"stopped early after {result.get('epoch', 0)} epochs "
                                   "(ASHA, or the search had enough completed trials)")
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        else:
            self._ot_study.tell(ot_trial, [float(result["accuracy"]), float(result["flops"]), float(latency)])
        self._completed_trials.add(trial_id)


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials trained to the end (what --trials counts): not pruned, failed or rejected."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in done if "rejected" not in t.user_attrs]


def _enough_completed(run_dir: Path, target: int):
    from ray.tune.stopper import Stopper

    class EnoughCompleted(Stopper):
        """Ends the experiment once the study holds `target` completed trials."""

        def __init__(self) -> None:
            self._study: optuna.Study | None = None

        def __getstate__(self) -> dict:  # Tune pickles its stoppers; the study reopens lazily
            return {"_study": None}

        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            self._study = self._study or open_study(run_dir)
            return len(completed_trials(self._study)) >= target

    return EnoughCompleted()


def _seed_aware_asha():
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class SeedAwareASHA(ASHAScheduler):
        """ASHA on proxy accuracy that always trains the seeds to the end: they are the references."""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if trial.config.get("seed_name"):
                return TrialScheduler.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

    return SeedAwareASHA


def reconcile(study: optuna.Study) -> int:
    """After a killed run: fail the trials it left RUNNING and queue their candidates again."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        optuna.trial.Trial(study, t._trial_id).set_user_attr("interrupted", "the run was killed; re-queued")
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={k: v for k, v in t.user_attrs.items() if k in ("seed", "scaled")})
    return len(stale)


@dataclass
class FittedSeed:
    """One seed trial: the seeds that scale to one spec under the budget, and what scaling changed."""

    names: tuple[str, ...]
    spec: ArchSpec
    notes: tuple[str, ...]

    @property
    def name(self) -> str:
        return "+".join(self.names)


def fit_seeds(names: tuple[str, ...], budget_flops: float) -> tuple[list[FittedSeed], list[str]]:
    """Scale the seeds into the budget and merge those that become the same spec into one trial.

    Returns the seed trials and, for each seed left out (its smallest version is over the budget),
    a sentence saying why.
    """
    by_spec: dict[str, FittedSeed] = {}
    left_out = []
    for name in names:
        try:
            spec, note = fit_to_budget(SEEDS[name], budget_flops)
        except SeedDoesNotFit as err:
            left_out.append(str(err))
            continue
        key = spec.replace(name="").to_json()
        if key in by_spec:
            merged = by_spec[key]
            by_spec[key] = FittedSeed(merged.names + (name,), merged.spec, merged.notes + ((note,) if note else ()))
        else:
            by_spec[key] = FittedSeed((name,), spec, (note,) if note else ())
    return list(by_spec.values()), left_out


def enqueue_seeds(study: optuna.Study, seeds: list[FittedSeed]) -> None:
    """Queue the seed trials first: the published architectures are the search's references."""
    for seed in seeds:
        study.enqueue_trial(spec_to_params(seed.spec), user_attrs={"seed": seed.name, "scaled": "; ".join(seed.notes)})


def _trainable(config: dict[str, Any], data: Any = None, settings: Any = None) -> None:
    """A Ray Tune function trainable: one candidate, errors reported rather than raised so that the
    study records them."""
    import ray
    from ray import tune

    from trials.trial import run_trial

    node = ray.get_runtime_context().get_node_id()
    spec = ArchSpec.from_json(config["spec"])
    try:
        run_trial(spec, data, settings, report=lambda metrics: tune.report({**metrics, "node": node}))
    except Exception as err:  # a crashed candidate must not stop the search
        _logger.warning("trial %s failed: %s", config.get("trial_number"), err)
        tune.report({"error": f"{type(err).__name__}: {err}", "accuracy": 0.0, "epoch": 0, "node": node,
                     "flops": count(spec).flops, "latency_ms": math.nan})


def _progress_callback(study: optuna.Study, cfg: SearchConfig, run_dir: Path):
    from ray.tune import Callback

    class Progress(Callback):
        """One log line per finished trial: counts and the best of the front so far; refreshes the tables."""

        def __init__(self) -> None:
            self.running = 0
            self.started = time.monotonic()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.running = sum(t.status == "RUNNING" for t in trials)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._log(trials)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._log(trials)

        def _log(self, trials: list) -> None:
            from .results import pareto_front, write_results

            frame = write_results(study, run_dir, cfg.budget_flops, html=False)
            counts = frame.state.value_counts()
            running = sum(t.status == "RUNNING" for t in trials)
            front = pareto_front(frame)
            best = ", ".join(f"{r.accuracy:.1f}%@{r.flops / 1e9:.2f}G/{r.latency_ms:.0f}ms"
                             for r in front.sort_values("accuracy", ascending=False).head(3).itertuples())
            _logger.info("[%5.0fs] trials: %d/%d complete, %d running, %d pruned, %d failed, %d rejected | "
                         "front: %s", time.monotonic() - self.started, len(completed_trials(study)), cfg.trials,
                         running, counts.get("PRUNED", 0), counts.get("FAIL", 0), counts.get("REJECTED", 0),
                         best or "-")

    return Progress()


def run_search(cfg: SearchConfig) -> optuna.Study:
    """Run (or resume) a search into `cfg.out`; returns the study. The caller has validated cfg."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress lines replace Tune's tables
    import ray
    from ray import tune

    from trials.data import load_dataset
    from trials.train import ProxyConfig
    from trials.trial import ProxyScale, TrialSettings

    from .results import write_results

    run_dir = cfg.out
    seeds, left_out = fit_seeds(cfg.seeds, cfg.budget_flops)
    data = load_dataset(cfg.dataset, cfg.data_dir, img_size=cfg.proxy_img_size, seed=cfg.seed,
                        max_train=cfg.proxy_train, max_val=cfg.proxy_val, min_per_class=cfg.min_per_class)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(run_dir)
    if cfg.resume:
        stale = reconcile(study)
        if stale:
            _logger.info("resume: %d trial(s) interrupted by the kill were marked failed and re-queued", stale)
    else:
        cfg.save(run_dir / "config.json")
        for why in left_out:
            _logger.info("seed left out: %s", why)
        for seed in seeds:
            if len(seed.names) > 1:
                _logger.info("seeds %s scale to the same spec under the budget: one trial", ", ".join(seed.names))
            for note in seed.notes:
                _logger.info("seed scaled to fit the budget: %s", note)
        enqueue_seeds(study, seeds)
    remaining = cfg.trials - len(completed_trials(study))
    _logger.info("run directory %s: %d more trial(s) to complete (of %d)", run_dir, max(0, remaining), cfg.trials)
    if remaining <= 0:
        write_results(study, run_dir, cfg.budget_flops)
        return study

    started_ray = not ray.is_initialized()
    if started_ray:
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
    cpus = cfg.cpus_per_trial or max(1, int(ray.cluster_resources().get("CPU", 1)) // cfg.workers)
    settings = TrialSettings(
        proxy=ProxyConfig(epochs=cfg.proxy_epochs, lr=cfg.proxy_lr, seed=cfg.seed), threads=cpus,
        scale=ProxyScale(width=cfg.proxy_width, max_depth=cfg.proxy_depth), latency_device=cfg.latency_device,
        latency_threads=cfg.latency_threads, latency_budget_ms=cfg.latency_budget_ms)
    space = SearchSpace(budget_limits(cfg.budget_flops, keep=tuple(seed.spec for seed in seeds)))
    searcher = BudgetedOptunaSearch(
        space=space, metric=[m for m, _ in OBJECTIVES], mode=[m for _, m in OBJECTIVES],
        sampler=make_sampler(cfg.sampler, (cfg.seed if cfg.sampler_seed is None else cfg.sampler_seed)
                             + len(study.trials)), storage=study._storage,
        study_name=STUDY_NAME, budget_flops=cfg.budget_flops, latency_budget_ms=cfg.latency_budget_ms,
        full_epochs=cfg.proxy_epochs)
    scheduler = _seed_aware_asha()(metric="accuracy", mode="max", time_attr="epoch", max_t=cfg.proxy_epochs,
                                   grace_period=min(cfg.grace_epochs, cfg.proxy_epochs), reduction_factor=2)
    # pruned and failed trials do not count: allow up to 3x the missing count, stop once enough completed
    max_runs = 3 * remaining + cfg.workers
    trainable = tune.with_resources(tune.with_parameters(_trainable, data=data, settings=settings), {"cpu": cpus})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=max_runs,
                                    max_concurrent_trials=cfg.workers, reuse_actors=True),
        run_config=tune.RunConfig(name="tune", storage_path=str((run_dir / "ray").resolve()), verbose=0,
                                  stop=_enough_completed(run_dir, cfg.trials),
                                  callbacks=[_progress_callback(study, cfg, run_dir)],
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)))
    try:
        tuner.fit()
    finally:
        searcher.close_unstarted()
        write_results(study, run_dir, cfg.budget_flops, latency_budget_ms=cfg.latency_budget_ms)
        if started_ray:
            ray.shutdown()
    return study
