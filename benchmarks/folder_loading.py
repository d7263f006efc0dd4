"""Time and peak memory of loading the default proxy sample from image folders of 10,000 and 100,000 files.

Generates (once; kept under --root and reused) class-per-folder JPEG folders: 10,000 images in 100 classes
and 100,000 in 1,000 classes, 64x64 each (a class colour, a blurred random pattern and noise). Then, in a
fresh child process per load, times `trials.data.load_imagefolder` drawing the search's default sample
(3,000 train, 1,000 val, 32 px) and reads the child's peak RSS (getrusage ru_maxrss, its decoding threads
included) minus its RSS just before the load (after the imports). Repeats alternate the folders; medians
are quoted. The files are in the page cache (just written or read by the previous repeat): warm-cache
figures. The target: the 100,000-image folder within 2x of the 10,000 one in both time and memory.
Run: python benchmarks/folder_loading.py [--root /tmp/folder_loading] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

_logger = logging.getLogger("folder_loading")

FOLDERS = ((10_000, 100), (100_000, 1_000))  # (images, classes)
IMG_PX = 64


def _write_class(args: tuple[Path, int, int, int]) -> None:
    """One class folder of n JPEG files; the seed makes the folder reproducible."""
    folder, label, n, seed = args
    rng = np.random.default_rng([seed, label])
    folder.mkdir(parents=True, exist_ok=True)
    colour = rng.integers(40, 216, 3)
    for i in range(n):
        pattern = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((IMG_PX, IMG_PX))
        arr = 0.5 * np.asarray(pattern) + 0.5 * colour + rng.normal(0, 8, (IMG_PX, IMG_PX, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"img_{i:05d}.jpg", quality=90)


def generate(root: Path, images: int, classes: int, workers: int) -> Path:
    """root/n{images}_c{classes}/cNNNN/img_NNNNN.jpg, unless a finished copy is already there."""
    folder = root / f"n{images}_c{classes}"
    done = folder / ".complete"
    if done.exists():
        return folder
    start = time.perf_counter()
    jobs = [(folder / f"c{c:04d}", c, images // classes, classes) for c in range(classes)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_class, jobs, chunksize=4))
    done.touch()
    _logger.info("generated %s in %.0f s", folder, time.perf_counter() - start)
    return folder


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(folder: str, img_size: int, max_train: int, max_val: int) -> None:
    """Runs in a fresh process: one load, then its figures as JSON on stdout."""
    from trials.data import load_imagefolder

    before = _rss_bytes()
    start = time.perf_counter()
    data = load_imagefolder(folder, img_size=img_size, max_train=max_train, max_val=max_val)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(json.dumps(dict(wall_s=wall, peak_delta_mb=(peak - before) / 2**20, peak_rss_mb=peak / 2**20,
                          train=len(data.train_y), val=len(data.val_y), classes=data.num_classes)))


def measure(folder: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(folder), "--img-size", str(args.img_size),
           "--max-train", str(args.max_train), "--max-val", str(args.max_val)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/folder_loading"),
                        help="where the folders are generated and kept (about 0.3 GB)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--max-train", type=int, default=3000)
    parser.add_argument("--max-val", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes generating images")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.img_size, args.max_train, args.max_val)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from common import write_result

    folders = {n: generate(args.root, n, c, args.workers) for n, c in FOLDERS}
    runs: dict[int, list[dict]] = {n: [] for n in folders}
    for rep in range(args.repeats):
        for n in (list(folders) if rep % 2 == 0 else list(folders)[::-1]):
            runs[n].append(measure(folders[n], args))
            _logger.info("%d images, repeat %d: %s", n, rep + 1, runs[n][-1])
    summary = {}
    print(f"\n{'folder':>22} {'classes kept':>12} {'wall s':>8} {'peak MB (delta)':>16} {'peak RSS MB':>12}")
    for (n, c), folder in zip(FOLDERS, folders.values()):
        r = runs[n]
        med = {k: statistics.median(x[k] for x in r) for k in ("wall_s", "peak_delta_mb", "peak_rss_mb")}
        summary[n] = dict(classes=c, classes_kept=r[0]["classes"], train=r[0]["train"], val=r[0]["val"],
                          runs=r, **med)
        print(f"{folder.name:>22} {r[0]['classes']:>12} {med['wall_s']:>8.2f} {med['peak_delta_mb']:>16.0f} "
              f"{med['peak_rss_mb']:>12.0f}")
    small, large = (summary[n] for n, _ in FOLDERS)
    ratios = {k: large[k] / small[k] for k in ("wall_s", "peak_delta_mb")}
    print(f"100k / 10k: time x{ratios['wall_s']:.2f}, memory x{ratios['peak_delta_mb']:.2f} (target: <= 2)")
    write_result("folder_loading", dict(cpus=os.cpu_count(), repeats=args.repeats, sample=dict(
        img_size=args.img_size, max_train=args.max_train, max_val=args.max_val), folders=summary, ratios=ratios))


if __name__ == "__main__":
    main()
