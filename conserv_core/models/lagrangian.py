"""Lagrangian neural network: learn a scalar ``L_θ(q, q̇)``, move by Euler–Lagrange.

The state is ``s = [q, q̇]`` (velocity coordinates, ``coords = "velocity"``): the trainer
converts canonical data with the system's Legendre map. From

    d/dt ∂L/∂q̇ = ∂L/∂q   ⇒   (∇_q̇∇_q̇ᵀL) q̈ = ∇_qL − (∇_q̇∇_qᵀL) q̇

the acceleration is a linear solve with the velocity Hessian ``M = ∂²L/∂q̇²`` (the mass
matrix when ``L = T − V``). The energy function ``E = q̇·∂L/∂q̇ − L`` is then conserved
by the exact flow for any ``L``: ``dE/dt = q̇ · (M q̈ − r) = 0`` with ``r`` the right-hand
side above — the hard constraint. Unlike HNN no canonical momenta are needed, and any
Lagrangian callable may be plugged in (the tests plug in the true pendulum's).

Reference:
    Cranmer, Greydanus, Hoyer, Battaglia, Spergel, Ho, "Lagrangian Neural Networks",
    ICLR 2020 workshop (arXiv:2003.04630).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
import numbers

from torch import nn

from conserv_core.models import mlp
from conserv_core.models.base import Cost, EnergyModel, Spec
from conserv_core.systems.base import ParameterError

Tensor = torch.Tensor
Lagrangian = Callable[[Tensor, Tensor], Tensor]  # (q (B, dof), q̇ (B, dof)) -> (B,)

#: the forms of the learned Lagrangian, see :class:`LagrangianNN`
FORMS = ("generic", "mechanical")
#: smallest eigenvalue of the mechanical form's mass matrix, in normalised velocity units
MASS_FLOOR = 1e-3


def tikhonov_solve(A: Tensor, b: Tensor, rel: float | None = None) -> Tensor:
    """Tikhonov-regularised solve of ``A x = b``: ``argmin |A x − b|² + μ²|x|²``, batched.

    ``A (B, d, d)``, ``b (B, d) -> x (B, d)``, with ``μ = rel·‖A‖_F`` per sample. On each
    singular direction of ``A`` this replaces ``1/σ`` by ``σ/(σ² + μ²)``: exact to relative
    ``(μ/σ)²`` where ``A`` is well conditioned, and never larger than ``1/(2μ)``, so a
    singular or nearly singular ``A`` gives a finite ``|x| ≤ |b|/(2μ)`` instead of inf/NaN.
    The default ``rel = √ε`` of the dtype only touches directions whose curvature is
    below ``√ε`` of the largest, where a plain solve has already lost at least half its
    digits (it does not suppress them entirely: an exactly singular direction, seen
    through round-off, still contributes up to ``|b|/(2μ)``). Being relative, ``μ``
    respects the gauge ``L → cL``, which leaves the dynamics unchanged; an overall small
    curvature (``L`` nearly linear in ``q̇`` everywhere) is *not* damped, there is no
    absolute scale to compare it with.

    Solved as the augmented system ``[[μI, A], [Aᵀ, −μI]] [r/μ; x] = [b; 0]`` (whose
    solution satisfies ``(AᵀA + μ²I) x = Aᵀb``) by one batched LU: as accurate as QR of
    ``[A; μI]`` in float32 (the normal equations square the condition number and lose
    ~500× more at cond 1e3), and fast on GPU, where batched QR is not (measured on an
    H200: 200 ms for 4096 2×2 problems, against 0.3 ms). Differentiable.
    """
    d = A.shape[-1]
    if rel is None:
        rel = torch.finfo(A.dtype).eps ** 0.5
    eye = torch.eye(d, dtype=A.dtype, device=A.device)
    mu = rel * torch.linalg.matrix_norm(A) + torch.finfo(A.dtype).tiny ** 0.5  # (B,)
    mu_eye = mu[:, None, None] * eye  # (B, d, d)
    K = torch.cat([torch.cat([mu_eye, A], -1), torch.cat([A.mT, -mu_eye], -1)], -2)  # (B, 2d, 2d)
    rhs = torch.cat([b, torch.zeros_like(b)], -1)  # (B, 2d)
    # K is nonsingular for μ > 0: solve_ex skips the singularity check (a GPU sync)
    return torch.linalg.solve_ex(K, rhs)[0][..., d:]


def euler_lagrange_acceleration(L: Lagrangian, q: Tensor, qdot: Tensor, tikhonov: float | None = None,
                                create_graph: bool | None = None) -> Tensor:
    """The hard constraint of LNN: ``q̈`` solving the Euler–Lagrange equations of ``L``.

        q̈ = (∇_q̇∇_q̇ᵀL)⁻¹ [∇_qL − (∇_q̇∇_qᵀL) q̇]

    Args:
        L: batched Lagrangian ``(q (B, dof), q̇ (B, dof)) -> (B,)``, rows independent.
        q, qdot: ``(B, dof)`` each.
        tikhonov: relative regularisation of the velocity-Hessian solve, see
            :func:`tikhonov_solve` (default ``√ε`` of the dtype).
        create_graph: keep ``q̈`` differentiable (training); default: whether grad is
            enabled at the call. Under ``torch.no_grad()`` the result is a plain tensor and
            every temporary graph is freed before returning.

    Returns:
        ``q̈ (B, dof)``.

    Plain reverse-mode autograd: one gradient, the ``dof`` Hessian rows (one batched
    backward pass), and the mixed term
    ``(∇_q̇∇_qᵀL) q̇`` as a single vector–Jacobian product of ``∂L/∂q`` with ``q̇``
    (the Hessian is symmetric). ``torch.func`` (``vmap(jacrev(...))``) gives the same
    numbers but was 2–3× slower for the small batches of a rollout on CPU (~1.5 ms of
    fixed vmap overhead per call).
    """
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    dof = q.shape[-1]
    with torch.enable_grad():
        qg, vg = mlp.differentiable_leaf(q, create_graph), mlp.differentiable_leaf(qdot, create_graph)
        lag = L(qg, vg)  # (B,)
        # first derivatives keep their graph: the Hessian is their derivative
        gq, gv = mlp.grad_or_zeros(lag.sum(), (qg, vg), create_graph=True)  # (B, dof) each
        # all dof Hessian rows in one vmapped backward pass (3× faster than a loop at dof 16)
        basis = torch.eye(dof, dtype=q.dtype, device=q.device).unsqueeze(1).expand(dof, *gv.shape)
        (rows,) = mlp.grad_or_zeros(gv, (vg,), create_graph, grad_outputs=basis, batched=True)  # (dof, B, dof)
        hess_vv = rows.transpose(0, 1)  # (B, dof, dof): [b, i, j] = ∂²L/∂q̇_i∂q̇_j
        # (∇_q̇∇_qᵀL q̇)_i = Σ_j ∂(∂L/∂q_j)/∂q̇_i · q̇_j
        (mixed,) = mlp.grad_or_zeros(gq, (vg,), create_graph, grad_outputs=qdot)  # (B, dof)
    if not create_graph:
        gq = gq.detach()
    return tikhonov_solve(hess_vv, gq - mixed, tikhonov)


def lagrangian_energy(L: Lagrangian, q: Tensor, qdot: Tensor, create_graph: bool | None = None) -> Tensor:
    """The energy function ``E = q̇·∂L/∂q̇ − L`` (the Hamiltonian in velocity
    coordinates), ``(B, dof), (B, dof) -> (B,)``; conserved by the Euler–Lagrange flow."""
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        vg = mlp.differentiable_leaf(qdot, create_graph)
        lag = L(q, vg)  # (B,)
        (gv,) = mlp.grad_or_zeros(lag.sum(), (vg,), create_graph)
        energy = (vg * gv).sum(-1) - lag
    return energy if create_graph else energy.detach()


class LagrangianNN(EnergyModel):
    """Euler–Lagrange dynamics of a learned (or given) Lagrangian:
    ``s = [q, q̇] (B, 2·dof) -> ds/dt = [q̇, q̈] (B, 2·dof)``.

    Args:
        dof: degrees of freedom.
        width, depth, activation: the network ``L_θ``. The default softplus keeps the
            second derivatives smooth (the dynamics uses them; training a third).
        lagrangian: use this callable ``(q, q̇) -> (B,)`` instead of a network (then no
            parameters, no scales); e.g. a system's true ``lagrangian``.
        tikhonov: relative regularisation of the Hessian solve (see :func:`tikhonov_solve`).
        form: ``"generic"``: one network ``L_θ(q, q̇)``, as in the paper; nothing stops its
            velocity Hessian from turning singular, where accelerations blow up.
            ``"mechanical"``: ``L = ½ vᵀM_θ(q)v − (V_θ(q) − V_θ(q_ref))`` with ``v = q̇/σ_q̇``,
            ``M_θ = CCᵀ + εI`` (``C`` lower triangular, positive diagonal; ``ε`` =
            :data:`MASS_FLOOR`) and ``q_ref`` the training mean: one network of ``q``
            gives ``C`` and ``V``. The velocity Hessian is ``M_θ``, never singular; the
            conserved ``E_θ = ½ vᵀM_θv + V_θ`` bounds the speed wherever ``V_θ`` is bounded
            (always, when every coordinate is an angle). The structure of Deep Lagrangian
            Networks (Lutter, Ritter, Peters, ICLR 2019).
        angles: indices of the coordinates that are angles: the network sees
            ``(cos q_i, sin q_i)`` for them, so the model is exactly 2π-periodic in each.

    Scales: ``L_θ(q, q̇) = l_θ((q − μ_q)/σ_q, (q̇ − μ_q̇)/σ_q̇)``. The Euler–Lagrange
    equations are invariant under any change of variables of this form (and under
    ``L → cL``), so normalising the inputs is exact; the overall scale of ``L`` is a
    gauge the data cannot fix and is left to the network. The acceleration's natural
    size is then ``σ_q̇²/σ_q``, and changing the units of ``q`` or time changes the
    predictions covariantly.
    """

    kind: ClassVar[str] = "ode"
    coords: ClassVar[str] = "velocity"
    default_activation: ClassVar[str] = "softplus"
    capabilities: ClassVar[frozenset[str]] = frozenset({"learned_energy", "conserves_learned_energy"})

    @classmethod
    def cost_per_state(cls, system) -> Cost:
        """The Euler–Lagrange equations need the velocity Hessian of ``L`` (one backward per
        degree of freedom) and a dof × dof solve in every evaluation, training a third
        derivative: the dearest of the dense models, growing with dof². Measured
        (benchmarks/bench_budget.py, one core, width 128, the generic form): rollout 15.6
        units at dof = 4, 21-26 at 16, 47-58 at 32; training 23-34, 74-96, 204-281 (two runs)."""
        x = system.state_dim // 2
        return Cost(rollout=15.0 + 0.3 * x + 0.02 * x * x, train=20.0 + 0.8 * x + 0.2 * x * x,
                    why=f"dof={x}")

    @classmethod
    def from_spec(cls, spec: Spec, form: str = "generic", angles: tuple[int, ...] = (), **options) -> LagrangianNN:
        """``dof = state_dim / 2`` and the two settings only this architecture reads:
        ``form`` and ``angles`` (see the class docstring), refused with a ParameterError
        naming the range."""
        dof = spec.even_state() // 2
        if form not in FORMS:
            raise ParameterError(f"form must be one of {', '.join(FORMS)}; got {form!r}")
        if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < dof for i in angles):
            raise ParameterError(f"angles must be coordinate indices in [0, {dof - 1}]; got {tuple(angles)!r}")
        return cls(dof, width=spec.width, depth=spec.depth, activation=spec.activation, form=form,
                   angles=tuple(angles))

    @classmethod
    def from_config(cls, system, config) -> LagrangianNN:
        """What it reads of a run's ``TrainConfig`` beyond width and depth: the form
        (``lnn_form``), the system's angle coordinates, and softplus in place of tanh and
        silu for the generic form (its dynamics uses second derivatives)."""
        activation = config.activation
        if config.lnn_form == "generic" and activation in ("tanh", "silu"):
            activation = "softplus"
        return cls.from_spec(cls.spec_from_config(system, config, activation=activation),
                             form=config.lnn_form, angles=tuple(system.angle_coords))

    def __init__(self, dof: int, width: int = 64, depth: int = 2, activation: str = "softplus",
                 lagrangian: Lagrangian | None = None, tikhonov: float | None = None,
                 form: str = "generic", angles: tuple[int, ...] = ()):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}; got {form!r}")
        angles = tuple(sorted(set(int(i) for i in angles)))
        if any(not 0 <= i < dof for i in angles):
            raise ValueError(f"angles must be coordinate indices in [0, {dof - 1}]; got {angles}")
        self.dof = dof
        self.state_dim = 2 * dof
        self.tikhonov = tikhonov
        self.form = form
        self.angles = angles
        self._plain = [i for i in range(dof) if i not in angles]
        self._given = lagrangian
        self.net = None
        if lagrangian is None:
            n_feat = dof + len(angles)  # an angle enters as (cos, sin)
            if form == "generic":
                self.net = mlp.make_mlp(n_feat + dof, 1, width, depth, activation, out_bias=False)
            else:
                # one trunk on q: the dof(dof+1)/2 entries of a Cholesky factor of M, and V
                self.net = mlp.make_mlp(n_feat, dof * (dof + 1) // 2 + 1, width, depth, activation)
                rows, cols = torch.tril_indices(dof, dof)
                self.register_buffer("_tril_rows", rows, persistent=False)
                self.register_buffer("_tril_cols", cols, persistent=False)
                self.register_buffer("_diag", (rows == cols).nonzero().squeeze(-1), persistent=False)
        self.register_buffer("x_mean", torch.zeros(2 * dof))
        self.register_buffer("x_std", torch.ones(2 * dof))

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        """Input scales from training states ``x = [q, q̇] (N, 2·dof)``; ``y = [q̇, q̈]`` is
        only shape-checked (no output rescaling is compatible with Euler–Lagrange
        beyond what the inputs' scales already imply, see the class docstring).
        The mechanical form keeps ``q̇``'s origin at 0 (a shift would add a term linear in
        ``q̇``, which that form excludes) and scales it by its rms."""
        mlp.check_pair(x, y, self.state_dim, self.state_dim)
        self.x_mean.copy_(x.mean(0))
        self.x_std.copy_(mlp.spread(x))
        if self.form == "mechanical":
            self.x_mean[self.dof:] = 0.0
            rms = x[:, self.dof:].pow(2).mean(0).sqrt()
            self.x_std[self.dof:] = rms.clamp_min(1e-2 * float(rms.max()) + 1e-12)

    def _features(self, q: Tensor) -> Tensor:
        """Network inputs for the coordinates ``q (B, dof)``: ``(cos q_i, sin q_i)`` for
        the angles (exactly 2π-periodic: nothing jumps where a path goes over the top),
        the normalised ``q_i`` for the rest."""
        if not self.angles:
            return (q - self.x_mean[: self.dof]) / self.x_std[: self.dof]
        plain = (q[..., self._plain] - self.x_mean[self._plain]) / self.x_std[self._plain]
        a = q[..., list(self.angles)]
        return torch.cat([plain, torch.cos(a), torch.sin(a)], -1)

    def _mass_from(self, entries: Tensor) -> Tensor:
        """``M = C Cᵀ + εI`` from the lower triangle of ``C`` (diagonal through softplus):
        symmetric positive definite by construction, ``(B, dof(dof+1)/2) -> (B, dof, dof)``."""
        diag = nn.functional.softplus(entries[..., self._diag])
        entries = entries.index_copy(-1, self._diag, diag)
        C = entries.new_zeros(*entries.shape[:-1], self.dof, self.dof)
        C[..., self._tril_rows, self._tril_cols] = entries
        eye = torch.eye(self.dof, dtype=entries.dtype, device=entries.device)
        return C @ C.mT + MASS_FLOOR * eye

    def mass_matrix(self, q: Tensor) -> Tensor:
        """Mechanical form: the learned mass matrix ``M_θ(q)`` in normalised velocity units
        (``L = ½ vᵀ M v − V`` with ``v = q̇/σ_q̇``): ``(B, dof) -> (B, dof, dof)``."""
        if self.form != "mechanical" or self.net is None:
            raise ValueError("mass_matrix needs form='mechanical' and a learned Lagrangian")
        return self._mass_from(self.net(self._features(q))[..., :-1])

    def lagrangian(self, q: Tensor, qdot: Tensor) -> Tensor:
        """``L(q, q̇)``: ``(B, dof), (B, dof) -> (B,)``."""
        if self.net is None:
            return self._given(q, qdot)
        if self.form == "mechanical":
            # the reference configuration (the training mean) rides along in the batch:
            # V is measured from it, which fixes V's arbitrary constant (E_θ = 0 at rest
            # there, like the true energies here) so the learned energy's relative drift
            # means something
            lead = q.shape[:-1]
            ref = self.x_mean[: self.dof].expand(1, self.dof).to(q.dtype)
            out = self.net(self._features(torch.cat([q.reshape(-1, self.dof), ref])))  # (B + 1, dof(dof+1)/2 + 1)
            M = self._mass_from(out[:-1, :-1])  # (B, dof, dof)
            v = (qdot / self.x_std[self.dof:]).reshape(-1, self.dof)
            lag = 0.5 * torch.einsum("bi,bij,bj->b", v, M, v) - (out[:-1, -1] - out[-1, -1])
            return lag.reshape(lead)
        s = torch.cat([self._features(q), (qdot - self.x_mean[self.dof:]) / self.x_std[self.dof:]], -1)
        return self.net(s).squeeze(-1)

    @mlp.escape_inference_mode
    def learned_energy(self, s: Tensor) -> Tensor:
        """``E_θ = q̇·∂L/∂q̇ − L``, the model's own conserved quantity: ``(B, 2·dof) -> (B,)``."""
        return lagrangian_energy(self.lagrangian, s[..., : self.dof], s[..., self.dof :])

    @mlp.escape_inference_mode
    def forward(self, s: Tensor, t=None) -> Tensor:
        """``s = [q, q̇] (B, 2·dof) -> [q̇, q̈] (B, 2·dof)``; ``t`` is ignored."""
        q, qdot = s[..., : self.dof], s[..., self.dof :]
        qddot = euler_lagrange_acceleration(self.lagrangian, q, qdot, self.tikhonov)
        return torch.cat([qdot, qddot], -1)
