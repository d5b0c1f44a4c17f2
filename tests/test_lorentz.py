"""Lorentz-model operations against closed forms (float64 so tolerances can be tight)."""

from __future__ import annotations

import math

import pytest
import torch

from memetrm.layers import lorentz as L

CURVS = [0.1, 1.0, 3.0]


def points(n: int, d: int = 8, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("curv", CURVS)
def test_distance_to_self_is_zero(curv: float) -> None:
    x = L.exp_map0(points(32), curv)
    assert L.dist(x, x, curv).max() < 1e-3  # acosh's clamp at 1 + 1e-8 costs ~1.4e-4
    assert L.pairwise_dist(x, x, curv).diagonal().max() < 1e-3
    off = L.pairwise_dist(x, x, curv) + torch.eye(32)
    assert off.min() > 1e-2


@pytest.mark.parametrize("curv", CURVS)
def test_exp_map_lands_on_hyperboloid(curv: float) -> None:
    v = points(64, scale=1.0)  # below the sinh cap (sqrt(c) |v| < 11.09) for every curvature
    x = L.exp_map0(v, curv)
    target = torch.full((64,), -1 / curv, dtype=torch.float64)
    assert torch.allclose(L.lorentz_inner(x, x, curv), target, rtol=1e-6)
    # closed form: the geodesic from the origin along v has length |v|
    assert torch.allclose(L.dist_to_origin(x, curv), v.norm(dim=-1), rtol=1e-6)
    origin = torch.zeros(1, 8, dtype=torch.float64)
    assert torch.allclose(L.pairwise_dist(origin, x, curv)[0], v.norm(dim=-1), rtol=1e-6)


@pytest.mark.parametrize("curv", CURVS)
def test_distance_along_a_geodesic_matches_closed_form(curv: float) -> None:
    """On one axis, exp_map0(a e1) and exp_map0(b e1) are |a - b| apart."""
    a = torch.tensor([[-1.5], [0.3], [2.0]], dtype=torch.float64)
    b = torch.full((3, 1), 0.7, dtype=torch.float64)
    pad = torch.zeros(3, 4, dtype=torch.float64)
    x = L.exp_map0(torch.cat([a, pad], 1), curv)
    y = L.exp_map0(torch.cat([b, pad], 1), curv)
    assert torch.allclose(L.dist(x, y, curv), (a - b).abs().squeeze(1), rtol=1e-6)


@pytest.mark.parametrize("curv", CURVS)
def test_triangle_inequality(curv: float) -> None:
    x, y, z = (L.exp_map0(points(200, seed=s, scale=1.5), curv) for s in (1, 2, 3))
    lhs = L.dist(x, z, curv)
    rhs = L.dist(x, y, curv) + L.dist(y, z, curv)
    assert (lhs <= rhs + 1e-9).all()
    # and it is not trivially loose: a point on the x-z geodesic (the origin, for antipodal
    # tangent vectors) makes it an equality
    v = points(10, seed=4)
    p, q, o = L.exp_map0(v, curv), L.exp_map0(-2 * v, curv), torch.zeros_like(v)
    assert torch.allclose(L.dist(p, q, curv), L.dist(p, o, curv) + L.dist(o, q, curv), rtol=1e-6)


@pytest.mark.parametrize("curv", CURVS)
def test_half_aperture_bounds(curv: float) -> None:
    norms = torch.logspace(-3, 3, 200, dtype=torch.float64)
    x = norms.unsqueeze(1) * torch.nn.functional.normalize(points(1), dim=-1)
    ap = L.half_aperture(x, curv, min_radius=0.1)
    assert ((ap > 0) & (ap < math.pi / 2)).all()
    assert (ap[1:] <= ap[:-1]).all(), "cones must narrow as points move away from the origin"
    far = norms > 0.2 / curv**0.5
    assert torch.allclose(ap[far], torch.asin(0.2 / (norms[far] * curv**0.5)), rtol=1e-6)


@pytest.mark.parametrize("curv", CURVS)
def test_oxy_angle_on_a_ray(curv: float) -> None:
    """Further out on x's own ray is inside x's cone (angle 0); back toward the origin is pi."""
    v = points(16, seed=5)
    x = L.exp_map0(v, curv)
    ahead, behind = L.exp_map0(2 * v, curv), L.exp_map0(0.5 * v, curv)
    assert L.oxy_angle(x, ahead, curv).max() < 1e-3
    assert (L.oxy_angle(x, behind, curv) > math.pi - 1e-3).all()
    side = L.exp_map0(points(16, seed=6), curv)
    angle = L.oxy_angle(x, side, curv)
    assert ((angle > 0) & (angle < math.pi)).all()


def test_gradients_finite_at_clamp_edges() -> None:
    """Zero vectors, coincident points, saturated sinh and asin must all backpropagate."""
    for curv in [0.1, 1.0, 10.0]:
        c = torch.tensor(curv, dtype=torch.float32, requires_grad=True)
        cases = [
            torch.zeros(4, 8),                       # exp map at v = 0, aperture at the origin
            torch.full((4, 8), 1e4),                 # sinh input far above the cap
            torch.full((4, 8), 0.2 / 8**0.5),        # asin input exactly 1 for c = 1
        ]
        for base in cases:
            v = base.clone().requires_grad_(True)
            x = L.exp_map0(v, c)
            loss = (L.dist(x, x, c).sum() + L.pairwise_dist(x, x, c).sum()
                    + L.half_aperture(x, c).sum() + L.oxy_angle(x, x, c).sum()
                    + L.dist_to_origin(x, c).sum())
            assert torch.isfinite(loss)
            loss.backward()
            assert torch.isfinite(v.grad).all(), (curv, base[0, 0].item())
            assert torch.isfinite(c.grad).all()
