"""One trial's wall time against a bare PyTorch loop training the same model on the same data.

Both train the default proxy of a seed (same init, batches, AdamW + cosine + label smoothing, one
evaluation per epoch); the trial adds its reporting and bookkeeping. A second comparison includes the
latency measurement of the full-size model on both sides. Runs alternate, medians are quoted.
Run: python benchmarks/trial_overhead.py [--seed-name smt_t] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

import nas
from nas.budget import fit_to_budget
from search_spaces import SEEDS
from trials.data import load_dataset
from trials.fidelity import PROXY
from trials.latency import measure_latency
from trials.train import ProxyConfig
from trials.trial import TrialSettings, run_trial


def bare_loop(spec, data, cfg: ProxyConfig) -> float:
    """What a user would write by hand; returns the final held-out top-1."""
    torch.manual_seed(cfg.seed)
    model = nas.build_model(spec, num_classes=data.num_classes, img_size=data.img_size)
    torch.manual_seed(cfg.seed)
    order = torch.Generator().manual_seed(cfg.seed)
    steps = len(data.train_y) // cfg.batch_size
    decay = [p for p in model.parameters() if p.ndim > 1]
    other = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.lr)
    total = cfg.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(s / total, 1))))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    top1 = 0.0
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(data.train_y), generator=order)
        for i in range(steps):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss = loss_fn(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.inference_mode():
            top1 = (model(data.val_x).argmax(1) == data.val_y).float().mean().item() * 100
    return top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed-name", default="smt_t")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    defaults = TrialSettings(threads=args.threads, latency_threads=args.threads)
    spec, _ = fit_to_budget(SEEDS[args.seed_name], 5e9)
    train, val = PROXY.default_sample("synthetic")
    data = load_dataset("synthetic", img_size=PROXY.img_size, max_train=train, max_val=val)
    proxy = PROXY.model_spec(spec)
    times = {"trial": [], "bare": [], "trial+latency": [], "bare+latency": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        bare_loop(proxy, data, defaults.proxy)
        times["bare"].append(time.perf_counter() - start)
        start = time.perf_counter()
        full = nas.build_model(spec)
        measure_latency(full, threads=args.threads, warmup=defaults.latency_warmup, runs=defaults.latency_runs)
        latency_s = time.perf_counter() - start
        times["bare+latency"].append(times["bare"][-1] + latency_s)
        start = time.perf_counter()
        result = run_trial(spec, data, defaults, report=lambda m: None)
        times["trial+latency"].append(time.perf_counter() - start)
        times["trial"].append(times["trial+latency"][-1] - latency_s)
        print(f"  run: bare {times['bare'][-1]:.2f}s, trial {times['trial+latency'][-1]:.2f}s "
              f"(latency part {latency_s:.2f}s), acc {result['accuracy']:.1f}")
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["trial+latency"] / med["bare+latency"]
    print(f"{'':<16}{'median s':>10}")
    for k, v in med.items():
        print(f"{k:<16}{v:>10.2f}")
    print(f"trial / bare (both with latency): {ratio:.3f} (target <= 1.05) -> {'met' if ratio <= 1.05 else 'MISSED'}")
    out = Path(__file__).parent / "results" / "trial_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(machine=platform.machine(), threads=args.threads, seed=args.seed_name,
                                   medians=med, ratio=ratio, runs=times), indent=2))


if __name__ == "__main__":
    main()
