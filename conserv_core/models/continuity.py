"""Density–flux fields ``(ρ, J_x, J_y)(x, y, t)`` that satisfy the continuity equation by
construction, the unconstrained baseline, and the continuity residual of any such model.

The hard construction (Richter-Powell, Lipman & Chen 2022, "Neural Conservation Laws"):
in space-time ``z = (t, x, y)`` the continuity equation ``∂ρ/∂t + ∇·J = 0`` says the
vector ``v = (ρ, J_x, J_y)`` is divergence-free. Every row-divergence of an antisymmetric
matrix field is: ``v_i = Σ_j ∂_j A_ij`` gives ``Σ_i ∂_i v_i = Σ_ij ∂_i ∂_j A_ij = 0``, since
the symmetric ``∂_i ∂_j`` meets the antisymmetric ``A``. The network outputs the three
entries ``a = (A_tx, A_ty, A_xy)``, periodic in ``x`` and ``y`` (through
:class:`~conserv_core.models.mlp.PeriodicFeatures`), so

    ρ   = ρ̄ + ∂_x A_tx + ∂_y A_ty
    J_x =     −∂_t A_tx + ∂_y A_xy
    J_y =     −∂_t A_ty − ∂_x A_xy

with ``ρ̄`` a constant, the training data's mean density. The continuity residual is zero identically, for any weights,
at any point and time (also far out of the training window), and the total charge
``Q(t) = ∫ρ dA = (2π)² ρ̄`` is constant: the periodic derivatives integrate to zero. (Without
``ρ̄`` every periodic potential would give ``Q = 0``: the mean density is the one part of ρ
that is not a divergence.)

:func:`continuity_terms` measures ``(∂ρ/∂t, ∂J_x/∂x, ∂J_y/∂y)`` by autograd for any model
``(xy (B, 2), t) -> (B, 3)``: the soft (penalty) method's loss and the metric both use it.

Wiring that remains (issue 32, item 1): the models subclass ``FieldModel`` (``kind`` and
``coords`` ``"field"``) but return ``(B, 3)``, not a velocity ``(B, 2)``; they are not in
``models.ARCHITECTURES`` and no method names them. Registering needs the charge system
registered, a trainer path for ``(ρ, J)`` targets, and the penalty as a ``Constraint`` on
:func:`continuity_residual`.

Reference:
    Richter-Powell, Lipman, Chen, "Neural Conservation Laws: A Divergence-Free
    Perspective", NeurIPS 2022.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import torch

from conserv_core.models import base, mlp

Tensor = torch.Tensor
DensityFlux = Callable[[Tensor, "Tensor | float"], Tensor]  # (xy (B, 2), t) -> (ρ, J_x, J_y) (B, 3)

TWO_PI = 2.0 * math.pi


def _antisymmetric_basis() -> Tensor:
    """``E (3, 3, 3)``: ``A = Σ_m a_m E_m`` for the entries ``a = (A_tx, A_ty, A_xy)``, with
    space-time indices ``(t, x, y) = (0, 1, 2)``."""
    e = torch.zeros(3, 3, 3, dtype=torch.float64)
    for m, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        e[m, i, j], e[m, j, i] = 1.0, -1.0
    return e


#: the antisymmetric matrices the potential's three entries multiply (the hard constraint)
ANTISYMMETRIC_BASIS = _antisymmetric_basis()


def row_divergence(potential: Callable[[Tensor], Tensor], zxy: Tensor, create_graph: bool,
                   basis: Tensor | None = None) -> Tensor:
    """The hard constraint: ``v_i = Σ_j ∂_j A_ij`` with ``A = Σ_m a_m E_m``, space-time divergence-free.

    Args:
        potential: ``zxy (B, 3) = [x, y, t] -> a (B, 3)``, rows independent.
        zxy: points ``(B, 3)`` in the layout ``[x, y, t]`` of the data; differentiated at.
        create_graph: keep the result differentiable (training, or a residual taken of it).
        basis: ``(3, 3, 3)`` matrices ``E_m`` over indices ``(t, x, y)`` (default
            :data:`ANTISYMMETRIC_BASIS`, read at the call); only antisymmetric ones give
            ``Σ_i ∂_i v_i = 0`` (a test plants symmetric ones to see that fail).

    Returns:
        ``v (B, 3) = (ρ − ρ̄, J_x, J_y)``.
    """
    basis = ANTISYMMETRIC_BASIS if basis is None else basis
    a = potential(zxy)  # (B, 3)
    jac = torch.stack([mlp.grad_or_zeros(a[:, m].sum(), (zxy,), create_graph)[0] for m in range(3)], 1)
    jac = jac[..., [2, 0, 1]]  # (B, m, j): columns reordered from [x, y, t] to (t, x, y)
    return torch.einsum("mij,bmj->bi", basis.to(jac), jac)


def _points(xy: Tensor, t: Tensor | float) -> Tensor:
    """``[x, y, t]`` as ``(B, 3)`` from ``xy (B, 2)`` and a scalar or ``(B,)`` time."""
    return torch.cat([xy, mlp.time_column(t, xy)], -1)


@mlp.escape_inference_mode
def continuity_terms(model: DensityFlux, xy: Tensor, t: Tensor | float) -> Tensor:
    """``(∂ρ/∂t, ∂J_x/∂x, ∂J_y/∂y)`` of any density–flux model at ``xy (B, 2)``, time ``t``: ``(B, 3)``.

    By autograd, one backward pass per output. Differentiable w.r.t. the parameters when
    grad is enabled at the call (a penalty loss), a plain tensor under ``torch.no_grad()``.
    """
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        p = mlp.differentiable_leaf(xy, create)
        tt = mlp.differentiable_leaf(mlp.time_column(t, xy).reshape(-1), create)
        out = model(p, tt)  # (B, 3)
        (drho_dt,) = mlp.grad_or_zeros(out[:, 0].sum(), (tt,), create)
        (djx,) = mlp.grad_or_zeros(out[:, 1].sum(), (p,), create)
        (djy,) = mlp.grad_or_zeros(out[:, 2].sum(), (p,), create)
    return torch.stack([drho_dt, djx[:, 0], djy[:, 1]], -1)


def continuity_residual(model: DensityFlux, xy: Tensor, t: Tensor | float) -> Tensor:
    """``∂ρ/∂t + ∂J_x/∂x + ∂J_y/∂y`` at ``xy (B, 2)``, ``t``: ``(B,)`` (see :func:`continuity_terms`)."""
    return continuity_terms(model, xy, t).sum(-1)


def total_charge(model: DensityFlux, t: Tensor, n: int = 64, offset: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """``Q(t) = ∫ρ dA`` of a model by the trapezoidal rule on an ``n × n`` grid of the
    periodic square (shifted by ``offset``), at the times ``t (T,)``: ``(T,)``. For a
    smooth periodic ρ the rule converges faster than any power of ``1/n``."""
    p = next(model.parameters())
    x = torch.arange(n, dtype=p.dtype, device=p.device) * (TWO_PI / n)
    yy, xx = torch.meshgrid(x + offset[1], x + offset[0], indexing="ij")
    xy = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)  # (n², 2)
    with torch.no_grad():
        return torch.stack([TWO_PI**2 * model(xy, float(tk))[:, 0].mean() for tk in t.tolist()])


def _check_targets(x: Tensor, y: Tensor) -> None:
    if x.dim() != 2 or x.shape[1] != 3 or y.shape != (x.shape[0], 3):
        raise ValueError(f"density-flux scales need x (N, 3) = [x, y, t] and y (N, 3) = [ρ, J_x, J_y]; "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")


class DensityFluxMLP(base.FieldModel):
    """Unconstrained baseline ``(ρ, J_x, J_y) = μ + σ ⊙ net(features(x, y, t))``: ``(B, 2), t -> (B, 3)``.

    Its continuity residual and its charge drift are whatever the fit makes them.
    """

    kind: ClassVar[str] = "field"
    coords: ClassVar[str] = "field"
    default_activation: ClassVar[str] = "tanh"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, n_modes: int = 4, width: int = 64, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        self.features = mlp.PeriodicFeatures(n_modes)
        self.net = mlp.make_mlp(self.features.out_dim, 3, width, depth, activation)
        self.register_buffer("y_mean", torch.zeros(3))
        self.register_buffer("y_std", torch.ones(3))

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        """Scales from points ``x (N, 3) = [x, y, t]`` and targets ``y (N, 3) = [ρ, J_x, J_y]``."""
        _check_targets(x, y)
        self.features.set_time_scale(x[:, 2])
        self.y_mean.copy_(y.mean(0))
        self.y_std.copy_(mlp.spread(y))

    def forward(self, xy: Tensor, t: Tensor | float) -> Tensor:
        """``xy (B, 2)``, ``t`` scalar or ``(B,)`` -> ``(ρ, J_x, J_y) (B, 3)``."""
        return self.y_mean + self.y_std * self.net(self.features(xy, t))


class ConservationLawField(base.FieldModel):
    """``(ρ, J_x, J_y) = (ρ̄, 0, 0) + row-div A_θ`` with ``A_θ`` antisymmetric and periodic:
    ``(B, 2), t -> (B, 3)``, continuity holds identically and ``Q = (2π)² ρ̄`` for any weights.

    ``A_θ``'s entries are ``s ⊙ net(features(x, y, t))`` (the baseline's features), with
    ``s`` a fixed buffer sized so the derivatives come out at the targets' spread.
    """

    kind: ClassVar[str] = "field"
    coords: ClassVar[str] = "field"
    default_activation: ClassVar[str] = "tanh"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, n_modes: int = 4, width: int = 64, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        self.features = mlp.PeriodicFeatures(n_modes)
        # a constant added to A changes no derivative: its bias would get no gradient
        self.net = mlp.make_mlp(self.features.out_dim, 3, width, depth, activation, out_bias=False)
        # ρ̄ is fixed by the data, not learned: the truth's mean density never changes, and
        # init_weights (which draws every parameter from the run's seed) knows Linear layers only
        self.register_buffer("rho_mean", torch.zeros(()))
        self.register_buffer("a_scale", torch.ones(3))

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        """Scales from points ``x (N, 3) = [x, y, t]`` and targets ``y (N, 3) = [ρ, J_x, J_y]``:
        the time scale, ``ρ̄`` = the data's mean density, and ``s``: ``A_tx``, ``A_ty``
        at ρ's spread (ρ is their x, y derivative, of O(1) features), ``A_xy`` at J's."""
        _check_targets(x, y)
        self.features.set_time_scale(x[:, 2])
        std = mlp.spread(y)
        self.rho_mean.copy_(y[:, 0].mean())
        j_std = std[1:].pow(2).mean().sqrt()
        self.a_scale.copy_(torch.stack([std[0], std[0], j_std]))

    def potential(self, zxy: Tensor) -> Tensor:
        """``a = (A_tx, A_ty, A_xy)`` at ``zxy (B, 3) = [x, y, t]``: ``(B, 3)``."""
        return self.a_scale * self.net(self.features(zxy[:, :2], zxy[:, 2]))

    @mlp.escape_inference_mode
    def forward(self, xy: Tensor, t: Tensor | float) -> Tensor:
        """``xy (B, 2)``, ``t`` scalar or ``(B,)`` -> ``(ρ, J_x, J_y) (B, 3)``."""
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            z = _points(xy, t)
            if not (create and z.requires_grad):
                z = z.detach().requires_grad_(True)
            v = row_divergence(self.potential, z, create)  # (B, 3)
        return v + torch.stack([self.rho_mean, 0 * self.rho_mean, 0 * self.rho_mean])
