"""Does the cheap proxy rank architectures as a much longer training does?

Architectures: the 13 seeds (fitted to the budget, as the search trains them) plus random draws
from the search space under the same budget. For each:
- reference: the full-size model (full width and depth) trained for twice the epochs (7-34x the
  proxy's compute, printed per architecture; resolution and images can be raised with --ref-img and
  --ref-train: at 64 px, 12 epochs and 6,000 images the synthetic task saturated just the same);
- proxy: the search's default proxy (width 0.5, 2 blocks per stage, 32 px, 4 epochs, 3000 images);
- free baselines: #params and FLOPs of the full model;
- zero-cost scores at initialisation of the proxy model: synflow, NASWOT, Jacobian covariance.
Prints Spearman rho and Kendall tau of each predictor against the reference accuracy, and what a
zero-cost pre-screen would cost (reference-best architectures it would discard) and save.

The reference is the expensive part; it can run elsewhere (e.g. on a GPU) and be read back:
  python benchmarks/proxy_fidelity.py --archs-only                      # writes the architecture list
  python benchmarks/proxy_fidelity.py --reference-only --device cuda    # reference accuracies
  python benchmarks/proxy_fidelity.py                                   # proxies, scores, the table
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
from search_spaces import SEEDS
from search_spaces.spec import ArchSpec
from trials.data import load_dataset
from trials.train import ProxyConfig, train_and_evaluate

RESULTS = Path(__file__).parent / "results"
BUDGET = 5e9
# The search's proxy defaults (nas.search.SearchConfig); repeated here so that the reference part
# runs where optuna and ray are not installed.
PROXY = dict(img_size=32, epochs=4, lr=2e-3, train=3000, val=1000, width=0.5, depth=2)
DEFAULT_PROXY_EPOCHS = PROXY["epochs"]


def draw_architectures(random_count: int, seed: int) -> list[dict[str, Any]]:
    """The seeds fitted to the budget, then `random_count` distinct random draws under it."""
    import optuna

    from nas.budget import fit_to_budget
    from search_spaces.space import sample_spec

    archs = [dict(name=name, spec=fit_to_budget(spec, BUDGET)[0].to_json()) for name, spec in SEEDS.items()]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen = {a["spec"] for a in archs}
    while len(archs) < len(SEEDS) + random_count:
        spec = sample_spec(study.ask())
        if nas.count(spec).flops <= BUDGET and spec.to_json() not in seen:
            seen.add(spec.to_json())
            archs.append(dict(name=f"random_{len(archs) - len(SEEDS)}_{spec.layout}", spec=spec.to_json()))
    return archs


def compute(spec: ArchSpec, img_size: int, images: int, epochs: int) -> float:
    """Training compute in MACs (forward; backward is a fixed multiple of it)."""
    return nas.count(spec, img_size).flops * images * epochs


def train_reference(archs: list[dict], args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Train every architecture's full-size model; results are written after each one."""
    results = json.loads(path.read_text()) if path.exists() else {}
    data = load_dataset(args.dataset, args.data_dir, img_size=args.ref_img, max_train=args.ref_train,
                        max_val=args.ref_val)
    deadline = time.monotonic() + args.time_limit
    for repeat in range(args.ref_repeats):
        for arch in archs:
            key = f"{arch['name']}#{repeat}"
            if key in results:
                continue
            if time.monotonic() > deadline:
                logging.warning("time limit reached: %d reference runs done", len(results))
                return results
            spec = ArchSpec.from_json(arch["spec"])
            start = time.perf_counter()
            torch.manual_seed(repeat)
            model = nas.build_model(spec, num_classes=data.num_classes, img_size=data.img_size)
            cfg = ProxyConfig(epochs=args.ref_epochs, batch_size=args.ref_batch, lr=args.ref_lr,
                              warmup_epochs=1.0, seed=repeat, device=args.device)
            try:
                top1 = train_and_evaluate(model, data, cfg).final_top1
            except Exception as err:  # a diverged reference is a result too: recorded, not fatal
                logging.warning("%s: %s", key, err)
                top1 = math.nan
            results[key] = dict(top1=top1, seconds=time.perf_counter() - start,
                                compute=compute(spec, args.ref_img, args.ref_train, args.ref_epochs),
                                settings=dict(img=args.ref_img, epochs=args.ref_epochs, train=args.ref_train,
                                              val=args.ref_val, batch=args.ref_batch, lr=args.ref_lr,
                                              device=args.device))
            path.write_text(json.dumps(results, indent=2))
            print(f"reference {key:<40} {top1:5.1f}%  {results[key]['seconds']:.0f} s", flush=True)
    return results


def proxy_and_scores(archs: list[dict], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The search's default proxy of every architecture, with zero-cost scores at its initialisation."""
    from trials.trial import ProxyScale, proxy_spec
    from trials.zero_cost import jacobian_covariance, naswot, synflow

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_dir, img_size=PROXY["img_size"], max_train=PROXY["train"],
                        max_val=PROXY["val"])
    images = data.train_x[:64]
    scale = ProxyScale(width=PROXY["width"], max_depth=PROXY["depth"])
    rows = {}
    for arch in archs:
        spec = ArchSpec.from_json(arch["spec"])
        small = proxy_spec(spec, scale)
        torch.manual_seed(0)  # the trial's initialisation (settings.proxy.seed)
        model = nas.build_model(small, num_classes=data.num_classes, img_size=data.img_size)
        start = time.perf_counter()
        scores = dict(synflow=math.log(synflow(model, tuple(images.shape[1:]))), naswot=naswot(model, images),
                      jacob_cov=jacobian_covariance(model, images))
        score_s = time.perf_counter() - start
        start = time.perf_counter()
        top1 = train_and_evaluate(model, data, ProxyConfig(epochs=args.proxy_epochs, lr=PROXY["lr"])).final_top1
        counted = nas.count(spec)
        rows[arch["name"]] = dict(proxy=top1, params=counted.params, flops=counted.flops, **scores,
                                  proxy_s=time.perf_counter() - start, scores_s=score_s,
                                  proxy_compute=compute(small, PROXY["img_size"], PROXY["train"], args.proxy_epochs))
        print(f"proxy {arch['name']:<40} {top1:5.1f}%  {rows[arch['name']]['proxy_s']:.0f} s "
              f"(scores {score_s:.2f} s)", flush=True)
    return rows


def correlations(rows: dict[str, dict[str, float]], predictors: list[str]) -> dict[str, dict[str, float]]:
    from scipy.stats import kendalltau, spearmanr

    names = [n for n, r in rows.items() if math.isfinite(r["reference"])]
    ref = [rows[n]["reference"] for n in names]
    out = {}
    for p in predictors:
        values = [rows[n][p] for n in names]
        rho, rho_p = spearmanr(values, ref)
        tau, tau_p = kendalltau(values, ref)
        out[p] = dict(spearman=float(rho), spearman_p=float(rho_p), kendall=float(tau), kendall_p=float(tau_p))
    return out


def prescreen(rows: dict[str, dict[str, float]], score: str, keep: float) -> dict[str, Any]:
    """Keep the best `keep` fraction by `score`: the mean reference accuracy of what is kept and of what
    is dropped (a useful screen drops the worse ones), and the proxy training time it saves."""
    names = sorted((n for n in rows if math.isfinite(rows[n]["reference"])), key=lambda n: -rows[n][score])
    kept, dropped = names[:max(1, round(keep * len(names)))], names[max(1, round(keep * len(names))):]
    mean = lambda group: sum(rows[n]["reference"] for n in group) / max(1, len(group))
    saved = sum(rows[n]["proxy_s"] for n in dropped) / sum(rows[n]["proxy_s"] for n in names)
    return dict(score=score, keep=keep, kept_reference=mean(kept), dropped_reference=mean(dropped),
                proxy_time_saved=saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", type=int, default=11, help="random architectures besides the 13 seeds")
    parser.add_argument("--draw-seed", type=int, default=0)
    parser.add_argument("--archs", type=Path, default=RESULTS / "fidelity_archs.json")
    parser.add_argument("--reference", type=Path, nargs="+", default=[RESULTS / "fidelity_reference.json"],
                        help="reference results (trained into the first file; the others are read)")
    parser.add_argument("--shard", default="0/1", help="K/N: train only every N-th architecture from the K-th")
    parser.add_argument("--archs-only", action="store_true")
    parser.add_argument("--reference-only", action="store_true")
    parser.add_argument("--dataset", default="synthetic", help="synthetic, imagefolder or cifar10")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cpu", help="device of the reference training")
    parser.add_argument("--ref-img", type=int, default=32)
    parser.add_argument("--ref-epochs", type=int, default=8)
    parser.add_argument("--ref-train", type=int, default=3000)
    parser.add_argument("--ref-val", type=int, default=1000)
    parser.add_argument("--ref-batch", type=int, default=64)
    parser.add_argument("--ref-lr", type=float, default=2e-3)
    parser.add_argument("--ref-repeats", type=int, default=1, help="training seeds of the reference")
    parser.add_argument("--time-limit", type=float, default=math.inf, help="seconds of reference training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--proxy-epochs", type=int, default=DEFAULT_PROXY_EPOCHS, help="a proxy variant to measure")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    RESULTS.mkdir(exist_ok=True)

    if not args.archs.exists():
        args.archs.write_text(json.dumps(draw_architectures(args.random, args.draw_seed), indent=2))
    archs = json.loads(args.archs.read_text())
    if args.archs_only:
        print(f"{len(archs)} architectures in {args.archs}")
        return
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    shard, shards = map(int, args.shard.split("/"))
    reference = train_reference(archs[shard::shards], args, args.reference[0])
    for path in args.reference[1:]:
        reference.update(json.loads(path.read_text()))
    if args.reference_only:
        return

    rows = proxy_and_scores(archs, args)
    for name, row in rows.items():
        runs = [r["top1"] for k, r in reference.items() if k.split("#")[0] == name]
        row["reference"] = sum(runs) / len(runs) if runs else math.nan
        row["compute_ratio"] = min((r["compute"] for k, r in reference.items() if k.split("#")[0] == name),
                                   default=math.nan) / row["proxy_compute"]
    predictors = ["proxy", "params", "flops", "synflow", "naswot", "jacob_cov"]
    table = correlations(rows, predictors)
    print(f"\n{'architecture':<40} {'reference %':>11} {'proxy %':>8} {'compute x':>9}")
    for name, row in rows.items():
        print(f"{name:<40} {row['reference']:>11.1f} {row['proxy']:>8.1f} {row['compute_ratio']:>9.0f}")
    print(f"\n{'predictor':<10} {'Spearman':>9} {'p':>7} {'Kendall':>8} {'p':>7}")
    for p, c in table.items():
        print(f"{p:<10} {c['spearman']:>9.3f} {c['spearman_p']:>7.3f} {c['kendall']:>8.3f} {c['kendall_p']:>7.3f}")
    noise = None
    pairs = [(reference.get(f"{a['name']}#0"), reference.get(f"{a['name']}#1")) for a in archs]
    pairs = [(a["top1"], b["top1"]) for a, b in pairs if a and b and math.isfinite(a["top1"] + b["top1"])]
    if len(pairs) >= 5:
        from scipy.stats import spearmanr
        noise = float(spearmanr(*zip(*pairs))[0])
        print(f"reference against itself (training seed 0 vs 1, {len(pairs)} architectures): Spearman {noise:.3f}")
    best_free = max(table[p]["spearman"] for p in ("params", "flops"))
    print(f"proxy beats the free baselines: {table['proxy']['spearman'] > best_free} "
          f"(proxy {table['proxy']['spearman']:.3f} vs best of #params/FLOPs {best_free:.3f}); "
          f"target rho >= 0.85: {'met' if table['proxy']['spearman'] >= 0.85 else 'NOT met'}")
    screens = [prescreen(rows, s, keep) for s in ("synflow", "naswot", "jacob_cov") for keep in (0.5, 0.75)]
    for s in screens:
        print(f"pre-screen by {s['score']:<9} keeping {s['keep']:.0%}: reference mean {s['kept_reference']:.1f}% kept "
              f"against {s['dropped_reference']:.1f}% dropped, {s['proxy_time_saved']:.0%} of proxy training saved")
    suffix = "" if args.proxy_epochs == DEFAULT_PROXY_EPOCHS else f"_{args.proxy_epochs}epochs"
    out = RESULTS / f"proxy_fidelity{suffix}.json"
    settings = sorted({json.dumps(r.get("settings")) for r in reference.values()})
    out.write_text(json.dumps(dict(machine=platform.machine(), threads=args.threads, date=time.strftime("%Y-%m-%d"),
                                   dataset=args.dataset, reference_settings=settings,
                                   proxy_settings={**PROXY, "epochs": args.proxy_epochs}, rows=rows, correlations=table,
                                   reference_self_spearman=noise, prescreen=screens), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
