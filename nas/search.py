"""The search: Optuna decides, Ray Tune runs the proxy-trained candidates in parallel.

The Optuna study (SQLite in the run directory) is the record of the run: every candidate, its
parameters, its numbers and its fate. Ray Tune runs each candidate as a trial (ASHA stops poor ones
after an epoch or two); a candidate over the FLOP budget is rejected by the searcher in the time of
one count, told to Optuna as infeasible (constraint violated) and never reaches Ray. The sampled space
is narrowed to the budget (`nas.budget.budget_limits`) so that small budgets are not mostly rejections;
the seeds go first, scaled into the budget, twins merged into one trial (`fit_seeds`).
Resuming reopens the study, fails the trials a killed run left RUNNING, re-queues their candidates
and runs only what is missing.

Promotions (`--promote K`, `run_promotions`): once the search has its trials, the K front members that
add most hypervolume are trained again at `trials.fidelity.PROMOTION` (the full model, more images) as
Ray tasks in the same Ray session, and recorded in the study as trials of their own that point at the
original (`promotion_of`). How they are kept out of the search's counts, front and sampler: see
`record_promotion_start`.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from search_spaces import SEEDS
from search_spaces.space import SearchSpace, spec_to_params
from search_spaces.spec import ArchSpec
from trials.data import TrialData, load_dataset
from trials.devices import resolve_device
from trials.fidelity import Fidelity
from trials.latency import LatencyGate, LatencyReference
from trials.trial import WORKER_ENV

from .budget import SeedDoesNotFit, budget_limits, fit_to_budget
from .config import DEFAULT_PROMOTE, LATENCY_TABLE, SearchConfig, gpu_share
from .count import count
from .latency import LatencyTable, predict_latency
from .remote import promotion_task, tune_trainable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SearchConfig", "SearchInputError", "BudgetedOptunaSearch", "run_search", "open_study", "fit_seeds",
           "FittedSeed", "STUDY_NAME", "OBJECTIVES", "DEFAULT_PROMOTE", "completed_trials", "is_promotion", "reconcile",
           "promotion_choice", "pending_promotions", "record_promotion_start", "record_promotion_end",
           "run_promotions"]

_logger = logging.getLogger(__name__)
LATENCY_REFERENCE_ATTR = "latency_reference_ms"  # the study's record of its LatencyReference


class SearchInputError(ValueError):
    """Input that only the search can check, once it has joined Ray: --device cuda on a cluster without
    GPUs. One line, exit 2, like the command line's own checks."""


STUDY_NAME = "hybrid-nas"
OBJECTIVES = (("accuracy", "max"), ("flops", "min"), ("latency_ms", "min"))
# Values told to Optuna for a candidate rejected before training (its constraint marks it infeasible).
_REJECTED_LATENCY_MS = 1e9


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
                 img_size: int = 224, max_rejections: int = 2000, latency_table: LatencyTable | None = None,
                 **kwargs: Any) -> None:
        self.budget_flops = budget_flops
        self.latency_budget_ms = latency_budget_ms
        self.latency_table = latency_table
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
            latency, over_latency = _REJECTED_LATENCY_MS, 0.0
            if counted.flops <= self.budget_flops and self.latency_table is not None:
                latency = predict_latency(spec, self.latency_table)
                ot_trial.set_user_attr("latency_ms", latency)
                over_latency = latency - self.latency_budget_ms if self.latency_budget_ms else 0.0
            if counted.flops <= self.budget_flops and over_latency <= 0:
                config["trial_number"] = ot_trial.number
                config["seed_name"] = ot_trial.user_attrs.get("seed", "")
                if self.latency_table is not None:
                    config["latency_ms"] = latency
                return config
            # over a budget: infeasible, told at once, never trained
            ot_trial.set_constraint("flops_over_budget", float(counted.flops - self.budget_flops))
            ot_trial.set_constraint("latency_over_budget", float(over_latency))
            over = "FLOP" if counted.flops > self.budget_flops else "latency"
            ot_trial.set_user_attr("rejected", f"over the {over} budget")
            self._ot_study.tell(ot_trial, [0.0, float(counted.flops), float(latency)])
            del self._ot_trials[trial_id]
        raise RuntimeError(f"{self.max_rejections} candidates in a row were over the FLOP budget "
                           f"({self.budget_flops / 1e9:.3g} G) or the latency budget; budgets this close to the "
                           "smallest architecture leave almost nothing to search: raise --budget or --latency-budget")

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


def is_promotion(trial: optuna.trial.FrozenTrial) -> bool:
    """A promotion's trial (see `record_promotion_start`), not a searched candidate."""
    return "promotion_of" in trial.user_attrs


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Candidates trained to the end (what --trials counts): not pruned, failed, rejected or promotions."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in done if "rejected" not in t.user_attrs and not is_promotion(t)]


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


def reconcile(study: optuna.Study) -> tuple[int, int]:
    """After a killed run: fail the trials it left RUNNING and queue the searched candidates among them
    again. A promotion left RUNNING is failed too but never queued as a candidate: `pending_promotions`
    finds its member unpromoted and the promotion runs again. Returns (candidates re-queued, promotions)."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    promotions = 0
    for t in stale:
        promotion = is_promotion(t)
        promotions += promotion
        why = "the run was killed; the promotion runs again" if promotion else "the run was killed; re-queued"
        optuna.trial.Trial(study, t._trial_id).set_user_attr("interrupted", why)
        study.tell(t.number, state=TrialState.FAIL)
        if not promotion:
            study.enqueue_trial(t.params, user_attrs={k: v for k, v in t.user_attrs.items()
                                                      if k in ("seed", "scaled")})
    return len(stale) - promotions, promotions


def promotion_choice(frame: pd.DataFrame, budget_flops: float, k: int) -> list[int]:
    """Trial numbers of the `k` front members that contribute most hypervolume (exclusively, with the
    report's normalisation; `nas.results.hypervolume_contributions`), largest first; the whole front
    when it has fewer."""
    from .results import hypervolume_contributions

    return [int(n) for n in hypervolume_contributions(frame, budget_flops).index[:max(0, k)]]


def pending_promotions(study: optuna.Study, budget_flops: float, k: int) -> list[int]:
    """The chosen members (`promotion_choice`) without a finished promotion: none yet, or only ones a
    kill interrupted. A promotion that failed with an error counts as finished (it would fail again)."""
    from .results import trials_frame

    if k <= 0:
        return []
    finished = {t.user_attrs["promotion_of"] for t in study.get_trials(deepcopy=False)
                if is_promotion(t) and (t.state == TrialState.COMPLETE
                                        or (t.state == TrialState.FAIL and "interrupted" not in t.user_attrs))}
    return [n for n in promotion_choice(trials_frame(study), budget_flops, k) if n not in finished]


# What a promotion's trial copies from its original: enough for trials.csv, the report and optuna-dashboard.
_COPIED_ATTRS = ("seed", "scaled", "layout", "params", "flops", "latency_ms", "spec")


def record_promotion_start(study: optuna.Study, original: optuna.trial.FrozenTrial, fidelity: Fidelity) -> int:
    """Add the promotion of `original` to the study as a RUNNING trial of its own; returns its number.

    How a promotion lives in the study without disturbing the search:
    - its trial carries `promotion_of` (the original's number); `completed_trials` (what --trials
      counts), the results' COMPLETE rows, the Pareto front and the hypervolume leave such trials out,
      and trials.csv shows them as state PROMOTION;
    - it has the original's parameters and distributions, and is finished (`record_promotion_end`)
      with the original's values (proxy top-1, FLOPs, latency) and constraints, the promoted top-1
      going to the user attribute `accuracy` only. Samplers read COMPLETE trials' values (TPE all of
      them, NSGA-II only its own generations', which a promotion is in none of), and promotions come
      after the search, so only a resume that raises --trials samples after them: TPE then sees a copy
      of a point it already knows (weighed twice only while its first front is smaller than its "good"
      share; beyond that its hypervolume tie-break gains nothing from a copy), never a higher-fidelity
      accuracy that no other candidate could be compared with. FAIL would hide it from TPE as well but
      misnames a finished run; PRUNED would count it against its parameters;
    - it is added directly (`create_new_trial`), not through `study.ask()`, which would take a
      queued candidate's place; a kill leaves it RUNNING, and `reconcile` fails it without queueing.
    """
    attrs = {k: original.user_attrs[k] for k in _COPIED_ATTRS if k in original.user_attrs}
    attrs.update(promotion_of=original.number, proxy_accuracy=original.values[0], fidelity=asdict(fidelity))
    template = optuna.trial.create_trial(state=TrialState.RUNNING, params=original.params,
                                         distributions=original.distributions, user_attrs=attrs,
                                         constraints=original.constraints or None)
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return study._storage.get_trial_number_from_id(trial_id)


def record_promotion_end(study: optuna.Study, number: int, original: optuna.trial.FrozenTrial,
                         result: dict[str, Any] | None = None, error: str | None = None) -> None:
    """Finish promotion trial `number`: COMPLETE with `result` (`trials.trial.run_promotion`'s) or FAIL
    with `error`."""
    trial = optuna.trial.Trial(study, study._storage.get_trial_id_from_study_id_trial_number(study._study_id,
                                                                                             number))
    if error is not None or result is None:
        trial.set_user_attr("error", f"promotion of trial {original.number} failed: {error}")
        study.tell(number, state=TrialState.FAIL)
        return
    for key in ("accuracy", "val_top1", "train_loss", "epochs", "images", "duration_s", "cpu_s", "node"):
        if key in result:
            trial.set_user_attr(key, result[key])
    study.tell(number, list(original.values))


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

            frame = write_results(study, run_dir)
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


def _error_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err  # a RayTaskError carries the task's own exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def run_promotions(study: optuna.Study, cfg: SearchConfig, cpus: int, device: str = "cpu", gpus: float = 0.0) -> int:
    """Train the members `pending_promotions` names at the run's promotion fidelity as Ray tasks (up
    to `cfg.workers` at once, `cpus` CPUs and `gpus` GPUs each, on `device`) in the current Ray session,
    recording each in the study as it starts and ends; a failed promotion is recorded with its error,
    never raised. Needs Ray initialised. Returns the number of promotions run."""
    import ray

    from trials.data import load_dataset

    from .report import promotion_text
    from .results import promotion_summary, trials_frame, write_results

    pending = pending_promotions(study, cfg.budget_flops, cfg.promote)
    if not pending:
        return 0
    fidelity = cfg.promotion_fidelity()
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    # an image folder keeps a seeded subset of classes by images per class: scaled with the images, the
    # promotion sees the proxy's classes and held-out images
    scale = fidelity.train_images / max(1, cfg.proxy_train)
    data = load_dataset(cfg.dataset, cfg.data_dir, img_size=fidelity.img_size, seed=cfg.seed,
                        max_train=fidelity.train_images, max_val=fidelity.val_images,
                        min_per_class=round(cfg.min_per_class * scale))
    _logger.info("promoting %d front member(s), the largest hypervolume contributions (trials %s): the full model, "
                 "%d epochs on %s images (held-out: %s)", len(pending), ", ".join(map(str, pending)), fidelity.epochs,
                 f"{len(data.train_y):,}", f"{len(data.val_y):,}")
    data_ref = ray.put(data)
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(promotion_task)
    queue, running = list(pending), {}
    while queue or running:
        while queue and len(running) < cfg.workers:
            original = trials[queue.pop(0)]
            number = record_promotion_start(study, original, fidelity)
            _logger.info("promotion of trial %d (%s%s, proxy %.2f%%) started as trial %d", original.number,
                         original.user_attrs.get("layout", ""),
                         f", {original.user_attrs['seed']}" if original.user_attrs.get("seed") else "",
                         original.values[0], number)
            ref = task.remote(original.user_attrs["spec"], data_ref, fidelity, cfg.seed, cpus, device)
            running[ref] = (number, original, time.monotonic())
        ready, _ = ray.wait(list(running), num_returns=1)
        number, original, began = running.pop(ready[0])
        try:
            result, error = ray.get(ready[0]), None
        except Exception as err:  # a failed promotion is recorded; the search's results stand
            result, error = None, _error_line(err)
        record_promotion_end(study, number, original, result, error)
        if error is None:
            _logger.info("promotion of trial %d done in %.0f s (%.0f s of CPU): proxy %.2f%% -> promoted %.2f%% "
                         "(trial %d)", original.number, time.monotonic() - began, result["cpu_s"],
                         original.values[0], result["accuracy"], number)
        else:
            _logger.warning("promotion of trial %d failed after %.0f s (trial %d): %s", original.number,
                            time.monotonic() - began, number, error)
        write_results(study, cfg.out)
    fidelity_dict = asdict(fidelity)
    text = promotion_text(promotion_summary(trials_frame(study), fidelity_dict))
    if text:
        _logger.info("%s", text)
    return len(pending)


def _init_ray(cfg: SearchConfig) -> bool:
    """Start or join Ray unless already initialised; True when this call started it."""
    import ray

    if ray.is_initialized():
        given = ray.get_runtime_context().runtime_env.get("env_vars") or {}
        if any(given.get(name) != value for name, value in WORKER_ENV.items()):
            _logger.warning("Ray was started before the search: give its workers runtime_env={'env_vars': %s} "
                            "(trials.trial.WORKER_ENV), or latencies measured in trials read up to 60 %% high",
                            WORKER_ENV)
        return False
    runtime_env = {"env_vars": WORKER_ENV}  # for this job's workers, on every node
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, log_to_driver=False, logging_level=logging.ERROR, runtime_env=runtime_env)
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, runtime_env=runtime_env)
    return True


def run_search(cfg: SearchConfig) -> optuna.Study:
    """Run (or resume) a search into `cfg.out`, then its promotions; returns the study. The caller has
    validated cfg. Promotions run once the study holds `cfg.trials` completed candidates."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress lines replace Tune's tables
    import ray

    from .report import write_run

    run_dir = cfg.out
    seeds, left_out = fit_seeds(cfg.seeds, cfg.budget_flops)
    # loaded first: an unreadable dataset ends the command in one line before anything is logged or written
    data = load_dataset(cfg.dataset, cfg.data_dir, img_size=cfg.proxy_img_size, seed=cfg.seed,
                        max_train=cfg.proxy_train, max_val=cfg.proxy_val, min_per_class=cfg.min_per_class)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(run_dir)
    if cfg.resume:
        requeued, promotions = reconcile(study)
        if requeued:
            _logger.info("resume: %d trial(s) interrupted by the kill were marked failed and re-queued", requeued)
        if promotions:
            _logger.info("resume: %d promotion(s) interrupted by the kill were marked failed; they run again",
                         promotions)
    else:
        cfg.save(run_dir / "config.json")
        if cfg.latency_table:
            shutil.copyfile(cfg.latency_table, run_dir / LATENCY_TABLE)
        _logger.info("%s", cfg.latency_source())
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
    if remaining <= 0 and not pending_promotions(study, cfg.budget_flops, cfg.promote):
        write_run(study, run_dir, cfg.budget_flops, cfg.latency_budget_ms, latency_source=cfg.latency_source())
        return study

    reference = _latency_reference(study, cfg) if remaining > 0 else None  # before Ray: on a quiet machine
    started_ray = _init_ray(cfg)
    resources = ray.cluster_resources()
    cpus = cfg.cpus_per_trial or max(1, int(resources.get("CPU", 1)) // cfg.workers)
    try:
        try:
            device = resolve_device(cfg.device, resources.get("GPU", 0.0))
        except ValueError as err:
            raise SearchInputError(str(err)) from None
        gpus = gpu_share(resources.get("GPU", 0.0), cfg.workers, cfg.gpus_per_trial) if device == "cuda" else 0.0
        _logger.info("trials train on %s: %d CPU(s)%s each, %d at once", device, cpus,
                     f" and {gpus:g} GPU" if gpus else "", cfg.workers)
        if remaining > 0:
            _search(study, cfg, seeds, data, remaining, cpus, device, gpus, reference)
        if cfg.promote and len(completed_trials(study)) >= cfg.trials:
            run_promotions(study, cfg, cpus, device, gpus)
    finally:
        write_run(study, run_dir, cfg.budget_flops, cfg.latency_budget_ms, latency_source=cfg.latency_source())
        if started_ray:
            ray.shutdown()
    return study


def _latency_reference(study: optuna.Study, cfg: SearchConfig) -> LatencyReference | None:
    """What the trials measure latency against (`trials.latency.LatencyReference`), on the CPU without a
    latency table: timed once for the run, and kept in the study so that a resumed run uses the same."""
    if not cfg.latency_against_reference:
        return None
    ms = study.user_attrs.get(LATENCY_REFERENCE_ATTR)
    if ms is None:
        ms = LatencyReference.measure(threads=cfg.latency_threads).ms
        study.set_user_attr(LATENCY_REFERENCE_ATTR, ms)
    reference = LatencyReference(ms=ms)
    _logger.info("latencies are measured against %s at %d px, timed after each run of a candidate (%.1f ms)",
                 reference.arch, reference.img_size, reference.ms)
    return reference


def _search(study: optuna.Study, cfg: SearchConfig, seeds: list[FittedSeed], data: TrialData, remaining: int,
            cpus: int, device: str, gpus: float, reference: LatencyReference | None) -> None:
    """The search proper: Ray Tune trials proposed by Optuna until `remaining` more have completed."""
    from ray import tune

    from trials.trial import TrialSettings

    run_dir = cfg.out
    settings = TrialSettings(fidelity=cfg.proxy_fidelity(), seed=cfg.seed, threads=cpus, device=device,
                             latency_device=cfg.latency_device, latency_threads=cfg.latency_threads,
                             latency_budget_ms=cfg.latency_budget_ms, gate=LatencyGate(), latency_reference=reference)
    table = LatencyTable.load(cfg.latency_table_path()) if cfg.latency_table else None
    space = SearchSpace(budget_limits(cfg.budget_flops, keep=tuple(seed.spec for seed in seeds)))
    searcher = BudgetedOptunaSearch(
        space=space, metric=[m for m, _ in OBJECTIVES], mode=[m for _, m in OBJECTIVES],
        sampler=make_sampler(cfg.sampler, (cfg.seed if cfg.sampler_seed is None else cfg.sampler_seed)
                             + len(study.trials)), storage=study._storage,
        study_name=STUDY_NAME, budget_flops=cfg.budget_flops, latency_budget_ms=cfg.latency_budget_ms,
        full_epochs=cfg.proxy_epochs, latency_table=table)
    scheduler = _seed_aware_asha()(metric="accuracy", mode="max", time_attr="epoch", max_t=cfg.proxy_epochs,
                                   grace_period=min(cfg.grace_epochs, cfg.proxy_epochs), reduction_factor=2)
    # pruned and failed trials do not count: allow up to 3x the missing count, stop once enough completed
    max_runs = 3 * remaining + cfg.workers
    trainable = tune.with_resources(tune.with_parameters(tune_trainable, data=data, settings=settings),
                                    {"cpu": cpus, "gpu": gpus})
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
