"""Symmetric Hamiltonian network for planar bodies: momentum and angular momentum by
Noether's theorem.

The learned energy is a kinetic term quadratic in each body's momentum, with one learned
positive coefficient (an inverse mass), plus a sum over pairs of one learned function of
the pair distance,

    ``H_θ(q, p) = a_θ Σ_i |p_i|² + s_H Σ_{i<j} v_θ(r_ij)``,  ``r_ij = |q_i − q_j|``.

(A network for the kinetic term as well was tried: it cost a second network's double
backward, training ran at a third of the HNN's speed, and Newtonian bodies need no more
than one coefficient.)

Every input is unchanged by a translation of all positions, a rotation of all positions
and momenta together, and a relabelling of the bodies. So ``H_θ`` has these symmetries
for any weights, and the dynamics ``ż = J∇H_θ`` conserve what they generate (Noether):
total linear momentum ``P = Σ p_i`` (translations) and angular momentum
``L = Σ q_i × p_i`` (rotations), besides ``H_θ`` itself. Exactly for the continuous flow;
in a rollout, ``P`` is linear and survives any Runge–Kutta method to round-off, while
``L`` is quadratic and survives implicit midpoint to the solve's tolerance but RK4 only
approximately (``tests/test_symmetric.py`` measures both).

Because ``k_θ`` and ``v_θ`` are shared by all bodies and pairs, the model has no fixed
number of bodies: one trained on three runs on eight. The price of the symmetry is the
assumption that bodies are identical (one mass): with unequal masses the truth is not
permutation-invariant and this model cannot fit it exactly.

The pair function sees the distance through two features, ``ρ = √(r² + δ²)`` and
``1/ρ``, with ``δ`` a small fraction of the typical distance in the data. Both are smooth
at ``r = 0`` (``√r²`` has no gradient there), and the second lets a small network
express a potential as steep as gravity's near a close pass.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch
from torch import nn

from conserv_core.models import mlp
from conserv_core.models.base import Cost, Spec
from conserv_core.models.hamiltonian import HamiltonianNN
from conserv_core.systems.base import ParameterError

Tensor = torch.Tensor

#: δ in the pair features, as a fraction of the median pair distance of the training data
DELTA_FRACTION = 0.05


def _bodies(z: Tensor) -> tuple[Tensor, Tensor]:
    """``z (B, 4N) -> q, p`` each ``(B, N, 2)`` (the n-body state layout)."""
    n2 = z.shape[-1] // 2
    return z[..., :n2].reshape(*z.shape[:-1], -1, 2), z[..., n2:].reshape(*z.shape[:-1], -1, 2)


@functools.lru_cache(maxsize=32)
def _pairs(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Indices ``i < j`` of the pairs of ``n`` bodies. Read-only."""
    return tuple(torch.triu_indices(n, n, 1, device=device))


def _pair_distance2(q: Tensor) -> Tensor:
    """``|q_i − q_j|²`` over pairs ``i < j``: ``(B, N, 2) -> (B, N(N−1)/2)``."""
    i, j = _pairs(q.shape[-2], q.device)
    d = q[..., i, :] - q[..., j, :]
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]


class SymmetricHNN(HamiltonianNN):
    """``H_θ = a_θ Σ_i |p_i|² + s_H Σ_{i<j} v_θ(r_ij)``, ``ż = J∇H_θ``, for ``N``
    planar bodies in the n-body layout ``z = [q_1, …, q_N, p_1, …, p_N]`` (each a 2-vector).

    ``state_dim`` (``4N``) sets the scales' shapes only: the model evaluates any number
    of bodies, read from the input's width. Forward, learned energy and the
    discrete-gradient form are the HNN's.
    """

    #: degrees of freedom come in whole planar bodies (two per body)
    dof_step: ClassVar[int] = 2
    #: the invariants its symmetries hold for any weights, besides its own energy
    noether: ClassVar[tuple[str, ...]] = ("momentum", "angular_momentum")
    kind: ClassVar[str] = "ode"
    coords: ClassVar[str] = "canonical"
    default_activation: ClassVar[str] = "tanh"
    #: an HNN's, and: one set of weights evaluates any number of bodies
    #: (:func:`training.on_bodies`); one learned pair function a view can draw
    capabilities: ClassVar[frozenset[str]] = frozenset({"learned_energy", "conserves_learned_energy",
                                                        "gradient_form", "any_bodies", "pair_potential"})

    @classmethod
    def cost_per_state(cls, system) -> Cost:
        """Its energy runs the pair network on every one of the N(N − 1)/2 pairs, and its
        field is that sum's gradient (training backpropagates through it again): the
        cost grows with the pairs, not the state. Measured (benchmarks/bench_budget.py, one
        core, width 128; two runs): rollout 7.4-8.5 units at 1 pair (N = 2), 24.6-25.4 at 28
        (N = 8), 86-96 at 120 (N = 16); training 2.6-3.7, 76-88, 398-536. At N = 64 (2 016
        pairs) that is ~1 400 and ~7 700 units: a default run is hours, not the 0.2 % of the
        limit that pricing every state alike gave it."""
        n = system.state_dim // 4
        pairs = n * (n - 1) // 2
        return Cost(rollout=8.0 + 0.7 * pairs, train=3.5 + 3.8 * pairs,
                    why=f"{pairs:,} pairs of n_bodies={n}", lower="n_bodies")

    @classmethod
    def from_spec(cls, spec: Spec, **options) -> SymmetricHNN:
        """The HNN's, refusing a state that is not whole planar bodies (``4N``)."""
        if spec.even_state() % 4:
            raise ParameterError(f"state_dim must be 4 × the number of planar bodies for {spec.arch} (q and p "
                                 f"per body); got {spec.state_dim}")
        return super().from_spec(spec, **options)

    def __init__(self, state_dim: int, width: int = 64, depth: int = 2, activation: str = "tanh"):
        nn.Module.__init__(self)
        if state_dim < 4 or state_dim % 4:
            raise ValueError(f"state_dim must be 4 × the number of planar bodies (q and p per body); "
                             f"got {state_dim}")
        self.state_dim = state_dim
        # a_θ = s_K exp(w): positive (a kinetic energy, a positive mass) for any weight w,
        # and of the data's size at initialisation (s_K from set_scales)
        self.kinetic = nn.Linear(1, 1, bias=False)
        self.pair = mlp.make_mlp(2, 1, width, depth, activation, out_bias=False)
        # a linear term in the same features beside the network: past the training data's
        # closest pass the network saturates (its force goes to 0), the linear term in 1/ρ
        # keeps pulling like gravity
        self.pair_linear = nn.Linear(2, 1, bias=False)
        # the kinetic scale s_K, the pair features' standardisation, δ, and the pair scale
        self.register_buffer("kinetic_scale", torch.ones(()))
        self.register_buffer("pair_loc", torch.zeros(2))
        self.register_buffer("pair_scale", torch.ones(2))
        self.register_buffer("delta", torch.ones(()))
        self.register_buffer("h_scale", torch.ones(()))

    def _pair_features(self, r2: Tensor) -> Tensor:
        rho = (r2 + self.delta * self.delta).sqrt()
        return torch.stack([rho, 1.0 / rho], -1)

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        """Input standardisation from training states ``x (S, 4N)`` and the energy scale
        from their derivatives ``y``, as the HNN's (one scalar, so the symmetries stay)."""
        mlp.check_pair(x, y, self.state_dim, self.state_dim)
        q, p = _bodies(x)
        dof = self.state_dim // 2
        sx, sy = mlp.spread(x), mlp.spread(y)
        # q̇ = 2 a_θ p: an O(1) weight gives velocities of the data's size when
        # s_K = σ(q̇) / (2 σ(p)) (geometric mean over the momentum columns)
        self.kinetic_scale.copy_(torch.log(sy[:dof] / (2 * sx[dof:])).mean().exp())
        if q.shape[-2] > 1:
            r2 = _pair_distance2(q).flatten()
            self.delta.copy_(DELTA_FRACTION * r2.sqrt().median().clamp_min(1e-6))
            feats = self._pair_features(r2)
            self.pair_loc.copy_(feats.mean(0))
            self.pair_scale.copy_(feats.std(0).clamp_min(1e-12))
        conjugate = torch.cat([sx[dof:], sx[:dof]])
        self.h_scale.copy_(torch.log(sy * conjugate).mean().exp())

    def hamiltonian(self, z: Tensor) -> Tensor:
        """``H_θ(z)``: ``(B, 4N) -> (B,)`` for any ``N``."""
        if z.shape[-1] % 4:
            raise ValueError(f"expected states of 4 × N columns (planar bodies); got {z.shape[-1]}")
        q, p = _bodies(z)
        p2 = (p[..., 0] * p[..., 0] + p[..., 1] * p[..., 1]).sum(-1)  # (B,) Σ|p_i|²
        energy = self.kinetic_scale * self.kinetic.weight.exp().squeeze() * p2
        if q.shape[-2] > 1:
            feats = (self._pair_features(_pair_distance2(q)) - self.pair_loc) / self.pair_scale  # (B, P, 2)
            energy = energy + self.h_scale * (self.pair(feats) + self.pair_linear(feats)).squeeze(-1).sum(-1)
        return energy

    @torch.no_grad()
    def pair_potential(self, r: Tensor) -> Tensor:
        """The learned pair term ``s_H v_θ(r)`` at distances ``r (M,)``, shifted to vanish
        at the largest ``r`` (a potential is known up to a constant): what the view
        draws against the true ``−G m² / √(r² + ε²)``."""
        feats = (self._pair_features(r * r) - self.pair_loc) / self.pair_scale
        v = self.h_scale * (self.pair(feats) + self.pair_linear(feats)).squeeze(-1)
        return v - v[r.argmax()]
