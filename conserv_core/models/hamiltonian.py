"""Hamiltonian neural network: learn a scalar ``H_θ(q, p)``, move along ``J∇H_θ``.

Because the dynamics is ``dz/dt = J∇H_θ(z)`` with ``J = [[0, I], [−I, 0]]`` skew, the
learned energy is conserved by the exact flow whatever the weights are:
``dH_θ/dt = ∇H_θ · J∇H_θ = 0``. That is the hard constraint, and it holds on untrained
weights and far outside the training data alike (``tests/test_models.py`` checks both).
A numerical integrator still drifts in ``H_θ`` (RK4 slowly; implicit midpoint boundedly);
the discrete-gradient rollout (:attr:`HamiltonianNN.gradient_form`) does not.

Reference:
    Greydanus, Dzamba, Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
from conserv_core import integrators
from conserv_core.models import mlp
from conserv_core.models.base import Cost, EnergyModel, Spec

Tensor = torch.Tensor


def hamiltonian_vector_field(H: Callable[[Tensor], Tensor], z: Tensor, create_graph: bool | None = None) -> Tensor:
    """The hard constraint of HNN: ``dz/dt = J∇H(z)``, i.e. ``dq/dt = ∂H/∂p``,
    ``dp/dt = −∂H/∂q``, for ``z = [q, p]`` of shape ``(B, 2·dof)``.

    Args:
        H: batched scalar ``(B, 2·dof) -> (B,)``, rows independent.
        z: states ``(B, 2·dof)``.
        create_graph: see :func:`~conserv_core.models.mlp.input_gradient`; by default the
            result is differentiable exactly when grad is enabled at the call.

    Returns:
        ``(B, 2·dof)``. ``∇H · J∇H = 0`` for any ``H``: energy is conserved by construction.
    """
    dof = z.shape[-1] // 2
    dH = mlp.input_gradient(H, z, create_graph)  # (B, 2·dof) = [∂H/∂q, ∂H/∂p]
    return torch.cat([dH[..., dof:], -dH[..., :dof]], -1)


class HamiltonianNN(EnergyModel):
    """``H_θ(z) = s_H · h_θ((z − μ) / σ)`` and ``dz/dt = J∇H_θ(z)``: ``(B, 2·dof) -> (B, 2·dof)``.

    Scales (:meth:`set_scales`): the inputs are standardised per column; the single
    energy scale ``s_H`` is chosen so that an O(1) gradient of ``h_θ`` gives outputs of
    the size of the targets. Any such choice is still an exact ``J∇`` of one scalar
    function of ``z``, so normalisation cannot break conservation.
    """

    kind: ClassVar[str] = "ode"
    coords: ClassVar[str] = "canonical"
    default_activation: ClassVar[str] = "tanh"
    #: its dynamics hold the learned energy exactly (the port-Hamiltonian model's lose it)
    capabilities: ClassVar[frozenset[str]] = frozenset({"learned_energy", "conserves_learned_energy",
                                                        "gradient_form"})

    @classmethod
    def cost_per_state(cls, system) -> Cost:
        """A forward and a gradient of the energy per field evaluation (training adds the
        double backward): about twice the MLP's. Measured (benchmarks/bench_budget.py,
        one core, width 128): rollout 2.0 units at D = 8 to 2.1 at D = 64, training 2.6
        to 3.3."""
        d = system.state_dim
        return Cost(rollout=2.0 + 0.002 * d, train=2.6 + 0.01 * d, why=f"state_dim={d}")

    @classmethod
    def from_spec(cls, spec: Spec, **options) -> HamiltonianNN:
        """``cls(state_dim, width=, depth=, activation=)``, refusing an odd state (``[q, p]``)."""
        return cls(spec.even_state(), width=spec.width, depth=spec.depth, activation=spec.activation)

    #: False for a subclass that builds itself without this ``__init__`` (the symmetric HNN)
    _written_out_gradient: bool = False

    def __init__(self, state_dim: int, width: int = 64, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        if state_dim < 2 or state_dim % 2:
            raise ValueError(f"state_dim must be even (z = [q, p]) and >= 2; got {state_dim}")
        self.state_dim = state_dim
        self.net = mlp.make_mlp(state_dim, 1, width, depth, activation, out_bias=False)
        self.register_buffer("x_mean", torch.zeros(state_dim))
        self.register_buffer("x_std", torch.ones(state_dim))
        self.register_buffer("h_scale", torch.ones(()))
        #: whether a rollout may take ∇H written out (mlp.trunk_gradient): H is this class's
        #: trunk (a subclass with an H of its own, the symmetric HNN's pair sum, keeps
        #: autograd's) and the trunk's activation has a written-out backward. Fixed at
        #: construction, so the per-step test is one flag
        self._written_out_gradient = (type(self).hamiltonian is HamiltonianNN.hamiltonian
                                      and mlp.has_trunk_gradient(self.net))

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        """Scales from training states ``x (N, 2·dof)`` and their derivatives ``y``.

        ``dq_i/dt = (s_H/σ_{p_i}) ∂h/∂p̂_i`` and ``dp_i/dt = −(s_H/σ_{q_i}) ∂h/∂q̂_i``, so
        O(1) network gradients match the targets' spread when
        ``s_H ≈ σ_y(q_i)·σ_x(p_i) ≈ σ_y(p_i)·σ_x(q_i)`` (both are energies). One scalar
        must serve every coordinate: ``s_H`` is the geometric mean of these products.
        Changing the units of ``q``, ``p`` and time then changes predictions covariantly.
        """
        mlp.check_pair(x, y, self.state_dim, self.state_dim)
        dof = self.state_dim // 2
        sx, sy = mlp.spread(x), mlp.spread(y)
        conjugate = torch.cat([sx[dof:], sx[:dof]])  # σ of the partner coordinate
        self.x_mean.copy_(x.mean(0))
        self.x_std.copy_(sx)
        self.h_scale.copy_(torch.log(sy * conjugate).mean().exp())

    def hamiltonian(self, z: Tensor) -> Tensor:
        """``H_θ(z)``: ``(B, 2·dof) -> (B,)``."""
        return self.h_scale * self.net((z - self.x_mean) / self.x_std).squeeze(-1)

    @property
    def gradient_form(self) -> integrators.GradientForm:
        """The model as ``ż = J∇H_θ``, for the energy-conserving
        :func:`~conserv_core.integrators.discrete_gradient` rollout."""
        return integrators.GradientForm(self.hamiltonian)

    @mlp.escape_inference_mode
    def learned_energy(self, z: Tensor) -> Tensor:
        """The model's own conserved quantity, ``H_θ(z)``: ``(B, 2·dof) -> (B,)``."""
        return self.hamiltonian(z)

    @mlp.escape_inference_mode
    def forward(self, z: Tensor, t=None) -> Tensor:
        """``z (B, 2·dof) -> J∇H_θ(z) (B, 2·dof)``; ``t`` is ignored (autonomous).

        Where no graph is wanted (a rollout, under ``torch.no_grad()``) and the trunk
        allows, ``∇H_θ`` is written out (:func:`~conserv_core.models.mlp.trunk_gradient`):
        the same numbers as autograd's, several times faster."""
        if torch.is_grad_enabled() or not self._written_out_gradient:
            return hamiltonian_vector_field(self.hamiltonian, z)
        dof = self.state_dim // 2
        dH = mlp.trunk_gradient(self.net, (z - self.x_mean) / self.x_std, self.h_scale) / self.x_std
        return torch.cat([dH[..., dof:], -dH[..., :dof]], -1)
