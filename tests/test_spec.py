"""The architecture spec: JSON round trip, validation errors that name the field and the fix."""
import json

import pytest

from search_spaces import SEEDS, ArchSpec, BlockSpec, SpecError, StageSpec, StemSpec


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_json_round_trip_is_identity(name):
    spec = SEEDS[name]
    text = spec.to_json()
    json.loads(text)  # plain JSON
    assert ArchSpec.from_json(text) == spec
    assert ArchSpec.from_dict(json.loads(text)).to_dict() == spec.to_dict()


def test_layout_strings_follow_the_papers():
    assert SEEDS["coatnet_0"].layout == "C-C-T-T"
    assert SEEDS["smt_t"].layout == "S-S-SM-M"
    assert SEEDS["van_b2"].layout == "L-L-L-L"
    assert SEEDS["pelk_t"].layout == "P-P-P-P"


def test_mixed_stage_cycles_its_pattern():
    stage = SEEDS["smt_t"].stages[2]
    assert [stage.block(i).type for i in range(4)] == ["sam", "msa", "sam", "msa"]


def _smt_dict():
    return SEEDS["smt_t"].to_dict()


def _error(data) -> str:
    with pytest.raises(SpecError) as info:
        ArchSpec.from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_heads_must_divide_width():
    data = _smt_dict()
    data["stages"][2]["width"] = 320
    data["stages"][2]["blocks"][1]["heads"] = 6
    assert "stage 3" in (msg := _error(data)) and "width 320 is not divisible by 6 heads" in msg


def test_unknown_block_type_lists_the_choices():
    data = _smt_dict()
    data["stages"][0]["blocks"][0]["type"] = "lstm"
    msg = _error(data)
    assert "lstm" in msg and "sam" in msg and "stage 1" in msg


def test_unknown_block_parameter_lists_allowed_ones():
    data = _smt_dict()
    data["stages"][0]["blocks"][0]["kernel"] = 5  # SAM's kernels come from its heads
    msg = _error(data)
    assert "'kernel'" in msg and "heads" in msg


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["stages"].pop(), "exactly 4 stages"),
    (lambda d: d["stages"][1].update(downsample="none"), "stride 4, it must be at 8"),
    (lambda d: d["stages"][0].update(depth=0), "depth must be an integer >= 1"),
    (lambda d: d["stages"][0].update(foo=1), "unknown field 'foo'"),
    (lambda d: d.update(sparsity=1.0), "sparsity: must be in [0, 1)"),
    (lambda d: d["stem"].update(type="giant"), "stem: unknown type 'giant'"),
    (lambda d: d["stages"][3]["blocks"][0].update(mlp="moe"), "mlp must be one of"),
])
def test_malformed_specs_fail_with_one_line(mutate, expected):
    data = _smt_dict()
    mutate(data)
    assert expected in _error(data)


def test_kernel_and_dilation_checks():
    data = SEEDS["van_b0"].to_dict()
    data["stages"][0]["blocks"][0]["kernel"] = 0
    assert "integer >= 1" in _error(data)
    pelk = SEEDS["pelk_t"].to_dict()
    pelk["stages"][0]["blocks"][0]["kernel"] = 50
    assert "odd integer" in _error(pelk)
    data["stages"][0]["blocks"][0].update(kernel=23, dilation=3)  # ceil(23/3) = 8, even
    assert "ceil(kernel/dilation) odd" in _error(data)


def test_bad_json_is_a_spec_error():
    with pytest.raises(SpecError, match="not valid JSON"):
        ArchSpec.from_json("{stages: ")


def test_stem_width_must_match_a_non_downsampling_first_stage():
    spec = SEEDS["van_b0"].replace(stem=StemSpec("overlap", width=48, kernel=7, norm="bn"))
    with pytest.raises(SpecError, match="stem: width 48 must match stage 1 width 32"):
        spec.validate()


def test_block_defaults_fill_unset_parameters():
    block = BlockSpec("lka", {"kernel": 33})
    assert block.params["dilation"] == 3 and block.kernel == 33
    stage = StageSpec(depth=1, width=64, blocks=(block,), downsample="none")
    stage.validate("stage 1", 1.0)
