"""Large depthwise convolutions: PyTorch's direct conv against the FFT path and the chosen path.

Per shape the seeds use (batch 1 inference and batch 8 training, kernels 3..101), the median time of
F.conv2d, of the FFT path and of `nas.ops.base.depthwise_conv2d` (crop + rule), forward and
forward+backward, with the achieved dense multiply-accumulates per second against the machine's
measured matmul rate. Then PeLK-T's peripheral convs: F.conv2d on the materialised kernel, the dense
path (materialise + `depthwise_conv2d`), the block-sum path (`peripheral_conv2d`) and the module's
choice (x = dense / chosen); and PeLK-T's whole-model latency with and without the fast paths, NCHW
and channels_last.
Run: python benchmarks/large_kernel.py [--threads 1] [--repeats 5] [--quick (PeLK rows only)]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import median_ms, write_result
from torch.nn.utils import parametrize

import nas
from nas.ops.base import dense_convolutions, depthwise_conv2d, fft_depthwise_conv2d
from nas.ops.pelk import PeripheralConv, peripheral_conv2d
from search_spaces import SEEDS

# (channels, kernel, map size): PeLK-T's partial convs at 224 (124*3/8=46 ... ), VAN/SMT/ConvNeXt sizes
SHAPES = [(46, 51, 56), (93, 49, 28), (187, 47, 14), (374, 13, 7), (46, 101, 56), (64, 31, 56), (128, 31, 28),
          (96, 7, 56), (192, 7, 28), (64, 5, 56), (32, 9, 56), (64, 3, 56), (256, 21, 14), (46, 51, 8)]
# PeLK-T's peripheral convs at 224 (channels int(width * 1.3 * 3/8), centre 5) and one proxy map
PELK_SHAPES = [(46, 51, 56), (93, 49, 28), (187, 47, 14), (374, 13, 7), (46, 51, 8)]
PELK_CENTER = 5


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


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each function in milliseconds, the functions run in turn, so that the load of a
    shared machine falls on all of them alike (paths within 10-30% of each other are compared)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def measure_peripheral(c: int, k: int, hw: int, repeats: int, batch: int) -> dict:
    """One PeripheralConv: F.conv2d (NCHW) on the materialised kernel, the dense path (materialise the whole
    kernel + `depthwise_conv2d`), the block-sum path, and the module's choice."""
    conv = PeripheralConv(c, k, PELK_CENTER)
    kernel = conv.dense_kernel().detach()
    x1 = torch.randn(1, c, hw, hw)
    with torch.inference_mode():
        fwd = interleaved_ms(dict(
            direct=lambda: F.conv2d(x1, kernel, conv.bias, padding=k // 2, groups=c),
            dense=lambda: depthwise_conv2d(x1, conv.dense_kernel(), conv.bias),
            block_sum=lambda: peripheral_conv2d(x1, conv.weight, conv.bias, k, PELK_CENTER),
            chosen=lambda: conv(x1)), repeats)
    xb = torch.randn(batch, c, hw, hw, requires_grad=True)
    fb = interleaved_ms(dict(
        direct=lambda: F.conv2d(xb, conv.dense_kernel(), conv.bias, padding=k // 2, groups=c).sum().backward(),
        dense=lambda: depthwise_conv2d(xb, conv.dense_kernel(), conv.bias).sum().backward(),
        block_sum=lambda: peripheral_conv2d(xb, conv.weight, conv.bias, k, PELK_CENTER).sum().backward(),
        chosen=lambda: conv(xb).sum().backward()), repeats)
    return dict(channels=c, kernel=k, size=hw, **{f"{name}_ms": ms for name, ms in fwd.items()},
                chosen_vs_dense=fwd["dense"] / fwd["chosen"], **{f"{name}_fb_ms": ms for name, ms in fb.items()},
                chosen_vs_dense_fb=fb["dense"] / fb["chosen"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-train", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="only the PeLK rows and the PeLK-T latencies")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_rate(args.threads)
    print(f"matmul rate: {peak:.1f} G MAC/s ({args.threads} thread(s))")
    rows = []
    if not args.quick:
        print(f"{'C':>4} {'K':>4} {'HW':>4} | {'direct':>8} {'fft':>8} {'chosen':>8} {'x':>6} | "
              f"{'direct fb':>9} {'chosen fb':>9} {'x':>6} | {'GMAC/s':>7}")
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
    print(f"\nPeLK-T peripheral convs (centre {PELK_CENTER}), ms; inference batch 1 | forward+backward batch "
          f"{args.batch_train}; x = dense / chosen")
    print(f"{'C':>4} {'K':>4} {'HW':>4} | {'direct':>8} {'dense':>8} {'blocks':>8} {'chosen':>8} {'x':>6} | "
          f"{'direct':>8} {'dense':>8} {'blocks':>8} {'chosen':>8} {'x':>6}")
    pelk_rows = []
    for c, k, hw in PELK_SHAPES:
        r = measure_peripheral(c, k, hw, args.repeats, args.batch_train)
        pelk_rows.append(r)
        print(f"{c:>4} {k:>4} {hw:>4} | {r['direct_ms']:>8.2f} {r['dense_ms']:>8.2f} {r['block_sum_ms']:>8.2f} "
              f"{r['chosen_ms']:>8.2f} {r['chosen_vs_dense']:>5.2f}x | {r['direct_fb_ms']:>8.1f} "
              f"{r['dense_fb_ms']:>8.1f} {r['block_sum_fb_ms']:>8.1f} {r['chosen_fb_ms']:>8.1f} "
              f"{r['chosen_vs_dense_fb']:>5.2f}x")
    pelk = pelk_latency(args.threads, max(5, args.repeats))
    print(f"\nPeLK-T at 224, batch 1, ms: (a) direct NCHW {pelk['direct_nchw_ms']:.0f}, (b) direct channels_last "
          f"{pelk['direct_cl_ms']:.0f}, (c) chosen NCHW {pelk['chosen_nchw_ms']:.0f}, (d) chosen channels_last "
          f"{pelk['chosen_cl_ms']:.0f}, (e) chosen channels_last, masks folded {pelk['chosen_cl_folded_ms']:.0f}; "
          f"a/c {pelk['a_over_c']:.2f}x, a/d {pelk['a_over_d']:.2f}x, b/d {pelk['b_over_d']:.2f}x, "
          f"a/e {pelk['a_over_e']:.2f}x (target 3x)")
    write_result("large_kernel", dict(matmul_gmacs=peak, rows=rows, peripheral_rows=pelk_rows, pelk_t=pelk))


def pelk_latency(threads: int, runs: int) -> dict:
    """PeLK-T's latency at 224, batch 1, inference, runs interleaved: (a) fast paths off (PyTorch's direct
    convs, the baseline), NCHW input; (b) fast paths off, channels_last; (c) the chosen paths, NCHW; (d) the
    chosen paths, channels_last; (e) as (d) with the sparsity masks folded into the weights, as a deployed
    model stores them and as the search measures it (`measure_latency` computes the masks once)."""
    torch.set_num_threads(threads)
    nchw = nas.build_model(SEEDS["pelk_t"]).eval()
    cl = copy.deepcopy(nchw)
    # channels_last for the 4-D weights only (below): the positional embeddings are 3-D
    folded = nas.build_model(SEEDS["pelk_t"]).eval()  # built apart: folding edits its modules' classes
    for module in list(folded.modules()):
        if parametrize.is_parametrized(module):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    for model in (cl, folded):
        for param in model.parameters():
            if param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 224, 224)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def direct(model: torch.nn.Module, inputs: torch.Tensor) -> None:
        with dense_convolutions():
            model(inputs)

    with torch.inference_mode():
        ms = interleaved_ms(dict(direct_nchw=lambda: direct(nchw, x), direct_cl=lambda: direct(cl, x_cl),
                                 chosen_nchw=lambda: nchw(x), chosen_cl=lambda: cl(x_cl),
                                 chosen_cl_folded=lambda: folded(x_cl)), runs, warmup=2)
    return dict(**{f"{name}_ms": v for name, v in ms.items()}, a_over_c=ms["direct_nchw"] / ms["chosen_nchw"],
                a_over_d=ms["direct_nchw"] / ms["chosen_cl"], b_over_d=ms["direct_cl"] / ms["chosen_cl"],
                a_over_e=ms["direct_nchw"] / ms["chosen_cl_folded"])


if __name__ == "__main__":
    main()
