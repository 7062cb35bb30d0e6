"""Divergence-free velocity fields from a learned stream function, and ``∇·u`` for any field.

In 2D every smooth incompressible field on the periodic square is
``u = (∂ψ/∂y, −∂ψ/∂x) + ū`` for a periodic stream function ``ψ`` and a spatially
constant mean flow ``ū``. Learning ``ψ_θ`` instead of ``u`` makes
``∇·u = ∂²ψ/∂x∂y − ∂²ψ/∂y∂x = 0`` hold by construction, for any weights, at any point
and time. Fluid parcels carried by such a field keep their volume (Liouville:
``d log J/dt = ∇·u = 0``), so the mass of every fluid region is conserved.

:func:`divergence` measures ``∇·u`` by autograd for *any* field model: the penalty loss
of the soft methods and the parcels' volume factor both use it.

Reference:
    Richter-Powell, Lipman, Chen, "Neural Conservation Laws: A Divergence-Free
    Perspective", NeurIPS 2022 (the general construction; this is its 2D special case).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
from torch import nn

from conserv_core.models import mlp
from conserv_core.models import base

Tensor = torch.Tensor
StreamFunction = Callable[[Tensor, "Tensor | float"], Tensor]  # (xy (B, 2), t) -> ψ (B,)
FieldModel = Callable[[Tensor, "Tensor | float"], Tensor]  # (xy (B, 2), t) -> u (B, 2)


def stream_function_velocity(psi: StreamFunction, xy: Tensor, t: Tensor | float,
                             create_graph: bool | None = None) -> Tensor:
    """The hard constraint of ``divfree``: ``u = (∂ψ/∂y, −∂ψ/∂x)``.

    Args:
        psi: batched stream function ``(xy (B, 2), t) -> (B,)``, rows independent.
        xy: points ``(B, 2)``; ``t``: a scalar or ``(B,)`` times.
        create_graph: see :func:`~conserv_core.models.mlp.input_gradient` (default: whether
            grad is enabled at the call; usable under ``torch.no_grad()``).

    Returns:
        ``u (B, 2)``, divergence-free for any ``ψ``.
    """
    dpsi = mlp.input_gradient(lambda p: psi(p, t), xy, create_graph)  # (B, 2) = [ψ_x, ψ_y]
    return torch.stack([dpsi[..., 1], -dpsi[..., 0]], -1)


@mlp.escape_inference_mode
def divergence(field_model: FieldModel, xy: Tensor, t: Tensor | float) -> Tensor:
    """``∇·u = ∂u_x/∂x + ∂u_y/∂y`` of any field model at ``xy (B, 2)``, time ``t``: ``(B,)``.

    By autograd, two backward passes (rows must be independent, as in every model
    here). Differentiable w.r.t. the model's parameters when grad is enabled at the call
    (so ``divergence(...).pow(2).mean()`` is a training loss); a plain tensor under
    ``torch.no_grad()``. Works for models that themselves differentiate (``divfree``).
    """
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        p = mlp.differentiable_leaf(xy, create)
        u = field_model(p, t)  # (B, 2); built with a graph: we are inside enable_grad
        (du_x,) = mlp.grad_or_zeros(u[:, 0].sum(), (p,), create)
        (du_y,) = mlp.grad_or_zeros(u[:, 1].sum(), (p,), create)
    return du_x[:, 0] + du_y[:, 1]


class DivFreeField(base.FieldModel):
    """``u_θ = (∂ψ_θ/∂y, −∂ψ_θ/∂x) + ū`` with ``ψ_θ = s_ψ · net(features(x, y, t))``:
    ``(B, 2), t -> (B, 2)``, divergence-free by construction.

    The input features are the same :class:`~conserv_core.models.mlp.PeriodicFeatures`
    as the baseline's, so ``ψ_θ`` (hence ``u``) is 2π-periodic. The mean flow ``ū`` is a
    fixed buffer (the data's mean velocity): a uniform flow is divergence-free but has no
    periodic stream function.
    """

    kind: ClassVar[str] = "field"
    coords: ClassVar[str] = "field"
    default_activation: ClassVar[str] = "tanh"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, n_modes: int = 4, width: int = 64, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        self.features = mlp.PeriodicFeatures(n_modes)
        self.net = mlp.make_mlp(self.features.out_dim, 1, width, depth, activation, out_bias=False)
        self.register_buffer("u_mean", torch.zeros(2))
        self.register_buffer("psi_scale", torch.ones(()))

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        """Scales from training points ``x (N, 3) = [x, y, t]`` and velocities ``y (N, 2)``.

        ``∂/∂x`` of a unit-size feature ``sin kx`` is of size ``k ≈ 1``, so a stream
        function of the size of the velocities' RMS spread gives O(1) network outputs.
        """
        mean, std = mlp.set_field_scales(self.features, x, y)
        self.u_mean.copy_(mean)
        self.psi_scale.copy_(std.pow(2).mean().sqrt())

    def stream_function(self, xy: Tensor, t: Tensor | float) -> Tensor:
        """``ψ_θ(x, y, t)``: ``(B, 2), t -> (B,)``."""
        return self.psi_scale * self.net(self.features(xy, t)).squeeze(-1)

    @mlp.escape_inference_mode
    def forward(self, xy: Tensor, t: Tensor | float) -> Tensor:
        """``xy (B, 2)``, ``t`` scalar or ``(B,)`` -> ``u (B, 2)``."""
        return stream_function_velocity(self.stream_function, xy, t) + self.u_mean
