"""Zero-cost scores: rank a candidate at initialisation, in one or two passes, without training.

- synflow (Tanaka et al. 2020; Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021):
  with every weight replaced by its absolute value and an all-ones input, R = sum of the outputs;
  the score is sum over parameters of |theta * dR/dtheta|. Data-free; computed in float64 so deep
  stacks do not overflow.
- NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021): the binary codes
  of which units are active (input > 0) at every activation layer, for a batch of images; the score
  is log|det K| with K_ij = N_A - Hamming(c_i, c_j), high when the network tells the images apart.
- Jacobian covariance (the same paper's first version): the correlation of the input Jacobians of a
  batch; the score rewards Jacobians that are uncorrelated across images.

All three take the model built for training (they work on a copy and leave it untouched).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["synflow", "naswot", "jacobian_covariance", "ACTIVATIONS"]

# Activation modules whose input sign defines a unit's on/off state in NASWOT's codes.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)


def synflow(model: nn.Module, input_shape: tuple[int, int, int]) -> float:
    """Synaptic flow of `model` for one input of `input_shape` (C, H, W); larger is better."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    net(torch.ones(1, *input_shape, dtype=torch.float64)).sum().backward()
    with torch.no_grad():
        return float(sum((p * p.grad).abs().sum() for p in net.parameters() if p.grad is not None))


def activation_codes(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Binary codes (images x units): 1 where a unit's pre-activation is positive."""
    net = copy.deepcopy(model).eval()
    codes: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, inputs, _out: codes.append((inputs[0] > 0).flatten(1)))
             for m in net.modules() if isinstance(m, ACTIVATIONS)]
    if not hooks:
        raise ValueError("NASWOT needs activation modules (nn.GELU, nn.ReLU, ...) and the model has none")
    with torch.no_grad():
        net(images)
    for hook in hooks:
        hook.remove()
    return torch.cat(codes, dim=1).double()


def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """log|det K| of the activation-code kernel of a batch of `images`; larger is better."""
    codes = activation_codes(model, images)
    kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T  # units minus Hamming distance
    return float(torch.linalg.slogdet(kernel)[1])


def jacobian_covariance(model: nn.Module, images: torch.Tensor, eps: float = 1e-5) -> float:
    """-sum(log(v + eps) + 1 / (v + eps)) over the eigenvalues v of the input-Jacobian correlation
    matrix of a batch; larger (less correlated Jacobians) is better."""
    net = copy.deepcopy(model).eval()
    x = images.clone().requires_grad_(True)
    out = net(x)
    out.backward(torch.ones_like(out))
    jacobians = x.grad.flatten(1).double()
    eigenvalues = torch.linalg.eigvalsh(torch.corrcoef(jacobians))
    return float(-(torch.log(eigenvalues + eps) + 1 / (eigenvalues + eps)).sum())
