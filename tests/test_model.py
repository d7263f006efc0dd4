"""Every seed builds, runs at 224 and 64, trains a step; the timm-style interface behaves as timm's."""
import pytest
import torch
import torch.nn.functional as F

import nas
from search_spaces import SEEDS

# The smallest seed of each family runs at 224 in every test run; the rest too with `-m slow`.
SMALLEST = {"van_b0", "pelk_t", "coatnet_0", "smt_t"}
FULL_SIZE = [pytest.param(n, marks=() if n in SMALLEST else pytest.mark.slow) for n in sorted(SEEDS)]


@pytest.mark.parametrize("name", FULL_SIZE)
def test_seed_runs_at_224(name):
    model = nas.build_model(SEEDS[name], num_classes=10).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 10)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_forward_and_one_training_step(name):
    """Every seed at 64x64: forward, backward through every parameter, one optimiser step."""
    torch.manual_seed(0)
    model = nas.build_model(SEEDS[name], num_classes=10)
    model.train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 7])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    head_before = model.get_classifier().weight.detach().clone()
    loss = F.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)  # gradient reaches the whole net
    opt.step()
    assert not torch.equal(head_before, model.get_classifier().weight)


def test_timm_interface():
    model = nas.build_model(SEEDS["smt_t"], num_classes=5).eval()
    x = torch.randn(2, 3, 96, 128)
    feats = model.forward_features(x)
    assert feats.shape == (2, 512, 3, 4)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert model.forward_head(feats).shape == (2, 5)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 512)
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)


@pytest.mark.parametrize("name", ["coatnet_0", "van_b0", "pelk_t"])
def test_feature_info_describes_the_stage_outputs(name):
    model = nas.build_model(SEEDS[name]).eval()
    x = torch.randn(1, 3, 64, 64)
    outs = []
    with torch.no_grad():
        x = model.stem(x)
        for stage in model.stages:
            x = stage(x)
            outs.append(x)
    assert [i["reduction"] for i in model.feature_info] == [4, 8, 16, 32]
    for info, out in zip(model.feature_info, outs):
        assert out.shape[1] == info["num_chs"] and out.shape[-1] == 64 // info["reduction"]


def test_spec_json_builds_the_same_network():
    spec = SEEDS["smt_t"]
    torch.manual_seed(1)
    a = nas.build_model(spec, num_classes=4).eval()
    torch.manual_seed(1)
    b = nas.build_model(spec.to_json(), num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(a(x), b(x))
