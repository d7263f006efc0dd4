"""Large depthwise convolutions: PyTorch's direct conv against the FFT path and the chosen path.

Per shape the seeds use (batch 1 inference and batch 8 training, kernels 3..101), the median time of
F.conv2d, of the FFT path and of `nas.ops.base.depthwise_conv2d` (crop + rule), forward and
forward+backward, with the achieved dense multiply-accumulates per second against the machine's
measured matmul rate. Run: python benchmarks/large_kernel.py [--threads 1] [--repeats 5]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import median_ms, write_result

import nas
from nas.ops.base import dense_convolutions, depthwise_conv2d, fft_depthwise_conv2d
from search_spaces import SEEDS
from trials.latency import measure_latency

# (channels, kernel, map size): PeLK-T's partial convs at 224 (124*3/8=46 ... ), VAN/SMT/ConvNeXt sizes
SHAPES = [(46, 51, 56), (93, 49, 28), (187, 47, 14), (374, 13, 7), (46, 101, 56), (64, 31, 56), (128, 31, 28),
          (96, 7, 56), (192, 7, 28), (64, 5, 56), (32, 9, 56), (64, 3, 56), (256, 21, 14), (46, 51, 8)]


def matmul_rate(threads: int) -> float:
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    ms = median_ms(lambda: a @ b, 10)
    return 512 ** 3 / ms / 1e6  # G MAC/s


def measure_shape(c: int, k: int, hw: int, repeats: int, batch: int) -> dict:
    w = torch.randn(c, 1, k, k, requires_grad=True)
    x1 = torch.randn(1, c, hw, hw)
    with torch.inference_mode():
        direct = median_ms(lambda: F.conv2d(x1, w, padding=k // 2, groups=c), repeats)
        fft = median_ms(lambda: fft_depthwise_conv2d(x1, w, None), repeats)
        chosen = median_ms(lambda: depthwise_conv2d(x1, w, None), repeats)
    xb = torch.randn(batch, c, hw, hw, requires_grad=True)
    direct_fb = median_ms(lambda: F.conv2d(xb, w, padding=k // 2, groups=c).sum().backward(), max(2, repeats // 2))
    chosen_fb = median_ms(lambda: depthwise_conv2d(xb, w, None).sum().backward(), max(2, repeats // 2))
    macs = c * k * k * hw * hw
    return dict(channels=c, kernel=k, size=hw, direct_ms=direct, fft_ms=fft, chosen_ms=chosen, speedup=direct / chosen,
                direct_fb_ms=direct_fb, chosen_fb_ms=chosen_fb, speedup_fb=direct_fb / chosen_fb,
                chosen_gmacs=macs / chosen / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-train", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_rate(args.threads)
    print(f"matmul rate: {peak:.1f} G MAC/s ({args.threads} thread(s))")
    print(f"{'C':>4} {'K':>4} {'HW':>4} | {'direct':>8} {'fft':>8} {'chosen':>8} {'x':>6} | "
          f"{'direct fb':>9} {'chosen fb':>9} {'x':>6} | {'GMAC/s':>7}")
    rows = []
    for c, k, hw in SHAPES:
        row = measure_shape(c, k, hw, args.repeats, args.batch_train)
        rows.append(row)
        print(f"{c:>4} {k:>4} {hw:>4} | {row['direct_ms']:>8.2f} {row['fft_ms']:>8.2f} {row['chosen_ms']:>8.2f} "
              f"{row['speedup']:>5.1f}x | {row['direct_fb_ms']:>9.1f} {row['chosen_fb_ms']:>9.1f} "
              f"{row['speedup_fb']:>5.1f}x | {row['chosen_gmacs']:>7.1f}")
    big = [r for r in rows if r["kernel"] >= 31 and r["size"] >= 14]
    print(f"K >= 31 (maps >= 14): min speed-up {min(r['speedup'] for r in big):.1f}x inference, "
          f"{min(r['speedup_fb'] for r in big):.1f}x training (target 5x); "
          f"slowest relative to direct anywhere: {min(r['speedup'] for r in rows):.2f}x (target >= 1)")
    pelk = pelk_latency(args.threads)
    print(f"PeLK-T at 224, batch 1: direct {pelk['direct_ms']:.0f} ms, chosen {pelk['chosen_ms']:.0f} ms "
          f"-> {pelk['speedup']:.1f}x (target 3x)")
    write_result("large_kernel", dict(matmul_gmacs=peak, rows=rows, pelk_t=pelk))


def pelk_latency(threads: int) -> dict:
    """PeLK-T's latency with the chosen paths and with PyTorch's direct depthwise convs."""
    model = nas.build_model(SEEDS["pelk_t"])
    chosen = measure_latency(model, threads=threads, warmup=2, runs=7).median_ms
    with dense_convolutions():
        direct = measure_latency(model, threads=threads, warmup=2, runs=7).median_ms
    return dict(direct_ms=direct, chosen_ms=chosen, speedup=direct / chosen)


if __name__ == "__main__":
    main()
