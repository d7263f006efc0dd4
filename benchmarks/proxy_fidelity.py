"""Does the search's proxy rank architectures as a much longer, full-size training does?

Fashion-MNIST, one budget (default 300 MFLOPs, where the full-size models are cheap enough to train
dozens of on a CPU). Architectures: the seeds fitted to the budget (twins merged), random draws from
the budget's space chosen to cover every block type, and the best candidates of a search run
(`--from-run`). Each one is trained
- as the reference (`trials.fidelity.REFERENCE`): the full model, one epoch on all 60,000 training
  images at 32 px, scored on the 10,000 test images, with two training seeds for every other
  architecture of the list (the reference's own seed-to-seed agreement says how much any predictor can reach);
- as a proxy at each fidelity in VARIANTS (the search's default first; the others spend about the
  same compute on more images, more epochs, a larger model or larger images), recording the whole
  learning curve so that scores read from the curve (ASHA's rung at epoch 2, the mean of the last
  two epochs) are measured without training again;
and scored for free: #params and FLOPs of the full model, zero-cost scores (synflow, NASWOT, Jacobian
covariance) of the default proxy at initialisation.

Every phase writes its results after each architecture and skips what is already there, so that a
killed run resumes and the phases can run as separate processes (two reference shards and the
proxies side by side on two cores):
  python benchmarks/proxy_fidelity.py archs --from-run runs/NAME
  python benchmarks/proxy_fidelity.py reference --shard 0/2 &  python benchmarks/proxy_fidelity.py reference --shard 1/2
  python benchmarks/proxy_fidelity.py proxy --variant default
  python benchmarks/proxy_fidelity.py table
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

import nas
from search_spaces.spec import ArchSpec
from trials.data import load_dataset
from trials.fidelity import PROXY, REFERENCE, Fidelity
from trials.train import ProxyConfig, train_and_evaluate

RESULTS = Path(__file__).parent / "results" / "fidelity"
BUDGET = 300e6
DATASET = "fashion-mnist"
PROXY_TRAIN, PROXY_VAL = PROXY.default_sample(DATASET)  # the search's sample on this dataset
# Proxy fidelities measured against the reference. images_3k trains on the synthetic default's sample
# size (0.3x the default's compute); the others spend about the default's training compute (images x
# epochs x model MACs; the table prints the ratio measured).
VARIANTS: dict[str, Fidelity] = {
    "default": PROXY.with_(train_images=PROXY_TRAIN),
    "images_3k": PROXY.with_(train_images=3_000),
    "images_x2": PROXY.with_(train_images=2 * PROXY_TRAIN, epochs=PROXY.epochs // 2),
    "epochs_x2": PROXY.with_(train_images=PROXY_TRAIN // 2, epochs=2 * PROXY.epochs),
    "full_width": PROXY.with_(width=1.0, train_images=PROXY_TRAIN // 2),
    "full_depth": PROXY.with_(max_depth=None, train_images=PROXY_TRAIN // 2),
    "img_64": PROXY.with_(img_size=64, train_images=PROXY_TRAIN // 4),
}
CURVE_SCORES = ("last", "rung2", "last2_mean")


def block_types(spec: ArchSpec) -> set[str]:
    return {b.type for s in spec.stages for b in s.blocks}


def draw_architectures(random_count: int, seed: int, run_dir: Path | None, from_run: int) -> list[dict[str, Any]]:
    """Seeds fitted to the budget, random draws covering every block type, a search's best candidates."""
    import optuna

    from nas.budget import budget_limits
    from nas.search import fit_seeds
    from search_spaces import SEEDS
    from search_spaces.space import sample_spec

    seeds, _ = fit_seeds(tuple(SEEDS), BUDGET)
    archs = [dict(name=s.name, kind="seed", spec=s.spec.to_json()) for s in seeds]
    seen = {ArchSpec.from_json(a["spec"]).replace(name="").to_json() for a in archs}

    def add(spec: ArchSpec, name: str, kind: str) -> bool:
        key = spec.replace(name="").to_json()
        if key in seen or nas.count(spec).flops > BUDGET:
            return False
        seen.add(key)
        archs.append(dict(name=name, kind=kind, spec=spec.to_json()))
        return True

    if run_dir is not None:
        import pandas as pd

        trials = pd.read_csv(run_dir / "trials.csv")
        done = trials[(trials.state == "COMPLETE") & trials.seed.isna()].sort_values("accuracy", ascending=False)
        found = 0
        for row in done.itertuples():
            if found < from_run and add(ArchSpec.from_json(row.spec), f"search_{row.number}_{row.layout}", "search"):
                found += 1

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    limits = budget_limits(BUDGET)
    covered: set[str] = set()
    drawn = 0
    while drawn < random_count:
        spec = sample_spec(study.ask(), limits)
        new_types = block_types(spec) - covered
        # until every block type has appeared, keep only draws that bring a new one
        if not new_types and len(covered) < 12 and drawn < random_count - 2:
            continue
        if add(spec, f"random_{drawn}_{spec.layout}", "random"):
            covered |= block_types(spec)
            drawn += 1
    return archs


def training_compute(spec: ArchSpec, fidelity: Fidelity, images: int) -> float:
    """Forward MACs of a whole training run (backward is a fixed multiple of it)."""
    return nas.count(fidelity.model_spec(spec), fidelity.img_size).flops * images * fidelity.epochs


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _done(kind: str) -> set[str]:
    """Runs of `kind` already recorded by any process (shards, or a second lane working backwards)."""
    return {key for part in RESULTS.glob(f"{kind}_*of*.json") for key in _load(part)}


def train_runs(archs: list[dict], fidelity: Fidelity, repeats: dict[str, int], kind: str, part: str, device: str,
               threads: int, reverse: bool = False) -> None:
    """Train `fidelity.model_spec(arch)` for every (architecture, training seed); one JSON entry each.

    Results go to RESULTS/{kind}_{part}.json; runs another process has recorded in a file of the same kind
    are skipped, so that a second process
    can take the same list from its end (`reverse`) and the two meet in the middle.
    """
    torch.set_num_threads(threads)
    path = RESULTS / f"{kind}_{part}.json"
    results = _load(path)
    data = load_dataset(DATASET, None, img_size=fidelity.img_size, max_train=fidelity.train_images,
                        max_val=fidelity.val_images)
    todo = [(a, r) for r in range(max(repeats.values())) for a in archs if r < repeats[a["name"]]]
    for i, (arch, repeat) in enumerate(reversed(todo) if reverse else todo):
        key = f"{arch['name']}#{repeat}"
        if key in results or key in _done(kind):
            continue
        spec = fidelity.model_spec(ArchSpec.from_json(arch["spec"]))
        torch.manual_seed(repeat)
        model = nas.build_model(spec, num_classes=data.num_classes, img_size=data.img_size)
        cfg = ProxyConfig(epochs=fidelity.epochs, batch_size=fidelity.batch_size, lr=fidelity.lr,
                          warmup_epochs=fidelity.warmup_epochs, seed=repeat, device=device)
        start = time.perf_counter()
        try:
            curve = train_and_evaluate(model, data, cfg).val_top1
        except Exception as err:  # a diverged run is a result too: recorded, not fatal
            logging.warning("%s: %s", key, err)
            curve = [math.nan]
        results[key] = dict(top1=curve[-1], curve=curve, seconds=time.perf_counter() - start,
                            compute=training_compute(ArchSpec.from_json(arch["spec"]), fidelity, len(data.train_y)))
        path.write_text(json.dumps(results, indent=1))
        logging.info("[%d/%d] %-45s %5.2f%%  %4.0f s", i + 1, len(todo), key, curve[-1], results[key]["seconds"])


def zero_cost_scores(archs: list[dict], path: Path) -> None:
    """Zero-cost scores of the default proxy at the search's initialisation (torch seed 0)."""
    from trials.zero_cost import jacobian_covariance, naswot, synflow

    results = _load(path)
    data = load_dataset(DATASET, None, img_size=PROXY.img_size, max_train=PROXY_TRAIN, max_val=1000)
    images = data.train_x[:64]
    for arch in archs:
        if arch["name"] in results:
            continue
        torch.manual_seed(0)
        model = nas.build_model(PROXY.model_spec(ArchSpec.from_json(arch["spec"])), num_classes=data.num_classes,
                                img_size=data.img_size)
        results[arch["name"]] = dict(synflow=math.log(synflow(model, tuple(images.shape[1:]))),
                                     naswot=naswot(model, images), jacob_cov=jacobian_covariance(model, images))
    path.write_text(json.dumps(results, indent=1))


def curve_score(curve: list[float], how: str) -> float:
    if how == "last":
        return curve[-1]
    if how == "rung2":  # what ASHA's first rung (grace period 2 epochs) sees
        return curve[min(1, len(curve) - 1)]
    return sum(curve[-2:]) / len(curve[-2:])


def rank_agreement(x: list[float], y: list[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    return float(spearmanr(x, y)[0]), float(kendalltau(x, y)[0])


def table(archs: list[dict]) -> dict[str, Any]:
    """Spearman and Kendall of every predictor against the mean reference accuracy; prints the tables."""
    reference = _load(RESULTS / "reference.json")
    ref = {}
    for a in archs:
        runs = [reference[k]["top1"] for k in (f"{a['name']}#0", f"{a['name']}#1") if k in reference]
        if runs and all(math.isfinite(r) for r in runs):
            ref[a["name"]] = sum(runs) / len(runs)
    names = [a["name"] for a in archs if a["name"] in ref]
    by_name = {a["name"]: a for a in archs}
    predictors: dict[str, dict[str, float]] = {}
    cost: dict[str, float] = {}
    partial: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        runs = _load(RESULTS / f"proxy_{variant}.json")
        if not all(f"{n}#0" in runs for n in names):
            partial[variant] = runs
            continue
        for how in CURVE_SCORES:
            label = variant if how == "last" else f"{variant} ({how})"
            predictors[label] = {n: curve_score(runs[f"{n}#0"]["curve"], how) for n in names}
        cost[variant] = sum(runs[f"{n}#0"]["seconds"] for n in names) / len(names)
        cost[f"{variant} compute"] = sum(runs[f"{n}#0"]["compute"] for n in names) / len(names)
    counted = {n: nas.count(ArchSpec.from_json(by_name[n]["spec"])) for n in names}
    predictors["params"] = {n: counted[n].params for n in names}
    predictors["flops"] = {n: counted[n].flops for n in names}
    zero_cost = _load(RESULTS / "zero_cost.json")
    for score in ("synflow", "naswot", "jacob_cov"):
        if all(n in zero_cost for n in names):
            predictors[score] = {n: zero_cost[n][score] for n in names}
    truth = [ref[n] for n in names]
    rows = {p: rank_agreement([v[n] for n in names], truth) for p, v in predictors.items()}

    pairs = [(reference[f"{n}#0"]["top1"], reference[f"{n}#1"]["top1"]) for n in names if f"{n}#1" in reference]
    self_rho, self_tau = rank_agreement(*zip(*pairs)) if len(pairs) >= 5 else (math.nan, math.nan)
    ref_seconds = [r["seconds"] for r in reference.values()]
    ref_compute = sum(reference[f"{n}#0"]["compute"] for n in names) / len(names)

    print(f"\n{len(names)} architectures under {BUDGET / 1e6:.0f} MFLOPs on {DATASET}; reference accuracy "
          f"{min(truth):.2f}-{max(truth):.2f}%, median {sorted(truth)[len(truth) // 2]:.2f}%")
    print(f"reference against itself (training seed 0 vs 1, {len(pairs)} architectures): "
          f"Spearman {self_rho:.3f}, Kendall {self_tau:.3f}")
    print(f"\n{'architecture':<48} {'kind':<7} {'reference %':>11} {'default proxy %':>15}")
    default = predictors.get("default", {})
    for n in sorted(names, key=lambda n: -ref[n]):
        print(f"{n[:48]:<48} {by_name[n]['kind']:<7} {ref[n]:>11.2f} {default.get(n, math.nan):>15.2f}")
    print(f"\n{'predictor':<26} {'Spearman':>9} {'Kendall':>8} {'s/arch':>7} {'compute / default':>17}")
    for p, (rho, tau) in rows.items():
        variant = p.split(" (")[0]
        seconds = f"{cost[variant]:.1f}" if variant in cost else "~0"
        ratio = (f"{cost[f'{variant} compute'] / cost['default compute']:.2f}"
                 if variant in cost and "default" in cost else "-")
        print(f"{p:<26} {rho:>9.3f} {tau:>8.3f} {seconds:>7} {ratio:>17}")
    partial_rows = {}
    for variant, runs in partial.items():
        subset = [n for n in names if f"{n}#0" in runs]
        if len(subset) < 10 or "default" not in predictors:
            continue
        truth_subset = [ref[n] for n in subset]
        mine = rank_agreement([runs[f"{n}#0"]["top1"] for n in subset], truth_subset)
        default_there = rank_agreement([predictors["default"][n] for n in subset], truth_subset)
        ratio = (sum(runs[f"{n}#0"]["compute"] for n in subset)
                 / sum(_load(RESULTS / "proxy_default.json")[f"{n}#0"]["compute"] for n in subset))
        partial_rows[variant] = dict(architectures=len(subset), spearman=mine[0], kendall=mine[1],
                                     default_spearman=default_there[0], default_kendall=default_there[1],
                                     compute_ratio=ratio)
        print(f"{variant:<26} {mine[0]:>9.3f} {mine[1]:>8.3f}  on {len(subset)} architectures only "
              f"(default there: {default_there[0]:.3f} / {default_there[1]:.3f}), compute {ratio:.2f}x default")
    asha = None
    if "default (rung2)" in predictors:
        # ASHA (grace 2 epochs, reduction factor 2) stops what falls below the median at its first rung
        rung = predictors["default (rung2)"]
        median = sorted(rung.values())[len(rung) // 2]
        top5 = sorted(names, key=lambda n: -ref[n])[:5]
        asha = [n for n in top5 if rung[n] < median]
        print(f"ASHA's first rung (epoch 2 of the default proxy) would stop {len(asha)} of the reference's best 5"
              f"{': ' + ', '.join(asha) if asha else ''}")
    if "default" in cost:
        print(f"reference: {ref_compute / cost['default compute']:.1f}x the default proxy's compute, "
              f"median {sorted(ref_seconds)[len(ref_seconds) // 2]:.0f} s per run")
    summary = dict(machine=platform.machine(), processor=platform.processor(), date=time.strftime("%Y-%m-%d"),
                   budget=BUDGET, dataset=DATASET, architectures=len(names), reference_pairs=len(pairs),
                   reference_self=dict(spearman=self_rho, kendall=self_tau),
                   reference_fidelity=REFERENCE.__dict__, variants={k: v.__dict__ for k, v in VARIANTS.items()},
                   predictors={p: dict(spearman=r, kendall=t) for p, (r, t) in rows.items()},
                   seconds_per_arch=cost, reference_accuracy=ref, asha_stops_reference_top5=asha,
                   partial_variants=partial_rows)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=("archs", "reference", "proxy", "scores", "table"))
    parser.add_argument("--random", type=int, default=16, help="random architectures besides the seeds")
    parser.add_argument("--from-run", type=Path, help="search run whose best completed candidates join the list")
    parser.add_argument("--found", type=int, default=8, help="how many of the run's candidates")
    parser.add_argument("--draw-seed", type=int, default=0)
    parser.add_argument("--variant", default="default", choices=tuple(VARIANTS))
    parser.add_argument("--shard", default="0/1", help="K/N: train every N-th architecture from the K-th")
    parser.add_argument("--all-seeds", action="store_true", help="reference: two training seeds for every one")
    parser.add_argument("--reverse", action="store_true", help="take the list from its end (a second process)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    archs_path = RESULTS / "archs.json"
    if args.phase == "archs":
        archs = draw_architectures(args.random, args.draw_seed, args.from_run, args.found)
        archs_path.write_text(json.dumps(archs, indent=1))
        for a in archs:
            print(f"{a['kind']:<7} {a['name']:<48} {nas.count(ArchSpec.from_json(a['spec'])).flops / 1e6:6.0f} M")
        return
    archs = json.loads(archs_path.read_text())
    shard, shards = map(int, args.shard.split("/"))
    if args.phase == "reference":
        # every other one (seeds, searched and random alike), or all of them
        two = {a["name"] for a in (archs if args.all_seeds else archs[::2])}
        repeats = {a["name"]: 2 if a["name"] in two else 1 for a in archs}
        data_sizes = REFERENCE.with_(train_images=60_000, val_images=10_000)
        part = f"{shard}of{shards}" + ("_reverse" if args.reverse else "")
        train_runs(archs[shard::shards], data_sizes, repeats, "reference", part, args.device, args.threads,
                   args.reverse)
    elif args.phase == "proxy":
        train_runs(archs[shard::shards], VARIANTS[args.variant].with_(val_images=PROXY_VAL),
                   {a["name"]: 1 for a in archs}, f"proxy_{args.variant}", f"{shard}of{shards}", args.device,
                   args.threads)
    elif args.phase == "scores":
        zero_cost_scores(archs, RESULTS / "zero_cost.json")
    else:
        for kind in ["reference", *(f"proxy_{v}" for v in VARIANTS)]:
            merged: dict[str, Any] = {}
            for part in sorted(RESULTS.glob(f"{kind}_*of*.json")):
                merged.update(_load(part))
            (RESULTS / f"{kind}.json").unlink(missing_ok=True)  # no stale merge of a removed part
            if merged:
                (RESULTS / f"{kind}.json").write_text(json.dumps(merged, indent=1))
        table(archs)


if __name__ == "__main__":
    main()
