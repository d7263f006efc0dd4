"""The search space: every seed is a point of it, samples are valid, every choice is reachable."""
import optuna
import pytest
from optuna.trial import FixedTrial

import nas
from nas.budget import BudgetError, fit_to_budget, parse_flops, parse_latency
from search_spaces import SEEDS
from search_spaces.space import PATTERNS, sample_spec, spec_to_params


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_maps_to_params_and_back(name):
    seed = SEEDS[name]
    assert sample_spec(FixedTrial(spec_to_params(seed))) == seed.replace(name="")


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_budget_scaled_seed_is_still_a_point_of_the_space(name):
    scaled, note = fit_to_budget(SEEDS[name], 5e9)
    assert nas.count(scaled).flops <= 5e9
    assert sample_spec(FixedTrial(spec_to_params(scaled))) == scaled.replace(name="")
    assert bool(note) == (nas.count(SEEDS[name]).flops > 5e9)


def test_scaling_shrinks_width_before_depth():
    spec = SEEDS["van_b3"]  # 8.9 G: narrower suffices, depths stay
    scaled, note = fit_to_budget(spec, 5e9)
    assert [s.depth for s in scaled.stages] == [s.depth for s in spec.stages]
    assert all(a.width <= b.width for a, b in zip(scaled.stages, spec.stages)) and "widths x" in note
    tight, note = fit_to_budget(SEEDS["pelk_b"], 5e9)  # 30.6 G: half width is not enough
    assert [s.width for s in tight.stages] == [64, 128, 256, 512]
    assert sum(s.depth for s in tight.stages) < sum(s.depth for s in SEEDS["pelk_b"].stages) and "depths" in note
    with pytest.raises(BudgetError, match="raise --budget"):
        fit_to_budget(SEEDS["pelk_b"], 1e8)


def test_random_samples_are_valid_and_reach_every_choice():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_patterns, seen_stems, downsamples = set(), set(), set()
    for _ in range(400):
        trial = study.ask()
        spec = sample_spec(trial)  # validates
        study.tell(trial, 0.0)
        seen_patterns.update(trial.params[f"s{i}_pattern"] for i in range(1, 5))
        seen_stems.add(spec.stem.type)
        downsamples.update(s.downsample for s in spec.stages)
    assert seen_patterns == set(PATTERNS)
    assert seen_stems == {"overlap", "patch", "conv2", "deep"}
    assert downsamples == {"none", "overlap", "patch", "block"}


def test_sampled_specs_build_and_count_exactly():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    built = 0
    while built < 4:
        spec = sample_spec(study.ask())
        c = nas.count(spec, img_size=64, num_classes=10)
        if c.params > 3e7:
            continue
        model = nas.build_model(spec, num_classes=10, img_size=64)
        assert sum(p.numel() for p in model.parameters()) == c.params
        built += 1


@pytest.mark.parametrize("text, value", [("5gflops", 5e9), ("5GFLOPs", 5e9), ("500mflops", 5e8), ("5e9", 5e9),
                                         ("5G", 5e9), ("2.5 GMACs", 2.5e9), ("800M", 8e8)])
def test_budget_forms(text, value):
    assert parse_flops(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "", "5 parsecs", "-1G", "0", "5gg"])
def test_malformed_budgets(text):
    with pytest.raises(BudgetError, match="e.g. 5gflops"):
        parse_flops(text)


def test_latency_budget_forms():
    assert parse_latency("50ms") == 50 and parse_latency("0.05s") == 50 and parse_latency("12") == 12
    with pytest.raises(BudgetError, match="50ms"):
        parse_latency("fast")
