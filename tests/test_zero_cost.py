"""Zero-cost scores against closed forms: Euler's theorem for synflow, hand-built Hamming kernels for
NASWOT, identical Jacobians for the Jacobian covariance."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import nas
from search_spaces import SEEDS
from trials.fidelity import PROXY
from trials.zero_cost import jacobian_covariance, naswot, synflow


def test_synflow_of_a_two_layer_net_is_twice_its_path_norm():
    """Bias-free Linear-ReLU-Linear with |W| and a ones input: R = 1'|W2||W1|1 is homogeneous of degree
    1 in each layer, so sum(theta * dR/dtheta) = 2R (Euler)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 7, bias=False), nn.ReLU(), nn.Linear(7, 5, bias=False))
    w1, w2 = (net[i].weight.detach().abs().double().numpy() for i in (1, 3))
    path_norm = np.ones(5) @ w2 @ w1 @ np.ones(12)
    assert synflow(net, (3, 2, 2)) == pytest.approx(2 * path_norm, rel=1e-12)


def test_synflow_leaves_the_model_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    before = [p.detach().clone() for p in net.parameters()]
    synflow(net, (3, 2, 2))
    assert all(torch.equal(a, b) and b.dtype == torch.float32 for a, b in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())


def test_naswot_is_the_log_determinant_of_the_hamming_kernel():
    """A ReLU on the raw inputs: the codes are the inputs' sign patterns, chosen here."""
    codes = np.array([[1, 1, 0, 0, 1], [1, 0, 1, 0, 0], [0, 0, 0, 1, 1], [1, 1, 1, 1, 0]])
    images = torch.tensor(np.where(codes, 1.0, -1.0), dtype=torch.float32).view(4, 5, 1, 1)
    units = codes.shape[1]
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    expected = np.linalg.slogdet(units - hamming)[1]
    assert naswot(nn.Sequential(nn.Flatten(), nn.ReLU()), images) == pytest.approx(expected, rel=1e-12)


def test_naswot_prefers_a_net_that_separates_its_inputs():
    """Two identical images make the kernel singular (log|det| = -inf); distinct ones do not."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    images = torch.randn(4, 8, 1, 1)
    same = images.clone()
    same[1] = same[0]
    assert math.isfinite(naswot(net, images))
    assert naswot(net, same) == -math.inf


def test_naswot_needs_activation_modules():
    with pytest.raises(ValueError, match="activation modules"):
        naswot(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.randn(3, 4, 1, 1))


def test_jacobian_covariance_of_identical_jacobians_has_the_closed_form():
    """A linear map gives every image the same Jacobian: the correlation matrix is all ones, with
    eigenvalues N and N-1 zeros."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    n, eps = 5, 1e-5
    expected = -((math.log(n + eps) + 1 / (n + eps)) + (n - 1) * (math.log(eps) + 1 / eps))
    assert jacobian_covariance(net, torch.randn(n, 6, 1, 1), eps) == pytest.approx(expected, rel=1e-4)


def test_scores_run_on_every_seed_proxy():
    torch.manual_seed(0)
    images = torch.randn(8, 3, 32, 32)
    for name in ("van_b0", "pelk_t", "coatnet_0", "smt_t"):
        model = nas.build_model(PROXY.with_(width=0.25, max_depth=1).model_spec(SEEDS[name]), num_classes=5,
                                img_size=32)
        assert synflow(model, (3, 32, 32)) > 0
        assert math.isfinite(naswot(model, images))
        assert math.isfinite(jacobian_covariance(model, images))
