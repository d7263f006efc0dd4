"""Trials on a GPU: the default proxy's training on `--device` against one CPU core, and the trials per
hour of N concurrent trials sharing that device.

Runs the trial's training path without Ray (a lent GPU machine has torch and no package registry; the
trial workers need neither timm nor Ray): the seeds fitted to the default 5 GFLOPs budget, each
trained as the search trains its proxy (`trials.fidelity.PROXY`, the default synthetic data). Latency
is left out: it has its own device (`--latency-device`).

Part 1, per seed: training time and top-1 on `--device` and on the CPU at `--cpu-threads` threads.
Part 2, per N in `--concurrent`: N processes share the device, each with cores / N CPU threads, each
once set up, training the seeds in turn until `--seconds` have passed; trials per hour = finished /
wall.
Run: PYTHONPATH=. python benchmarks/gpu_trials.py [--device cuda] [--seeds van_b0,pelk_t,coatnet_0,smt_t]
     [--concurrent 1,2,4,8] [--seconds 120] [--skip-cpu]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch
from common import write_result

import nas
from nas.budget import fit_to_budget
from search_spaces import SEEDS
from search_spaces.spec import ArchSpec
from trials.data import TrialData, load_dataset
from trials.fidelity import PROXY
from trials.train import ProxyConfig, train_and_evaluate

BUDGET = 5e9  # the default search's


def proxy_specs(names: list[str]) -> dict[str, str]:
    """The proxies of the named seeds as the default search trains them, as JSON."""
    return {name: PROXY.model_spec(fit_to_budget(SEEDS[name], BUDGET)[0]).to_json() for name in names}


def default_data() -> TrialData:
    train, val = PROXY.default_sample("synthetic")
    return load_dataset("synthetic", img_size=PROXY.img_size, seed=0, max_train=train, max_val=val)


def train_proxy(spec_json: str, data: TrialData, device: str, threads: int) -> tuple[float, float]:
    """Train one proxy as a trial does; returns (seconds, final top-1 %)."""
    torch.manual_seed(0)
    model = nas.build_model(ArchSpec.from_json(spec_json), num_classes=data.num_classes, img_size=data.img_size)
    start = time.perf_counter()
    result = train_and_evaluate(model, data, ProxyConfig.from_fidelity(PROXY, seed=0, num_threads=threads,
                                                                        device=device))
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result.final_top1


def _worker(specs: list[str], device: str, threads: int, seconds: float, ready: mp.Barrier, done: mp.Queue) -> None:
    data, finished = default_data(), 0
    torch.zeros(1, device=device)  # the CUDA context: set-up, not a trial's cost
    ready.wait()
    deadline = time.time() + seconds
    while time.time() < deadline:
        train_proxy(specs[finished % len(specs)], data, device, threads)
        finished += 1
    done.put(finished)


def trials_per_hour(specs: list[str], device: str, workers: int, seconds: float) -> dict:
    """`workers` processes, set up (imports, data, CUDA context), share `device` for `seconds`; the trials
    they finish (the last one each may run past `seconds`), per hour of wall time."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    done, ready = ctx.Queue(), ctx.Barrier(workers + 1)
    procs = [ctx.Process(target=_worker, args=(specs[k:] + specs[:k], device, threads, seconds, ready, done))
             for k in range(workers)]
    for p in procs:
        p.start()
    ready.wait()
    start = time.time()
    finished = sum(done.get() for _ in procs)
    wall = time.time() - start
    for p in procs:
        p.join()
    return dict(workers=workers, threads_each=threads, finished=finished, wall_s=wall,
                trials_per_hour=3600.0 * finished / wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seeds", default="van_b0,pelk_t,coatnet_0,smt_t")
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--concurrent", default="1,2,4,8", help="comma-separated numbers of concurrent trials")
    parser.add_argument("--seconds", type=float, default=120.0, help="wall time of each concurrency level")
    parser.add_argument("--skip-cpu", action="store_true", help="part 2 only")
    args = parser.parse_args()
    specs = proxy_specs(args.seeds.split(","))
    data = default_data()
    if args.device == "cuda":
        print(f"{torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores, torch {torch.__version__}")

    rows = []
    if not args.skip_cpu:
        train_proxy(next(iter(specs.values())), data, args.device, os.cpu_count() or 1)  # warm-up (CUDA context)
        print(f"{'seed':12s} {args.device + ' s':>9s} {'cpu s':>9s} {'x':>6s} {'top1 ' + args.device:>11s} "
              f"{'top1 cpu':>9s}")
        for name, spec in specs.items():
            dev_s, dev_top1 = train_proxy(spec, data, args.device, os.cpu_count() or 1)
            cpu_s, cpu_top1 = train_proxy(spec, data, "cpu", args.cpu_threads)
            rows.append(dict(seed=name, device_s=dev_s, cpu_s=cpu_s, speedup=cpu_s / dev_s, device_top1=dev_top1,
                             cpu_top1=cpu_top1))
            print(f"{name:12s} {dev_s:9.1f} {cpu_s:9.1f} {cpu_s / dev_s:6.1f} {dev_top1:11.1f} {cpu_top1:9.1f}")
        print(f"median speed-up over {args.cpu_threads} CPU thread(s): "
              f"{statistics.median(r['speedup'] for r in rows):.1f}x")

    shared = []
    for n in (int(v) for v in args.concurrent.split(",")):
        shared.append(trials_per_hour(list(specs.values()), args.device, n, args.seconds))
        print(f"{n} concurrent trial(s) on {args.device}: {shared[-1]['finished']} finished in "
              f"{shared[-1]['wall_s']:.0f} s, {shared[-1]['trials_per_hour']:.0f} trials/hour")
    write_result(f"gpu_trials_{args.device}", dict(device=args.device, per_seed=rows, concurrent=shared))


if __name__ == "__main__":
    main()
