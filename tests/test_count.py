"""nas.count against independent counts: the built module's tensors, torch's FLOP counter, timm, the papers."""
import subprocess
import sys

import pytest
import timm
import torch
from timm.layers import set_fused_attn
from torch.utils.flop_counter import FlopCounterMode

import nas
from nas.counting import BLOCK_COUNTS
from nas.ops import BLOCKS
from nas.ops.attention import MultiHeadSelfAttention
from nas.ops.base import dense_convolutions
from nas.seed_table import seed_table
from nas.sparse import sparse_weights
from search_spaces import BLOCK_TYPES, SEEDS, ArchSpec, BlockSpec, HeadSpec, StageSpec, StemSpec


def torch_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """torch.utils.flop_counter's total for one forward pass (2 FLOPs per multiply-accumulate).

    Counted as `nas.count` counts: attention unfused (the counter sees nothing inside fused attention
    on the CPU), depthwise convs dense (the papers' K x K, not the cropped fast path), eval mode
    (DO-Conv runs its folded inference conv).
    """
    model.eval()  # outside the counter: entering eval mode folds DO-Conv's kernel once, not per image
    for m in model.modules():
        if isinstance(m, MultiHeadSelfAttention):
            m.fused_attn = False
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), dense_convolutions():
        model(x)
    return counter.get_total_flops()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_counts_match_the_built_model_and_torch(name):
    """Every seed (all four families) at 224 and 1000 classes, on the meta device (shapes only)."""
    spec = SEEDS[name]
    c = nas.count(spec)
    with torch.device("meta"):
        model = nas.build_model(spec)
        assert n_params(model) == c.params
        assert torch_flops(model, torch.randn(1, 3, 224, 224)) == 2 * c.flops


# Every block type alone, with its default parameters, on a 7 x 5 map (rows and columns kept apart),
# plus the striding ones (MBConv, MSA with and without relative position bias); the per-block rules are
# resolution-generic, so a small map checks them.
SINGLE_BLOCKS = [(t, {}, 1) for t in BLOCK_TYPES] + [("mbconv", {}, 2), ("msa", {}, 2), ("msa", {"rel_pos": True}, 2)]


@pytest.mark.parametrize("kind, params, stride", SINGLE_BLOCKS,
                         ids=[f"{t}{'-rel_pos' if p else ''}-s{s}" for t, p, s in SINGLE_BLOCKS])
def test_every_block_type_alone_counts_exactly(kind, params, stride):
    spec = BlockSpec(kind, params)
    dim_in, dim, out_hw = (32 if stride == 2 else 40), 40, (7, 5)
    block = BLOCKS[kind][0](dim_in, dim, spec.params, stride=stride, feat_size=out_hw)
    c = BLOCKS[kind][1](dim_in, dim, spec.params, out_hw, stride)
    assert n_params(block) == c.params
    assert torch_flops(block, torch.randn(1, dim_in, out_hw[0] * stride, out_hw[1] * stride)) == 2 * c.flops


def _one_block_type(block: BlockSpec, downsample: str = "patch", stem: StemSpec | None = None) -> ArchSpec:
    stages = tuple(StageSpec(depth=2, width=w, blocks=(block,), downsample=downsample if i else "none")
                   for i, w in enumerate((32, 48, 64, 96)))
    return ArchSpec(stem or StemSpec("patch"), stages, HeadSpec(norm=True, hidden=40)).validate()


BLOCK_CASES = {
    "convnext": _one_block_type(BlockSpec("convnext", {"kernel": 5})),
    "mbconv": ArchSpec(StemSpec("deep", width=24, kernel=3, norm="bn"), tuple(
        StageSpec(depth=2, width=w, blocks=(BlockSpec("mbconv"),), downsample="block") for w in (32, 48, 64, 96))),
    "lka": _one_block_type(BlockSpec("lka", {"kernel": 13, "dilation": 2}), "overlap"),
    "pelk": _one_block_type(BlockSpec("pelk", {"kernel": 13, "center": 3})).replace(sparsity=0.3),
    "sam": _one_block_type(BlockSpec("sam", {"heads": 4, "expand_ratio": 2}), "overlap"),
    "msa_coatnet": ArchSpec(StemSpec("deep", width=24, kernel=3, norm="bn"), tuple(
        StageSpec(depth=2, width=w, downsample="block",
                  blocks=(BlockSpec("msa", {"heads": 4, "rel_pos": True}),)) for w in (32, 48, 64, 96))),
    "msa_smt": _one_block_type(BlockSpec("msa", {"heads": 2, "v_conv": True, "mlp": "conv", "qkv_bias": False}),
                               "overlap", StemSpec("conv2", kernel=3)),
    "mixed": _one_block_type(BlockSpec("sam"), "overlap").replace(stages=(
        StageSpec(depth=3, width=32, blocks=(BlockSpec("convnext"), BlockSpec("lka")), downsample="none"),
        StageSpec(depth=3, width=48, blocks=(BlockSpec("sam"), BlockSpec("msa", {"heads": 4})), downsample="overlap"),
        StageSpec(depth=2, width=64, blocks=(BlockSpec("pelk", {"kernel": 9}), BlockSpec("mbconv")),
                  downsample="patch", norm_out=True),
        StageSpec(depth=1, width=96, blocks=(BlockSpec("msa", {"heads": 3, "rel_pos": True}),), downsample="block"),
    )),
}


@pytest.mark.parametrize("case", sorted(BLOCK_CASES))
def test_every_block_type_counts_exactly(case):
    spec = BLOCK_CASES[case]
    model = nas.build_model(spec, num_classes=10, img_size=64)
    c = nas.count(spec, img_size=64, num_classes=10)
    assert n_params(model) == c.params
    assert torch_flops(model, torch.randn(1, 3, 64, 64)) == 2 * c.flops


def test_nonzero_counts_match_the_masks():
    spec = BLOCK_CASES["pelk"]
    model = nas.build_model(spec, num_classes=10, img_size=64)
    # the masks' zeros: a weight can also be initialised at exactly 0 by chance (it happened once here)
    zeros = sum(int((m.parametrizations.weight[0].mask == 0).sum()) for m in sparse_weights(model))
    c = nas.count(spec, img_size=64, num_classes=10)
    assert c.params - c.nonzero_params == zeros
    assert 0.29 < zeros / sum(m.weight.numel() for m in sparse_weights(model)) <= 0.3


@pytest.mark.parametrize("index", [0, 1, 2])
def test_coatnet_matches_timm(index):
    """timm's CoAtNet (1x1 stride mode, the paper's) is a second implementation of the same network."""
    set_fused_attn(False)
    try:
        ref = timm.create_model(f"coatnet_{index}_224", conv_stride_mode="1x1", pretrained=False, device="meta")
    finally:
        set_fused_attn(True)
    c = nas.count(SEEDS[f"coatnet_{index}"])
    assert n_params(ref) == c.params
    assert torch_flops(ref, torch.randn(1, 3, 224, 224, device="meta")) == 2 * c.flops


def test_seeds_reproduce_papers_and_official_code():
    rows = seed_table()
    assert len(rows) == 13
    for row in rows:
        assert row["ok"], row
    by_name = {r["name"]: r for r in rows}
    # the reference figures, exact for parameters
    assert by_name["van_b2"]["params"] == 26_578_472
    assert by_name["smt_s"]["params"] == 22_550_952
    assert by_name["coatnet_2"]["params"] == 74_684_744


def test_count_scales_with_resolution_like_a_cnn():
    """A pure-conv net's MACs scale with the pixel count: a formula, not the code's own output."""
    spec = SEEDS["van_b0"]
    assert nas.count(spec, img_size=448).flops - nas.count(spec, img_size=448, num_classes=0).flops == 256 * 1000
    conv_macs = nas.count(spec, num_classes=0).flops
    assert nas.count(spec, img_size=448, num_classes=0).flops == 4 * conv_macs


def test_every_block_type_has_one_counting_rule():
    """nas.ops.BLOCKS pairs each module class with the torch-free rule of nas.counting."""
    assert set(BLOCK_COUNTS) == set(BLOCKS) == set(BLOCK_TYPES)
    assert all(BLOCKS[kind][1] is BLOCK_COUNTS[kind] for kind in BLOCK_TYPES)


def test_counting_and_budgets_import_no_torch_or_timm():
    """The command line checks budgets against the space's floor before anything heavy loads."""
    code = ("import sys; import nas.budget as b; from nas.count import count; from search_spaces import SEEDS; "
            "assert b.space_floor() > 0 and count(SEEDS['pelk_t']).flops > 0; "
            "print(sorted({'torch', 'timm'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
