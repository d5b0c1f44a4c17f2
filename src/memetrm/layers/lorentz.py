"""Lorentz-model (hyperboloid) operations, following MERU (Desai et al., 2023).

A point is stored by its *space* components ``x`` (..., D) only; the time component is
implied by the hyperboloid constraint ``<x, x>_L = -1/c``, i.e. ``x_time = sqrt(1/c + |x|^2)``.
Every transcendental function gets its argument clamped into its domain (``acosh`` >= 1,
``asin``/``acos`` in (-1, 1), ``sinh`` bounded) so that forward values and gradients stay
finite at the edges. Callers should run these in fp32.
"""

from __future__ import annotations

import math

import torch

Curv = float | torch.Tensor
EPS = 1e-8
#: ``sinh`` input cap (MERU's): the time component stays below ~2**15, where fp32 is exact enough.
MAX_SINH_INPUT = math.asinh(2**15)


def time_component(x: torch.Tensor, curv: Curv = 1.0) -> torch.Tensor:
    """``x_time`` of space components ``x`` (..., D) -> (...)."""
    return torch.sqrt(1 / curv + (x * x).sum(-1))


def lorentz_inner(x: torch.Tensor, y: torch.Tensor, curv: Curv = 1.0) -> torch.Tensor:
    """Element-wise Lorentzian inner product ``<x, y>_L = <xs, ys> - xt * yt`` -> (...)."""
    return (x * y).sum(-1) - time_component(x, curv) * time_component(y, curv)


def pairwise_inner(x: torch.Tensor, y: torch.Tensor, curv: Curv = 1.0) -> torch.Tensor:
    """All-pairs Lorentzian inner products, (N, D) x (M, D) -> (N, M)."""
    xt = time_component(x, curv).unsqueeze(-1)
    yt = time_component(y, curv).unsqueeze(-1)
    return x @ y.T - xt @ yt.T


def _acosh_dist(c_xyl: torch.Tensor, curv: float | torch.Tensor) -> torch.Tensor:
    return torch.acosh(torch.clamp(c_xyl, min=1 + EPS)) / curv**0.5


def dist(x: torch.Tensor, y: torch.Tensor, curv: Curv = 1.0) -> torch.Tensor:
    """Geodesic distance of corresponding points: ``acosh(-c <x, y>_L) / sqrt(c)``."""
    return _acosh_dist(-curv * lorentz_inner(x, y, curv), curv)


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, curv: Curv = 1.0) -> torch.Tensor:
    """All-pairs geodesic distances (N, M); negated, these are MERU's contrastive logits."""
    return _acosh_dist(-curv * pairwise_inner(x, y, curv), curv)


def dist_to_origin(x: torch.Tensor, curv: Curv = 1.0) -> torch.Tensor:
    """Distance from the hyperboloid's origin; MERU's measure of how *generic* an embedding is."""
    return _acosh_dist(curv**0.5 * time_component(x, curv), curv)


def exp_map0(v: torch.Tensor, curv: Curv = 1.0) -> torch.Tensor:
    """Lift a tangent vector at the origin onto the hyperboloid; returns space components.

    ``x_space = sinh(sqrt(c) |v|) v / (sqrt(c) |v|)``; the ``sinh`` input is clamped below
    (so ``v = 0`` has a gradient) and above (so the time component does not overflow).
    """
    rc_norm = curv**0.5 * torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    sinh_in = torch.clamp(rc_norm, min=EPS, max=MAX_SINH_INPUT)
    return torch.sinh(sinh_in) * v / torch.clamp(rc_norm, min=EPS)


def half_aperture(x: torch.Tensor, curv: Curv = 1.0,
                  min_radius: float = 0.1) -> torch.Tensor:
    """Half-angle of the entailment cone at ``x``: ``asin(2K / (sqrt(c) |x|))``, in (0, pi/2).

    Near the origin (generic concepts) the cone is wide; far away (specific ones) it narrows.
    ``K = min_radius`` keeps cones defined only outside a small ball around the origin.
    """
    asin_in = 2 * min_radius / (torch.linalg.vector_norm(x, dim=-1) * curv**0.5 + EPS)
    return torch.asin(torch.clamp(asin_in, min=-1 + EPS, max=1 - EPS))


def oxy_angle(x: torch.Tensor, y: torch.Tensor, curv: Curv = 1.0) -> torch.Tensor:
    """Exterior angle at ``x`` between the ray origin -> ``x`` (extended) and the geodesic to ``y``.

    ``y`` lies in ``x``'s entailment cone iff ``oxy_angle(x, y) <= half_aperture(x)``.
    """
    xt = time_component(x, curv)
    yt = time_component(y, curv)
    c_xyl = curv * ((x * y).sum(-1) - xt * yt)
    numer = yt + c_xyl * xt
    denom = torch.sqrt(torch.clamp(c_xyl**2 - 1, min=EPS))
    acos_in = numer / (torch.linalg.vector_norm(x, dim=-1) * denom + EPS)
    return torch.acos(torch.clamp(acos_in, min=-1 + EPS, max=1 - EPS))
