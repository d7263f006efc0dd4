"""Operators against independent facts of their papers."""
import math

import pytest
import torch
import torch.nn.functional as F

from nas.ops import LargeKernelAttention, PeripheralConv, ScaleAwareModulation, peripheral_half_grid
from nas.ops.attention import MultiHeadSelfAttention
from nas.ops.base import dense_convolutions
from nas.ops.lka import lka_kernels
from nas.ops.pelk import peripheral_conv2d, use_block_sum
from nas.sparse import apply_sparsity


def test_peripheral_grid_matches_the_paper():
    # PeLK prints the half-grid of K=51 with a 5x5 centre from the edge inward: [9, 8, 4, 2, 1, 1, 1].
    assert peripheral_half_grid(51, 5)[::-1] == [9, 8, 4, 2, 1, 1, 1]
    assert 2 * len(peripheral_half_grid(51, 5)) - 1 == 13  # a 13x13 shared kernel
    for k in (7, 13, 31, 47, 51, 101):
        assert sum(peripheral_half_grid(k, 5)) == k // 2 + 1


def test_peripheral_params_grow_logarithmically():
    rows = []
    for k in (7, 13, 21, 31, 51, 71, 101):
        conv = PeripheralConv(1, k, 5)
        rows.append((k, conv.weight.numel()))
    # the shared kernel side is 2 * (centre radius + 1 + number of doubling cells) - 1 <= 2 * (3 + log2 K) + 1
    for k, params in rows:
        assert params <= (2 * (3 + math.log2(k)) + 1) ** 2
    assert rows[-1][1] / 101 ** 2 < 0.03  # over 97% fewer parameters than a dense 101x101 kernel
    # doubling K adds a constant number of rows to the shared kernel side
    sides = {k: int(math.isqrt(p)) for k, p in rows}
    assert sides[101] - sides[51] <= 2 and sides[51] - sides[21] <= 4


def test_materialised_kernel_is_constant_over_each_sharing_block():
    conv = PeripheralConv(3, 51, 5)
    kernel = conv.dense_kernel()
    edges = [0]
    for size in peripheral_half_grid(51, 5)[::-1][:-1]:  # edge inward, without the centre pixel
        edges.append(edges[-1] + size)
    bounds = [(a, b) for a, b in zip(edges, edges[1:])] + [(25, 26)]
    bounds += [(51 - b, 51 - a) for a, b in bounds[:-1]]
    for y0, y1 in bounds:
        for x0, x1 in bounds:
            cell = kernel[:, 0, y0:y1, x0:x1]
            assert torch.equal(cell, cell[:, :1, :1].expand_as(cell))
    assert len(torch.unique(kernel[0])) == 13 * 13


def test_positional_embedding_enters_as_the_paper_writes():
    torch.manual_seed(0)
    conv = PeripheralConv(2, 7, 3)
    x = torch.randn(1, 2, 9, 9)
    h = torch.randn(2, 7, 7)
    # Y(x, y) = sum_ij w(i, j) * (X(x+i, y+j) + h(i, j)), written out with unfold over the zero-padded map
    w = conv.dense_kernel()[:, 0]
    patches = F.unfold(x, 7, padding=3).view(1, 2, 49, 81)
    expected = ((patches + h.view(1, 2, 49, 1)) * w.view(1, 2, 49, 1)).sum(2).view(1, 2, 9, 9)
    expected = expected + conv.bias.view(1, 2, 1, 1)
    torch.testing.assert_close(conv(x, h), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel, dilation", [(21, 3), (33, 3), (13, 2), (9, 1)])
def test_lka_receptive_field(kernel, dilation):
    local, spatial = lka_kernels(kernel, dilation)
    expected = local + (spatial - 1) * dilation  # composition of the two depthwise convs
    assert expected >= kernel
    lka = LargeKernelAttention(1, kernel, dilation)
    size = expected + 10
    x = torch.randn(1, 1, size, size, requires_grad=True)
    lka(x)[0, 0, size // 2, size // 2].backward()
    reach = (x.grad[0, 0].abs() > 0).nonzero()
    assert reach[:, 0].max() - reach[:, 0].min() + 1 == expected


def test_sam_heads_use_growing_kernels_and_one_channel_per_head_groups():
    sam = ScaleAwareModulation(32, heads=4, expand_ratio=2)
    assert [c.kernel_size[0] for c in sam.convs] == [3, 5, 7, 9]
    assert sam.aggregate.groups == 8 and sam.aggregate.in_channels // sam.aggregate.groups == 4
    # head 2's first channel lands at position 2 of aggregation group 0 (channel g * heads + head)
    with torch.no_grad():
        for conv in sam.convs:
            conv.weight.zero_()
            conv.bias.zero_()
        sam.convs[2].bias[0] = 1.0
    seen = {}
    sam.aggregate.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    sam(torch.randn(1, 5, 5, 32))
    assert seen["x"].abs().sum((0, 2, 3)).nonzero().flatten().tolist() == [2]


def test_fused_and_explicit_attention_agree():
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, 32, heads=4, rel_pos=True, v_conv=True, feat_size=(6, 6))
    x = torch.randn(2, 6, 6, 16)
    fused = attn(x)
    attn.fused_attn = False
    torch.testing.assert_close(attn(x), fused, rtol=1e-4, atol=1e-5)
    # relative position bias: resized for another map size, exact at the size it was made for
    assert attn.rel_pos(6, 6).shape == (4, 36, 36)
    assert attn(torch.randn(1, 4, 8, 16)).shape == (1, 4, 8, 32)


@pytest.mark.parametrize("kernel, dilation, size", [(7, 3, 8), (51, 1, 8), (47, 1, 14), (13, 1, 7), (21, 2, 5),
                                                    (3, 1, 1), (9, 1, 32)])
def test_cropped_depthwise_conv_is_exact(kernel, dilation, size):
    """The fast path skips taps that only see padding: same outputs and gradients as F.conv2d."""
    from nas.ops.base import depthwise_conv2d

    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    w = torch.randn(3, 1, kernel, kernel, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    g = torch.randn(2, 3, size, size)
    fast = depthwise_conv2d(x, w, b, dilation)
    ref = F.conv2d(x, w, b, padding=(kernel // 2) * dilation, dilation=dilation, groups=3)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    for a, r in zip(torch.autograd.grad((fast * g).sum(), (x, w, b)), torch.autograd.grad((ref * g).sum(), (x, w, b))):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# PeLK's stage kernels at 224 px (maps 56/28/14/7) and on proxy maps (8/4/2/1), plus non-square maps
@pytest.mark.parametrize("kernel, height, width", [(51, 56, 56), (49, 28, 28), (47, 14, 14), (13, 7, 7), (51, 8, 8),
                                                   (49, 4, 4), (47, 2, 2), (13, 1, 1), (51, 14, 9), (47, 3, 16),
                                                   (13, 1, 6)])
@pytest.mark.parametrize("path", ["block_sum", "chosen"])
def test_peripheral_conv_is_exact(kernel, height, width, path):
    """Box sums over the sharing cells, and the module's chosen path, against F.conv2d on the materialised
    kernel: outputs and gradients w.r.t. input, shared weight, bias and positional embedding."""
    torch.set_num_threads(1)  # the NCHW reference's backward slows down 100x on two threads of a busy machine
    torch.manual_seed(0)
    conv = PeripheralConv(3, kernel, 5)
    x = torch.randn(2, 3, height, width, requires_grad=True)
    h = torch.randn(3, kernel, kernel, requires_grad=True)
    g = torch.randn(2, 3, height, width)
    inputs = (x, conv.weight, conv.bias, h)
    if path == "block_sum":
        with torch.inference_mode():  # a first call in inference mode must not break the training call
            peripheral_conv2d(x, conv.weight, None, kernel, 5)
        ours = peripheral_conv2d(x, conv.weight, conv.bias + conv.pos_embed_bias(conv.weight, h), kernel, 5)
    else:
        ours = conv(x, h)
    dense = conv.weight[:, :, conv.index][:, :, :, conv.index]  # as the paper writes it, not `dense_kernel()`
    ref = F.conv2d(x, dense, conv.bias + (dense[:, 0] * h).sum((1, 2)), padding=kernel // 2, groups=3)
    assert relative_error(ours, ref) < 1e-4
    for a, r in zip(torch.autograd.grad((ours * g).sum(), inputs), torch.autograd.grad((ref * g).sum(), inputs)):
        assert relative_error(a, r) < 1e-4


def test_block_sum_sees_the_sparse_mask_and_stays_off_for_flop_counting():
    torch.manual_seed(0)
    conv = PeripheralConv(4, 51, 5)
    apply_sparsity(conv, 0.4)
    assert (conv.weight == 0).sum() == int(conv.weight.numel() * 0.4)
    x = torch.randn(1, 4, 28, 28)
    with torch.inference_mode():
        assert use_block_sum(51, 5, 28, 28, training=False)
        ref = F.conv2d(x, conv.dense_kernel(), conv.bias, padding=25, groups=4)
        assert relative_error(conv(x), ref) < 1e-4
        with dense_convolutions():
            assert not use_block_sum(51, 5, 28, 28, training=False)


def test_algorithm_rules_apply_on_the_cpu_only(monkeypatch):
    """The cropping, FFT and box-sum rules were measured on a CPU; other devices get the dense conv with the
    whole kernel (the meta device stands in for CUDA: same shapes, no data)."""
    import nas.ops.base as base
    import nas.ops.pelk as pelk

    used = []
    for module, name in ((base, "fft_depthwise_conv2d"), (pelk, "peripheral_conv2d")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name: used.append(_n) or _f(*a))
    conv2d = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda x, w, *a, **k: used.append(tuple(w.shape[-2:])) or conv2d(x, w, *a, **k))
    weight = torch.randn(8, 1, 31, 31, requires_grad=True)
    peripheral = PeripheralConv(8, 51, 5)
    for device, size, expected in (("cpu", 16, ["fft_depthwise_conv2d", "peripheral_conv2d", (13, 13)]),
                                   ("meta", 16, [(31, 31), (51, 51)]), ("meta", 6, [(31, 31), (51, 51)])):
        used.clear()
        x = torch.randn(2, 8, size, size, device=device, requires_grad=True)  # training, large kernels
        assert base.depthwise_conv2d(x, weight.to(device), None).shape == x.shape
        assert peripheral.to(device)(x).shape == x.shape
        if device == "cpu":
            x = torch.randn(2, 8, 7, 7)  # inference on a 7 px map: the kernel cropped to the taps in reach
            assert base.depthwise_conv2d(x, weight, None).shape == x.shape
        assert used == expected, device


def test_shared_layers_compute_what_timms_namesakes_compute():
    """nas.ops.layers stands in for timm.layers in the workers (no torchvision import): same parameter
    names, same outputs, same random draws."""
    import timm.layers as tl
    import timm.models._features as tf

    from nas.model import feature_take_indices
    from nas.ops import layers

    torch.manual_seed(0)
    ours, theirs = layers.Mlp(8, 32), tl.Mlp(8, 32, act_layer=torch.nn.GELU)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 5, 8)
    assert torch.equal(ours(x), theirs(x))

    ours, theirs = layers.LayerNorm2d(6), tl.LayerNorm2d(6)
    ours.weight.data.normal_(), ours.bias.data.normal_()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 5, 7)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6) and ours.eps == theirs.eps == 1e-6

    x = torch.randn(64, 3, 4, 4)
    outputs = []
    for drop in (layers.DropPath(0.3), tl.DropPath(0.3)):
        torch.manual_seed(1)
        outputs.append(drop.train()(x))
    assert torch.equal(*outputs) and 0 < (outputs[0][:, 0, 0, 0] == 0).sum() < 64
    assert torch.equal(layers.DropPath(0.3).eval()(x), x)

    draws = []
    for init in (layers.trunc_normal_, tl.trunc_normal_):
        torch.manual_seed(2)
        draws.append(init(torch.empty(1000), std=0.02))
    assert torch.equal(*draws) and draws[0].abs().max() <= 2.0

    for indices in (None, 2, [0, -1], (1, 2)):
        assert feature_take_indices(4, indices) == tf.feature_take_indices(4, indices)
    tl.set_fused_attn(False)
    try:
        assert not layers.use_fused_attn()
    finally:
        tl.set_fused_attn(True)
    assert layers.use_fused_attn()
