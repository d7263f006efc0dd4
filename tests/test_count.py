"""nas.count against independent counts: the built module's tensors, torch's FLOP counter, timm, the papers."""
import pytest
import timm
import torch
from timm.layers import set_fused_attn
from torch.utils.flop_counter import FlopCounterMode

import nas
from nas.ops.attention import MultiHeadSelfAttention
from nas.ops.base import dense_convolutions
from nas.seed_table import seed_table
from nas.sparse import sparse_weights
from search_spaces import SEEDS, ArchSpec, BlockSpec, HeadSpec, StageSpec, StemSpec


def torch_macs(model: torch.nn.Module, img_size: int, device: str = "cpu") -> float:
    """torch.utils.flop_counter's count (2 per multiply-accumulate) / 2, attention unfused."""
    for m in model.modules():
        if isinstance(m, MultiHeadSelfAttention):
            m.fused_attn = False  # the counter does not see inside fused attention on the CPU
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), dense_convolutions():  # the papers' dense K x K convention
        model(torch.randn(1, 3, img_size, img_size, device=device))
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_counts_match_the_built_model_and_torch(name):
    spec = SEEDS[name]
    c = nas.count(spec)
    with torch.device("meta"):
        model = nas.build_model(spec)
        assert sum(p.numel() for p in model.parameters()) == c.params
        assert torch_macs(model, 224, "meta") == pytest.approx(c.flops, rel=0.01)


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
    assert sum(p.numel() for p in model.parameters()) == c.params
    assert torch_macs(model, 64) == pytest.approx(c.flops, rel=0.01)


def test_nonzero_counts_match_the_masks():
    spec = BLOCK_CASES["pelk"]
    model = nas.build_model(spec, num_classes=10, img_size=64)
    zeros = sum(int((m.weight == 0).sum()) for m in sparse_weights(model))
    c = nas.count(spec, img_size=64, num_classes=10)
    assert c.params - c.nonzero_params == zeros
    assert 0.29 < zeros / sum(m.weight.numel() for m in sparse_weights(model)) <= 0.3


@pytest.mark.parametrize("index", [0, 1, 2])
def test_coatnet_matches_timm(index):
    """timm's CoAtNet (1x1 stride mode, the paper's) is a second implementation of the same network."""
    set_fused_attn(False)
    try:
        ref = timm.create_model(f"coatnet_{index}_224", conv_stride_mode="1x1", pretrained=False)
    finally:
        set_fused_attn(True)
    c = nas.count(SEEDS[f"coatnet_{index}"])
    assert c.params == sum(p.numel() for p in ref.parameters())
    if index == 0:
        assert c.flops == pytest.approx(torch_macs(ref, 224), rel=0.01)


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
