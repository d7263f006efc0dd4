"""The conv variants of issue 5 against independent facts of their papers, the counter and the space."""
import math

import optuna
import pytest
import torch
import torch.nn.functional as F
from optuna.trial import FixedTrial
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

import nas
from nas.ops import BLOCKS
from nas.ops.base import dense_convolutions
from nas.ops.doconv import DOConv2d
from nas.ops.dynamic import CondConv2d, DynamicConv2d, anneal_temperature, set_temperature
from nas.ops.ghost import GhostModule
from nas.ops.involution import Involution2d
from nas.ops.resnest import SplitAttention
from nas.ops.scconv import SelfCalibratedConv
from nas.sparse import sparse_weights
from search_spaces import ArchSpec, BlockSpec, HeadSpec, SpecError, StageSpec, StemSpec
from search_spaces.space import PATTERNS, sample_spec, spec_to_params

NEW_TYPES = ("condconv", "dynconv", "ghost", "scconv", "doconv", "resnest", "involution")


def _randomise_bn(module: torch.nn.Module) -> None:
    """Non-trivial eval-mode BatchNorm statistics, so the checks do not pass by BN being an identity."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


# --- CondConv --------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 6])
def test_condconv_with_one_expert_is_a_plain_conv(groups):
    torch.manual_seed(0)
    cond = CondConv2d(6, 12, 3, experts=1, groups=groups)
    x = torch.randn(2, 6, 9, 9)
    plain = F.conv2d(x, cond.weight[0], padding=1, groups=groups)
    torch.testing.assert_close(cond(x, routing=torch.ones(2, 1)), plain, rtol=1e-5, atol=1e-5)
    # the learned routing scales the single kernel by sigmoid(GAP(x) R) per sample
    r = torch.sigmoid(cond.routing(x.mean((2, 3))))
    assert ((r > 0) & (r < 1)).all()
    torch.testing.assert_close(cond(x), plain * r.view(2, 1, 1, 1), rtol=1e-5, atol=1e-5)


def test_condconv_mixes_experts_per_sample():
    torch.manual_seed(0)
    cond = CondConv2d(4, 4, 3, experts=3, groups=4)
    x = torch.randn(2, 4, 7, 7)
    r = cond.routing_weights(x)
    assert r.shape == (2, 3) and not torch.allclose(r.sum(1), torch.ones(2))  # sigmoids, not a softmax
    for b in range(2):
        kernel = sum(r[b, e] * cond.weight[e] for e in range(3))
        expected = F.conv2d(x[b:b + 1], kernel, padding=1, groups=4)
        torch.testing.assert_close(cond(x)[b:b + 1], expected, rtol=1e-5, atol=1e-5)


# --- DynamicConv -----------------------------------------------------------------------------


def test_dynconv_attention_sums_to_one_and_high_temperature_is_uniform():
    torch.manual_seed(0)
    conv = DynamicConv2d(16, 16, 3, num_kernels=4, groups=16)
    assert conv.temperature == 30.0  # the paper's initial temperature
    x = torch.randn(3, 16, 8, 8) * 10
    conv.temperature = 1.0
    a = conv.attention(x)
    torch.testing.assert_close(a.sum(1), torch.ones(3))
    assert a.max() - a.min() > 1e-3
    conv.temperature = 1e6
    a = conv.attention(x)
    torch.testing.assert_close(a.sum(1), torch.ones(3))
    torch.testing.assert_close(a, torch.full_like(a, 0.25), rtol=0, atol=1e-4)
    # uniform attention: the conv of the mean kernel
    expected = F.conv2d(x, conv.weight.mean(0), padding=1, groups=16)
    torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-4)


def test_dynconv_temperature_setter_and_annealing():
    block = BLOCKS["dynconv"][0](16, 16, BlockSpec("dynconv").params)
    assert block.temperature == 30.0
    block.temperature = 7
    assert block.mixer.temperature == 7.0
    set_temperature(torch.nn.Sequential(block), 2.0)
    assert block.temperature == 2.0
    assert [anneal_temperature(e) for e in (0, 5, 10, 20)] == [30.0, 15.5, 1.0, 1.0]


# --- DO-Conv ---------------------------------------------------------------------------------


def _feature_composition(conv: DOConv2d, x: torch.Tensor) -> torch.Tensor:
    """The paper's other evaluation order: D applied to each input patch, then W (written out)."""
    b, c, h, w = x.shape
    k, g = conv.kernel, conv.groups
    patches = F.unfold(x, k, padding=k // 2).view(b, c, k * k, h * w)
    d = conv.D + conv.D_identity  # (C_in, k*k, D_mul)
    transformed = torch.einsum("bcml,cms->bcsl", patches, d)  # (B, C_in, D_mul, HW)
    transformed = transformed.view(b, g, c // g, conv.d_mul, h * w)
    weight = conv.W.view(g, conv.cout // g, c // g, conv.d_mul)
    return torch.einsum("bgjsl,gojs->bgol", transformed, weight).reshape(b, conv.cout, h, w)


@pytest.mark.parametrize("cin, cout, kernel, d_mul, groups", [(6, 6, 3, 9, 6), (4, 8, 3, 13, 1), (8, 8, 5, 50, 2)])
def test_doconv_folded_equals_unfolded(cin, cout, kernel, d_mul, groups):
    torch.manual_seed(0)
    conv = DOConv2d(cin, cout, kernel, d_mul, groups=groups)
    with torch.no_grad():
        conv.D.normal_()  # away from the identity initialisation
    x = torch.randn(2, cin, 11, 11)
    with torch.no_grad():
        unfolded = conv.train()(x)
        folded = conv.eval()(x)
        assert conv.folded_weight is not None and conv.folded_weight.shape == (cout, cin // groups, kernel, kernel)
        torch.testing.assert_close(folded, unfolded, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(unfolded, _feature_composition(conv, x), rtol=1e-4, atol=1e-4)
        plain = F.conv2d(x, conv.fold(), padding=kernel // 2, groups=groups)
        torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
    # training-time parameters are W and D; the identity and the folded kernel are not parameters
    assert {n for n, _ in conv.named_parameters()} == {"W", "D"}
    assert "folded_weight" not in conv.state_dict()
    conv.train()
    assert conv.folded_weight is None


def test_doconv_starts_as_the_conv_of_its_summed_tiles():
    torch.manual_seed(0)
    conv = DOConv2d(3, 5, 3, d_mul=18)  # D = [I I], so W' = W[..., :9] + W[..., 9:]
    x = torch.randn(1, 3, 6, 6)
    kernel = (conv.W[..., :9] + conv.W[..., 9:]).view(5, 3, 3, 3)
    torch.testing.assert_close(conv(x), F.conv2d(x, kernel, padding=1), rtol=1e-5, atol=1e-5)


# --- Ghost -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cout, ratio", [(16, 2), (17, 2), (20, 3), (41, 4)])
def test_ghost_channels_split_as_the_ratio_says(cout, ratio):
    torch.manual_seed(0)
    ghost = GhostModule(8, cout, ratio=ratio, kernel=1, dw_kernel=3).eval()
    _randomise_bn(ghost)
    primary, cheap = ghost.primary[0], ghost.cheap[0]
    init = math.ceil(cout / ratio)
    assert primary.out_channels == init and primary.in_channels == 8
    assert cheap.groups == init and cheap.in_channels == init and cheap.out_channels == init * (ratio - 1)
    x = torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        y = ghost(x)
        intrinsic = ghost.primary(x)
        assert y.shape == (2, cout, 7, 7)
        torch.testing.assert_close(y[:, :init], intrinsic)
        torch.testing.assert_close(y[:, init:], ghost.cheap(intrinsic)[:, :cout - init])
    # each ghost channel depends on one intrinsic channel only (cheap depthwise op)
    assert cheap.weight.shape[1] == 1


# --- Involution ------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, kernel, group_channels", [(16, 3, 4), (32, 7, 16), (24, 5, 24)])
def test_involution_with_a_constant_kernel_is_a_depthwise_conv(dim, kernel, group_channels):
    torch.manual_seed(0)
    inv = Involution2d(dim, kernel, group_channels=group_channels, reduction=4)
    g = inv.groups
    assert g == dim // group_channels
    w = torch.randn(g, kernel, kernel)
    with torch.no_grad():
        inv.span.weight.zero_()
        inv.span.bias.copy_(w.flatten())  # every position generates the same kernel per group
    x = torch.randn(2, dim, 9, 9)
    depthwise = w.repeat_interleave(dim // g, dim=0).unsqueeze(1)  # channel c uses group c // (dim / g)
    torch.testing.assert_close(inv(x), F.conv2d(x, depthwise, padding=kernel // 2, groups=dim),
                               rtol=1e-5, atol=1e-5)


def test_involution_kernels_vary_with_position():
    torch.manual_seed(0)
    inv = Involution2d(16, 3, group_channels=8)
    x = torch.randn(1, 16, 5, 5)
    h = inv.kernels(x)
    assert h.shape == (1, 2, 9, 5, 5) and not torch.allclose(h[..., 0, 0], h[..., 2, 3])
    # Y at one position, written out from the paper's formula
    i, j, c = 2, 3, 11
    padded = F.pad(x, (1, 1, 1, 1))
    window = padded[0, c, i:i + 3, j:j + 3].flatten()
    torch.testing.assert_close(inv(x)[0, c, i, j], (h[0, c // 8, :, i, j] * window).sum(), rtol=1e-5, atol=1e-5)


# --- ResNeSt split attention ------------------------------------------------------------------


def test_split_attention_with_radix_one_is_an_se_gate():
    torch.manual_seed(0)
    sa = SplitAttention(16, kernel=3, radix=1, cardinality=2, reduction=4).eval()
    _randomise_bn(sa)
    x = torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        u = sa.act(sa.bn0(sa.conv(x)))  # the single split
        gate = torch.sigmoid(sa.fc2(sa.act(sa.bn1(sa.fc1(u.mean((2, 3), keepdim=True))))))
        torch.testing.assert_close(sa(x), u * gate, rtol=1e-5, atol=1e-5)


def test_split_attention_softmaxes_across_the_radix():
    torch.manual_seed(0)
    sa = SplitAttention(16, kernel=3, radix=4, cardinality=2, reduction=4).eval()
    _randomise_bn(sa)
    x = torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        u = sa.splits(x)
        a = sa.attention(u)
        assert u.shape == (2, 4, 16, 7, 7) and a.shape == (2, 4, 16)
        torch.testing.assert_close(a.sum(1), torch.ones(2, 16))
        torch.testing.assert_close(sa(x), (u * a[..., None, None]).sum(1))
        # split r of cardinal group k comes from that group's input channels only
        x2 = x.clone()
        x2[:, 8:] = torch.randn(2, 8, 7, 7)
        torch.testing.assert_close(sa.splits(x2)[:, :, :8], u[:, :, :8])
    assert sa.conv.groups == 2 and sa.fc1.groups == 2 and sa.fc2.groups == 2


# --- SCConv ----------------------------------------------------------------------------------


def test_scconv_calibrates_one_half_with_the_pooled_view():
    torch.manual_seed(0)
    sc = SelfCalibratedConv(16, kernel=3, pooling=4).eval()
    _randomise_bn(sc)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        x1, x2 = x[:, :8], x[:, 8:]
        pooled = F.avg_pool2d(x1, 4)  # 8x8 -> 2x2
        up = F.interpolate(sc.k2(pooled), size=(8, 8), mode="bilinear", align_corners=False)
        y1 = sc.k4(sc.k3(x1) * torch.sigmoid(x1 + up))
        torch.testing.assert_close(sc(x), torch.relu(torch.cat([y1, sc.k1(x2)], 1)), rtol=1e-5, atol=1e-5)


# --- every block: shapes at awkward widths, counts ---------------------------------------------


@pytest.mark.parametrize("kind", NEW_TYPES)
@pytest.mark.parametrize("dim, hw", [(20, 2), (41, 7)])
def test_blocks_keep_shape_at_any_width(kind, dim, hw):
    block = BLOCKS[kind][0](dim, dim, BlockSpec(kind).params, drop_path=0.1)
    x = torch.randn(2, dim, hw, hw)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()


def _one_block_type(block: BlockSpec, **changes) -> ArchSpec:
    stages = tuple(StageSpec(depth=2, width=w, blocks=(block,), downsample="patch" if i else "none")
                   for i, w in enumerate((32, 48, 64, 96)))
    return ArchSpec(StemSpec("patch"), stages, HeadSpec(norm=True, hidden=40)).replace(**changes).validate()


CASES = {
    "condconv": _one_block_type(BlockSpec("condconv", {"kernel": 5, "experts": 4})),
    "dynconv": _one_block_type(BlockSpec("dynconv", {"kernel": 3, "num_kernels": 4})),
    "ghost": _one_block_type(BlockSpec("ghost", {"ratio": 3, "kernel": 3, "mlp_ratio": 2.0})),
    "scconv": _one_block_type(BlockSpec("scconv", {"kernel": 3, "pooling": 4})),
    "doconv": _one_block_type(BlockSpec("doconv", {"kernel": 5, "d_mul": 30})),
    "resnest": _one_block_type(BlockSpec("resnest", {"radix": 2, "cardinality": 2})),
    "involution": _one_block_type(BlockSpec("involution", {"kernel": 7, "group_channels": 16})),
    "mixed_sparse": _one_block_type(BlockSpec("ghost"), width_mult=1.3, sparsity=0.3, stages=(
        StageSpec(depth=2, width=32, blocks=(BlockSpec("condconv"), BlockSpec("involution")), downsample="none"),
        StageSpec(depth=2, width=48, blocks=(BlockSpec("dynconv"), BlockSpec("doconv")), downsample="overlap"),
        StageSpec(depth=2, width=64, blocks=(BlockSpec("scconv"), BlockSpec("resnest", {"radix": 1})),
                  downsample="patch"),
        StageSpec(depth=1, width=96, blocks=(BlockSpec("ghost"),), downsample="patch"),
    )),
}


def _torch_flops(model: torch.nn.Module, img_size: int) -> int:
    """torch.utils.flop_counter's total for one image (2 FLOPs per multiply-accumulate), depthwise convs dense."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), dense_convolutions():
        model(torch.randn(1, 3, img_size, img_size))
    return counter.get_total_flops()


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_conv_variant_counts_exactly(case):
    spec = CASES[case]
    model = nas.build_model(spec, num_classes=10, img_size=64).eval()  # eval: DO-Conv runs folded
    c = nas.count(spec, img_size=64, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == c.params
    assert _torch_flops(model, 64) == 2 * c.flops
    # the masks' zeros (a weight can also be initialised at exactly 0 by chance)
    zeros = sum(int((m.parametrizations.weight[0].mask == 0).sum())
                for m in sparse_weights(model) if parametrize.is_parametrized(m, "weight"))
    assert c.params - c.nonzero_params == zeros


def test_counting_conventions():
    """The documented rules, as formulas: dense conv once + aggregation matmul; folded DO-Conv; K*K*C*H*W."""
    hw, dim = (7, 7), 64
    base = BLOCKS["convnext"][1](dim, dim, {"kernel": 3, "mlp_ratio": 4.0, "layer_scale": 1e-6}, hw)
    # convnext = dw 3x3 with bias + LN + MLP; the variant blocks = mixer + BN + the same MLP
    rest = base.flops - 9 * dim * 49
    cond = BLOCKS["condconv"][1](dim, dim, BlockSpec("condconv", {"experts": 8}).params, hw)
    assert cond.flops == rest + 9 * dim * 49 + 8 * 9 * dim + dim * 8
    do = BLOCKS["doconv"][1](dim, dim, BlockSpec("doconv", {"d_mul": 18}).params, hw)
    assert do.flops == rest + 9 * dim * 49
    inv = BLOCKS["involution"][1](dim, dim, BlockSpec("involution", {"kernel": 7}).params, hw)
    assert inv.flops == rest + 49 * (dim * 16 + 16 * 49 * 4) + 49 * dim * 49


# --- spec and search space -----------------------------------------------------------------------


def test_validation_names_the_field_and_the_fix():
    with pytest.raises(SpecError, match=r"d_mul must be an integer >= kernel\*kernel = 25"):
        _one_block_type(BlockSpec("doconv", {"kernel": 5}))
    with pytest.raises(SpecError, match="ratio must be an integer >= 2"):
        _one_block_type(BlockSpec("ghost", {"ratio": 1}))
    with pytest.raises(SpecError, match="temperature must be a number > 0"):
        _one_block_type(BlockSpec("dynconv", {"temperature": 0}))
    assert _one_block_type(BlockSpec("resnest")).layout == "R-R-R-R"


def test_random_search_samples_every_conv_variant():
    for kind in NEW_TYPES:
        assert PATTERNS[kind] == (kind,)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[str] = set()
    for _ in range(300):
        trial = study.ask()
        spec = sample_spec(trial)  # validates
        study.tell(trial, 0.0)
        seen.update(b.type for s in spec.stages for b in s.blocks)
        if seen >= set(NEW_TYPES):
            break
    assert seen >= set(NEW_TYPES)


def _space_spec(types: tuple[str, ...], params: tuple[dict, ...]) -> ArchSpec:
    widths, downs = (64, 128, 320, 512), ("none", "overlap", "patch", "overlap")
    stages = tuple(StageSpec(depth=d, width=w, blocks=(BlockSpec(t, {**p, "mlp_ratio": 3.0}),), downsample=ds,
                             down_norm="bn" if ds == "overlap" else "ln", norm_out=True)
                   for t, p, w, d, ds in zip(types, params, widths, (2, 2, 6, 2), downs))
    return ArchSpec(StemSpec("patch"), stages, HeadSpec(norm=False, hidden=int(512 * 1.3)), width_mult=1.3).validate()


@pytest.mark.parametrize("spec", [
    _space_spec(("condconv", "dynconv", "ghost", "scconv"),
                ({"kernel": 5, "experts": 4}, {"kernel": 7, "num_kernels": 2},
                 {"ratio": 3, "kernel": 3, "dw_kernel": 5}, {"kernel": 5, "pooling": 2})),
    _space_spec(("doconv", "resnest", "involution", "convnext"),
                ({"kernel": 5, "d_mul": 50}, {"kernel": 5, "radix": 4, "cardinality": 2},
                 {"kernel": 9, "group_channels": 32, "reduction": 2}, {"kernel": 7})),
], ids=["first", "second"])
def test_conv_variant_specs_round_trip_through_the_space(spec):
    params = spec_to_params(spec)
    assert params["s1_condconv_kernel" if spec.stages[0].blocks[0].type == "condconv" else "s1_doconv_depth_mult"]
    assert sample_spec(FixedTrial(params)) == spec
