"""Batched fixed-step integrators, shared by the true systems and every learned model.

An integrator is a factory: ``step = rk4(f, dt)`` returns ``step(z, t) -> z_next`` for a
vector field ``f(z, t) -> dz/dt`` with ``z`` of shape ``(B, D)``. :func:`rollout` and
:func:`solve` drive any of them, so truth and models are integrated by the same code.

Orders (fitted in ``tests/test_integrators.py``): euler 1, rk4 4, leapfrog 2,
implicit midpoint 2, discrete gradient 2. Leapfrog and implicit midpoint are symplectic:
on a Hamiltonian system their energy error stays bounded instead of growing.

Two tools make a rollout *exact in discrete time*, not only in continuous time:

* :func:`discrete_gradient` integrates a field written as ``ż = (J − R)∇H``
  (:class:`GradientForm`: the true systems, the HNN) so that ``H`` is conserved by every
  step up to the solve tolerance, and never increases when ``R ⪰ 0``.
* :class:`Projection` pulls each step of *any* rollout back onto ``{Q_k(z) = Q_k(z₀)}``
  for chosen known invariants (standard projection, simplified Newton along ``∇Q``):
  "hard at inference". It fixes the invariants, not the trajectory or its phase.

References:
    Hairer, Lubich, Wanner, *Geometric Numerical Integration*, 2nd ed. (2006), ch. II,
    IV.4 (projection methods) & VI.
    Gonzalez, "Time integration and discrete Hamiltonian systems", J. Nonlinear Sci. 6
    (1996) (the midpoint discrete gradient).
    McLachlan, Quispel, Robidoux, "Geometric integration using discrete gradients",
    Phil. Trans. R. Soc. A 357 (1999).
    Matsubara, Ishikawa, Yaguchi, "Deep Energy-Based Modeling of Discrete-Time Physics"
    (DGNet), NeurIPS 2020.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Iterator, Protocol

import torch

Tensor = torch.Tensor
VectorField = Callable[[Tensor, float], Tensor]  # (z (B, D), t) -> dz/dt (B, D)
Step = Callable[[Tensor, float], Tensor]  # (z (B, D), t) -> z after one step (B, D)


class Stopped(Exception):
    """A long loop saw its stop signal and ended early.

    Deliberately not a :class:`RuntimeError`: the trainer reports a ``RuntimeError`` as a
    failed run ("error"); a stop is the user's choice and is reported as ``"stopped"``.
    """


#: the stop check of the code running now (see :func:`stopping`); a ContextVar so each
#: thread (each dashboard run) has its own and none can stop another's loops
_STOP: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("conserv_stop", default=None)


@contextlib.contextmanager
def stopping(should_stop: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, every long loop (:func:`rollout`, :func:`solve`, the flow
    solver) calls ``should_stop()`` once per step and raises :class:`Stopped` when it
    returns true. This reaches loops that cannot take an argument, such as the flow
    solver behind its cache or a system's data generation.

    Args:
        should_stop: e.g. ``threading.Event().is_set``; None clears an outer check.
    """
    token = _STOP.set(should_stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def check_stop(should_stop: Callable[[], bool] | None = None) -> None:
    """Raise :class:`Stopped` if ``should_stop`` (default: the one set by
    :func:`stopping`) says so. Costs one call, well under a microsecond."""
    fn = should_stop if should_stop is not None else _STOP.get()
    if fn is not None and fn():
        raise Stopped("stopped")


class Factory(Protocol):
    def __call__(self, f: VectorField, dt: float) -> Step: ...


def euler(f: VectorField, dt: float) -> Step:
    """Explicit Euler, order 1. Not symplectic: energy grows on oscillators."""

    def step(z: Tensor, t: float) -> Tensor:
        return z + dt * f(z, t)

    return step


def rk4(f: VectorField, dt: float) -> Step:
    """Classical fourth-order Runge–Kutta. Accurate, but not symplectic: energy drifts
    slowly (at order dt⁴) instead of oscillating."""

    def step(z: Tensor, t: float) -> Tensor:
        k1 = f(z, t)
        k2 = f(z + 0.5 * dt * k1, t + 0.5 * dt)
        k3 = f(z + 0.5 * dt * k2, t + 0.5 * dt)
        k4 = f(z + dt * k3, t + dt)
        return z + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    return step


def leapfrog(f: VectorField, dt: float) -> Step:
    """Störmer–Verlet (kick–drift–kick), order 2, symplectic for separable
    Hamiltonians ``H = T(p) + V(q)``, i.e. when ``dq/dt`` depends on ``p`` only and
    ``dp/dt`` on ``q`` only. The state is ``z = [q, p]`` split in two equal halves.

    On a non-separable field (a general learned H) it is still a consistent method but
    loses symplecticity and its second order; use :func:`implicit_midpoint` there.
    """

    def step(z: Tensor, t: float) -> Tensor:
        d = z.shape[-1] // 2
        q, p = z[..., :d], z[..., d:]
        p_half = p + 0.5 * dt * f(z, t)[..., d:]
        q_new = q + dt * f(torch.cat([q, p_half], -1), t + 0.5 * dt)[..., :d]
        p_new = p_half + 0.5 * dt * f(torch.cat([q_new, p_half], -1), t + dt)[..., d:]
        return torch.cat([q_new, p_new], -1)

    return step


def implicit_midpoint(f: VectorField, dt: float, tol: float | None = None, max_iter: int = 100) -> Step:
    """Implicit midpoint rule ``z' = z + dt f((z + z')/2, t + dt/2)``, order 2, symplectic
    for *any* Hamiltonian vector field and exactly conserving every quadratic invariant.

    The implicit equation is solved by fixed-point iteration (converges when
    ``dt * Lip(f) < 2``) until the update is below ``tol`` relative to ``1 + |z|``;
    ``tol`` defaults to 100 machine epsilons of the state's dtype (at 10 the iteration
    stalls at round-off on an ordinary pendulum step and never meets it). Raises if it does not
    converge, rather than silently returning an unconverged state. A field that is itself
    non-finite (a blown-up model) gives a non-finite step instead, for :func:`rollout` to
    report; iterates that overflow because the iteration diverges still raise.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")

    def step(z: Tensor, t: float) -> Tensor:
        eps = tol if tol is not None else 100 * torch.finfo(z.dtype).eps
        tm = t + 0.5 * dt
        z_new = z + dt * f(z, tm)  # Euler predictor
        if not torch.isfinite(z_new).all():
            return z_new  # the field is non-finite at z
        for _ in range(max_iter):
            mid = 0.5 * (z + z_new)
            k = f(mid, tm)
            z_next = z + dt * k
            err = float(((z_next - z_new).abs() / (1.0 + z_next.abs())).max())
            z_new = z_next
            if err <= eps:
                return z_new
            if not math.isfinite(err):
                if torch.isfinite(mid).all() and not torch.isfinite(k).all():
                    return z_new  # the field is non-finite at a finite point of this step
                break  # the iterates overflowed (float32 does so quickly): divergence
        raise RuntimeError(
            f"implicit midpoint did not converge in {max_iter} iterations at t={t:.4g} "
            f"(last update {err:.2e}); reduce dt (now {dt})"
        )

    return step


class SeparableEnergy:
    """A declaration that ``H(q, p) = ½ Σ_i p_i² / m_i + V(q)``: a separable energy whose
    kinetic part is quadratic with a diagonal mass, with the potential and its first two
    derivatives in closed form, and a dissipation (if any) that is constant and acts on
    the momenta only, ``R = [[0, 0], [0, R_pp]]``. What :func:`discrete_gradient`'s
    Newton solve needs: then ``∇²H = diag(∇²V(q), M⁻¹)`` and each Newton system reduces
    to ``dof`` unknowns (the other half eliminated).

    A system opts in by returning one from
    :meth:`~conserv_core.systems.base.ODESystem.separable_energy`;
    ``tests/test_geometric.py`` checks each declaration against the system's
    :meth:`energy` (its value, autograd's gradient and Hessian) and :meth:`dissipation`.

    Args:
        inverse_mass: ``1 / m_i`` per coordinate, ``dof`` floats.
        potential: ``q (B, dof), hessian -> (V (B,), ∇V (B, dof), ∇²V (B, dof, dof))``
            (``∇²V`` None when ``hessian`` is false: the predictor needs none), computed
            together (n-body's come from one pass over the pairs).
        momentum_dissipation: ``R_pp``, ``dof × dof`` nested floats, or None.
    """

    def __init__(self, inverse_mass, potential: Callable[..., tuple[Tensor, Tensor, Tensor | None]],
                 momentum_dissipation=None):
        self.inverse_mass = tuple(float(v) for v in inverse_mass)
        self.potential = potential
        self.momentum_dissipation = (None if momentum_dissipation is None
                                     else tuple(tuple(float(v) for v in row) for row in momentum_dissipation))
        self._cache: dict = {}

    def constants(self, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """``M⁻¹ (dof,)`` and ``R_pp (dof, dof)`` (or None) in ``like``'s dtype and device,
        built once each."""
        key = (like.dtype, like.device)
        if key not in self._cache:
            minv = torch.tensor(self.inverse_mass, dtype=like.dtype, device=like.device)
            r = self.momentum_dissipation
            self._cache[key] = (minv, None if r is None else torch.tensor(r, dtype=like.dtype, device=like.device))
        return self._cache[key]


class GradientForm:
    """A vector field written as ``ż = (J − R(z)) ∇H(z)`` with a scalar ``H``.

    ``J = [[0, I], [−I, 0]]`` is the canonical structure on ``z = [q, p]`` and ``R`` a
    positive semi-definite dissipation (None: ``R = 0``, a Hamiltonian field). Then
    ``dH/dt = −∇Hᵀ R ∇H ≤ 0`` along the exact flow, and :func:`discrete_gradient` keeps
    that in discrete time. The form is itself a vector field (``form(z, t)``), so any
    integrator can roll it out.

    Args:
        energy: ``H``, ``(B, D) -> (B,)`` with rows independent; differentiable in ``z``.
        dissipation: ``R``, ``(B, D) -> (B, D, D)``, or None.
        gradient: ``∇H`` in closed form, ``(B, D) -> (B, D)`` (default: autograd of
            ``energy``); the true systems give theirs, learned models use autograd.
        separable: a :class:`SeparableEnergy` declaration (with ``gradient``): the
            discrete gradient then solves its step by Newton instead of fixed-point
            iteration. None (learned models, systems without one): the general solve.
    """

    def __init__(self, energy: Callable[[Tensor], Tensor],
                 dissipation: Callable[[Tensor], Tensor] | None = None,
                 gradient: Callable[[Tensor], Tensor] | None = None,
                 separable: SeparableEnergy | None = None):
        if separable is not None and gradient is None:
            raise ValueError("a separable-energy declaration needs the closed-form gradient too")
        self.energy = energy
        self.dissipation = dissipation
        self._gradient = gradient
        self.separable = separable

    def gradient(self, z: Tensor) -> Tensor:
        """``∇H(z)``, ``(B, D)``; works under ``torch.no_grad()`` and keeps no graph."""
        if self._gradient is not None:
            return self._gradient(z)
        with torch.inference_mode(False), torch.enable_grad():
            x = z.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.energy(x).sum(), x)
        return g.detach()

    def gradient_and_energy(self, m: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``∇H(m) (B, D)`` and ``H(y) (B,)``: what each discrete-gradient iterate needs.
        By autograd, one forward pass over ``[m; y]`` and one backward: a learned energy's
        small batches cost per call more than per row, so this is cheaper than two passes."""
        if self._gradient is not None:
            return self._gradient(m), self.energy(y)
        b = m.shape[0]
        with torch.inference_mode(False), torch.enable_grad():
            x = torch.cat([m, y]).detach().requires_grad_(True)
            h = self.energy(x)
            (g,) = torch.autograd.grad(h[:b].sum(), x)
        return g[:b].detach(), h[b:].detach()

    def apply(self, z: Tensor, v: Tensor) -> Tensor:
        """``(J − R(z)) v`` for ``v (B, D)``."""
        d = v.shape[-1] // 2
        out = torch.cat([v[..., d:], -v[..., :d]], -1)
        if self.dissipation is not None:
            out = out - (self.dissipation(z) @ v.unsqueeze(-1)).squeeze(-1)
        return out

    def __call__(self, z: Tensor, t: float | None = None) -> Tensor:
        return self.apply(z, self.gradient(z))


def gradient_form_of(f) -> GradientForm | None:
    """``f`` itself if it is a :class:`GradientForm`, else its ``gradient_form`` attribute
    (None when it has none)."""
    return f if isinstance(f, GradientForm) else getattr(f, "gradient_form", None)


def _anderson(ys: list[Tensor], gs: list[Tensor], y: Tensor, gy: Tensor, memory: int = 3) -> Tensor:
    """The next iterate of a fixed-point iteration ``y = G(y)`` by Anderson mixing, per
    batch row: the combination of the last ``memory`` + 1 images ``G(y_k)`` whose
    residuals ``G(y_k) − y_k`` cancel best (least squares). ``ys``/``gs`` are the history,
    updated in place. Falls back to ``gy`` (plain Picard) where the mix is not finite.
    """
    ys.append(y)
    gs.append(gy)
    if len(ys) > memory + 1:
        ys.pop(0)
        gs.pop(0)
    if len(ys) < 2:
        return gy
    f = [g - x for g, x in zip(gs, ys)]  # residuals, each (B, D)
    d_f = torch.stack([b - a for a, b in zip(f[:-1], f[1:])], -1)  # (B, D, k)
    d_g = torch.stack([b - a for a, b in zip(gs[:-1], gs[1:])], -1)  # (B, D, k)
    gamma = torch.linalg.lstsq(d_f, f[-1].unsqueeze(-1)).solution  # (B, k, 1)
    mixed = gy - (d_g @ gamma).squeeze(-1)
    ok = torch.isfinite(mixed).all(-1, keepdim=True)
    return torch.where(ok, mixed, gy)


def _gonzalez(form: GradientForm, x: Tensor, y: Tensor, hx: Tensor) -> tuple[Tensor, Tensor]:
    """The midpoint ``m = (x + y)/2`` and Gonzalez's discrete gradient ``∇̄H(x, y)``, each
    ``(B, D)``, for ``hx = H(x) (B,)``."""
    m = 0.5 * (x + y)
    gm, hy = form.gradient_and_energy(m, y)  # (B, D), (B,)
    delta = y - x
    dd = (delta * delta).sum(-1)  # (B,)
    gap = hy.detach() - hx - (gm * delta).sum(-1)  # (B,)
    coef = torch.where(dd > 0, gap / torch.where(dd > 0, dd, torch.ones_like(dd)), torch.zeros_like(dd))
    return m, gm + coef.unsqueeze(-1) * delta


def _newton_solve(sep: SeparableEnergy, dt: float, z: Tensor, eps: float, stall: float,
                  max_iter: int) -> tuple[Tensor | None, int]:
    """Newton's method on ``F(y) = y − z − dt (J − R) ∇̄H(z, y) = 0`` for a separable
    energy (:class:`SeparableEnergy`), on the halves ``q, p`` of ``z (B, D)``.

    Returns ``(z', iterations)``: ``z'`` None where it did not converge or went
    non-finite (the caller falls back to the fixed-point solve), and the evaluations of
    ``G``. From the explicit midpoint predictor, each iteration evaluates ``V, ∇V, ∇²V``
    once over ``[q̄; q']`` (midpoint and iterate), forms the fixed-point image ``G(y)``,
    returned once ``|G(y) − y|`` is below ``eps`` relative to ``1 + |G(y)|`` (as in the
    fixed-point solve), else steps ``y ← y + F'(y)⁻¹ (G(y) − y)``. The derivative is
    exact, so convergence is quadratic:

        ``∂∇̄H/∂y = K₀ + δ wᵀ``,  ``K₀ = ½∇²H(m) + c I``,
        ``w = ∂c/∂y = [∇H(y) − ∇H(m) − ½∇²H(m) δ − 2cδ] / |δ|²``

    (``c`` the correction's coefficient, see :func:`_gonzalez`); the kinetic part of the
    bracket cancels exactly (``T`` quadratic). Leaving out ``c I + δ wᵀ`` (both O(Δt))
    makes it linear. ``δ wᵀ`` goes through Sherman–Morrison, and the rest,
    ``P = I − dt (J − R) K₀ = [[I, −dt S], [dt Q, I + dt R_pp S]]`` with
    ``Q = ½∇²V + cI`` and the diagonal ``S = ½M⁻¹ + cI``, reduces to the momenta:
    ``(I + dt R_pp S + dt² Q S) s_p = b_p − dt Q b_q``, ``s_q = b_q + dt S s_p``: one
    ``dof × dof`` solve with two right-hand sides.

    Tried without gain: ``∇²V`` only when a Newton step follows (separate passes cost
    what the skipped Hessian saved); ``∇²V`` and ``P`` kept from the first Newton step
    (that step starts at the predictor's error, 1e-2 on fast pendulum rows, and float64
    then took 4-6 evaluations instead of 3).

    The rate also says when to stop without one more evaluation: a row whose residual
    went from ``e₀`` to ``e₁`` has ``e₁³/e₀²`` left after the next Newton step if the
    convergence is quadratic, and at most ``e₁²/e₀`` even if it were only linear at the
    rate just seen; when that bound is below ``eps / 10`` on every row, the stepped
    iterate is returned (its residual is that small, so is its energy error:
    ``∇̄H·δ = ΔH`` holds for any ``y``). The quadratic estimate alone accepted too early
    when the derivative was planted wrong. Every tensor here is small and dispatch-bound (32 × 2 on the pendulum), so the
    code counts operations: fused ``add(alpha=)`` and ``addcmul``, no per-iteration
    finiteness checks.
    """
    b, dim = z.shape
    d = dim // 2
    minv, r_pp = sep.constants(z)  # (d,), (d, d) or None
    half_minv = 0.5 * minv
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    q, p = z[:, :d], z[:, d:]
    # explicit midpoint predictor (as the fixed-point solve's), and H(z) on the way
    v0, gv0, _ = sep.potential(q, hessian=False)
    hz = v0 + (p * p) @ half_minv  # (B,)
    vel = minv * p  # ∂H/∂p, (B, d)
    force = gv0 if r_pp is None else gv0 + vel @ r_pp.T  # −ṗ
    qh = torch.add(q, vel, alpha=0.5 * dt)
    ph = torch.sub(p, force, alpha=0.5 * dt)
    vel = minv * ph
    force = sep.potential(qh, hessian=False)[1]
    if r_pp is not None:
        force = force + vel @ r_pp.T
    y = torch.cat([torch.add(q, vel, alpha=dt), torch.sub(p, force, alpha=dt)], -1)  # (B, D)
    tiny = torch.finfo(z.dtype).tiny
    prev = None  # the previous iteration's row residuals, (B,)
    last = math.inf
    for i in range(max_iter):
        q1, p1 = y[:, :d], y[:, d:]
        delta = y - z  # (B, D)
        dq, dp = delta[:, :d], delta[:, d:]
        pm = torch.add(p, dp, alpha=0.5)
        v, gv, hv = sep.potential(torch.cat([torch.add(q, dq, alpha=0.5), q1]))  # (2B,), (2B, d), (2B, d, d)
        gvm, hvm = gv[:b], hv[:b]  # ∇V, ∇²V at the midpoint
        gpm = minv * pm  # ∇_p H(m), (B, d)
        dd = (delta * delta).sum(-1).clamp_min(tiny)  # |δ|², (B,); δ = 0 only at a rest point, where gap = 0
        gap = v[b:] + (p1 * p1) @ half_minv - hz - (gvm * dq).sum(-1) - (gpm * dp).sum(-1)
        c1 = (gap / dd).unsqueeze(-1)  # c, (B, 1)
        gbar_q = torch.addcmul(gvm, c1, dq)  # ∇̄H, each half (B, d)
        gbar_p = torch.addcmul(gpm, c1, dp)
        if r_pp is not None:
            gbar_q = gbar_q + gbar_p @ r_pp.T  # −ṗ = ∇̄_q H + R_pp ∇̄_p H
        image = torch.cat([torch.add(q, gbar_p, alpha=dt), torch.sub(p, gbar_q, alpha=dt)], -1)  # G(y), (B, D)
        res = image - y
        rows = (res.abs() / (1.0 + image.abs())).amax(-1)  # (B,)
        err = float(rows.max())
        if not math.isfinite(err):
            return None, i + 1
        if err <= eps or (err <= stall and err >= 0.5 * last and i >= 2):
            return image, i + 1
        last = err
        # Newton: w = ∂c/∂y (B, D); its p half is −2c δp / |δ|² (the kinetic terms cancel)
        w_q = gv[b:] - gvm - (hvm * dq.unsqueeze(-2)).sum(-1).mul_(0.5)
        w = torch.cat([w_q, torch.zeros_like(p)], -1).sub_(delta * (2.0 * c1)).div_(dd.unsqueeze(-1))
        u_p = -dq if r_pp is None else -dq - dp @ r_pp.T  # u = (J − R) δ: [δp, u_p]
        q_mat = torch.addcmul(0.5 * hvm, c1.unsqueeze(-1), eye)  # Q = ½∇²V + cI, (B, d, d)
        s_diag = half_minv + c1  # S, (B, d)
        system = torch.addcmul(eye, q_mat, s_diag.unsqueeze(-2), value=dt * dt)  # I + dt² Q S
        if r_pp is not None:
            system = torch.addcmul(system, r_pp, s_diag.unsqueeze(-2), value=dt)
        rhs_q = torch.stack([res[:, :d], dp], -1)  # (B, d, 2): P⁻¹ of [residual, u] together
        rhs_p = torch.stack([res[:, d:], u_p], -1).sub_(q_mat @ rhs_q, alpha=dt)
        # a 1 × 1 system is a division, not a batched LU
        sol_p = rhs_p / system if d == 1 else torch.linalg.solve_ex(system, rhs_p)[0]  # (B, d, 2)
        sol = torch.cat([torch.addcmul(rhs_q, s_diag.unsqueeze(-1), sol_p, value=dt), sol_p], 1)  # (B, D, 2)
        wab = (w.unsqueeze(-1) * sol).sum(1)  # [w·P⁻¹res, w·P⁻¹u], (B, 2)
        mix = wab[:, :1] * dt / (1.0 - dt * wab[:, 1:])  # Sherman–Morrison for P − dt u wᵀ, (B, 1)
        y = y + torch.addcmul(sol[..., 0], mix, sol[..., 1])
        if prev is not None and float((rows * rows / prev.clamp_min(tiny)).max()) <= 0.1 * eps:
            return y, i + 1  # the step just taken leaves at most ~e₁²/e₀ (see above)
        prev = rows
    return None, max_iter


#: how :func:`discrete_gradient` solves its implicit step
SOLVERS = ("auto", "newton", "fixed_point")


def discrete_gradient(f, dt: float, tol: float | None = None, max_iter: int = 100,
                      anderson: bool = True, solver: str = "auto") -> Step:
    """Energy-conserving step ``z' = z + dt (J − R(m)) ∇̄H(z, z')`` with ``m = (z + z')/2``
    and Gonzalez's midpoint discrete gradient

        ``∇̄H(x, y) = ∇H(m) + [H(y) − H(x) − ∇H(m)·δ] δ / |δ|²``,  ``δ = y − x``,

    which satisfies ``∇̄H(x, y)·(y − x) = H(y) − H(x)`` for *any* ``x, y``. Hence
    ``H(z') − H(z) = −dt ∇̄Hᵀ R ∇̄H``: zero for a Hamiltonian field, never positive when
    ``R ⪰ 0``, exactly up to the solve tolerance, however large the step. Second order
    (the scheme is symmetric).

    The implicit equation is solved from an explicit midpoint predictor until the update
    is below ``tol`` relative to ``1 + |z|`` (default: 100 machine epsilons), by

    * Newton's method (:func:`_newton_solve`) where the form declares a
      :class:`SeparableEnergy` (the pendulum's and n-body's truth): 2 evaluations a step
      in float32, 3 in float64 (``benchmarks/bench_geometric.py``), each Newton step a
      ``dof × dof`` solve; where it does not converge, the fixed-point solve takes over;
    * otherwise fixed-point iteration accelerated by Anderson mixing (``anderson=False``:
      plain Picard, about three times the iterations): a learned energy's Hessian is not
      at hand, and one of its iterations costs one batched pass.

    Both solve the same equations, so they give the same steps to the tolerance. Raises
    if the solve does not converge (a step too large for the field's stiffness).
    ``step.iterations`` holds the count of the last step (evaluations of ``G``).

    Args:
        f: a :class:`GradientForm`, or a field with a ``gradient_form`` attribute. A field
            without a scalar energy is refused (``ValueError``).
        solver: ``"auto"`` (Newton where declared), ``"newton"`` (refused without a
            declaration) or ``"fixed_point"`` (the general solve, for any form).
    """
    form = gradient_form_of(f)
    if form is None:
        raise ValueError("integrator 'discrete_gradient' needs a vector field of the form (J − R)∇H with a scalar "
                         "energy H (the true systems, and the hnn and phnn models); this field has none: use rk4 or "
                         "implicit_midpoint, or the projection option")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")
    if solver not in SOLVERS:
        raise ValueError(f"discrete gradient solver must be one of {', '.join(SOLVERS)}; got {solver!r}")
    if solver == "newton" and form.separable is None:
        raise ValueError("the discrete gradient's Newton solve needs a separable-energy declaration "
                         "(SeparableEnergy: quadratic kinetic energy, the potential's Hessian); this form has none: "
                         "use solver='auto' or 'fixed_point'")
    newton = form.separable is not None and solver != "fixed_point"

    def step(z: Tensor, t: float) -> Tensor:
        eps = tol if tol is not None else 100 * torch.finfo(z.dtype).eps
        # the correction term's round-off grows as |δ| shrinks, so a converged iteration
        # can wander just above eps: accept a stalled update below this
        stall = max(eps, 1000 * torch.finfo(z.dtype).eps)
        if newton:
            with torch.no_grad():
                out, step.iterations = _newton_solve(form.separable, dt, z, eps, stall, max_iter)
            if out is not None:
                return out
            # not converged or not finite (a singular Newton system, a blown-up state): the
            # fixed-point solve below decides, with its own reports
        with torch.no_grad():
            hz = form.energy(z).detach()
            y = z + dt * form(z + 0.5 * dt * form(z))  # explicit midpoint predictor (order 2)
            if not torch.isfinite(y).all():
                return y
            last = math.inf
            ys: list[Tensor] = []
            gs: list[Tensor] = []
            for i in range(max_iter):
                m, g = _gonzalez(form, z, y, hz)
                gy = z + dt * form.apply(m, g)  # the fixed-point map G(y)
                err = float(((gy - y).abs() / (1.0 + gy.abs())).max())
                step.iterations = i + 1
                if not math.isfinite(err):
                    if torch.isfinite(m).all() and not torch.isfinite(g).all():
                        return gy  # the field is non-finite at a finite point: rollout reports it
                    break
                if err <= eps or (err <= stall and err >= 0.5 * last and i >= 2):
                    return gy  # converged, or stalled at round-off just above eps
                last = err
                y = _anderson(ys, gs, y, gy) if anderson else gy
            if last <= stall:
                return gy
        raise RuntimeError(
            f"discrete gradient did not converge in {max_iter} iterations at t={t:.4g} "
            f"(last update {err:.2e}); reduce dt (now {dt})"
        )

    step.iterations = 0
    return step


class Projection:
    """Project a state onto ``{Q_k(z) = Q_k(z₀)}`` for chosen invariants: "hard at
    inference", for any model.

    After a step gives ``z̃``, move along ``∇Q`` onto ``Q(z) = Q(z₀)``: Newton steps
    ``z ← z + G(z)ᵀΔλ`` with ``G(z)G(z)ᵀΔλ = −(Q(z) − Q(z₀))`` and ``G = ∂Q/∂z``. This is
    the standard projection method (Hairer, Lubich & Wanner IV.4) with ``G`` re-evaluated at
    each iterate rather than kept from ``z̃`` (simplified Newton): the invariants here are
    cheap to differentiate, and an untrained model's step can land far from the set,
    where simplified Newton crawls (measured: 20 iterations and 1e-8 left on the OOD
    pendulum) and Newton takes two or three. A step that does not lower a row's residual
    is halved for that row (up to 6 times): near a saddle of ``Q`` (a pendulum just over
    the top) the full step overshoots and plain Newton stalled at 8e-3. The iteration stops when every component is
    within ``tol`` of its target, relative to the invariant's scale (``tol`` is raised to
    8 ulps of the state's dtype: float32 cannot hold 1e-10), or when it stalls. A
    projection that cannot reach ``tol`` keeps its best iterate: the drift curves then
    show the residual honestly.

    Args:
        invariants: name -> ``Q``, ``(B, D) -> (B,)`` or ``(B, k)``; rows independent,
            differentiable in ``z``.
        tol: relative tolerance, ``> 0``.
        evaluate: ``z -> (Q (B, K), ∂Q/∂z (B, K, D))`` for the invariants in order, in
            closed form and computed together (a system's
            :meth:`~conserv_core.systems.base.ODESystem.invariants_and_gradients`): each
            Newton iterate is then evaluated once, values and Jacobian, where they share
            work (n-body's pair sums). Default: the values from ``invariants`` and the
            Jacobian by autograd.
        scales: name -> ``(B,)`` scales the tolerance is relative to (default ``|Q(z₀)|``,
            floored at 1e-12); set per start by :meth:`start`.
    """

    def __init__(self, invariants: dict[str, Callable[[Tensor], Tensor]], tol: float = 1e-10,
                 max_iter: int = 12, evaluate: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None):
        if not invariants:
            raise ValueError("projection needs at least one invariant to project onto")
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
            raise ValueError(f"projection tolerance must be a finite number > 0; got {tol!r}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1; got {max_iter}")
        self.invariants = dict(invariants)
        self.evaluate = evaluate
        self.tol = float(tol)
        self.max_iter = max_iter
        #: the iterations the last call took (for benchmarks)
        self.last_iterations = 0

    def values(self, z: Tensor) -> Tensor:
        """All chosen invariants stacked, ``(B, D) -> (B, K)``."""
        parts = [fn(z) for fn in self.invariants.values()]
        return torch.cat([q.reshape(q.shape[0], -1) for q in parts], -1)

    def start(self, z0: Tensor, scales: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Targets ``Q(z₀) (B, K)`` and tolerance scales ``(B, K)`` for a rollout from ``z0``."""
        with torch.no_grad():
            q0 = self.values(z0)
        cols = []
        for name, fn in self.invariants.items():
            with torch.no_grad():
                q = fn(z0).reshape(z0.shape[0], -1)
            s = scales[name] if scales is not None and name in scales else q.abs().amax(-1)
            cols.append(s.reshape(-1, 1).expand(-1, q.shape[1]))
        return q0, torch.cat(cols, -1).clamp_min(1e-12)

    def _jacobian(self, z: Tensor) -> Tensor:
        """``∂Q/∂z (B, K, D)`` by autograd: one forward and one (batched) backward pass."""
        with torch.inference_mode(False), torch.enable_grad():
            x = z.detach().clone().requires_grad_(True)
            q = self.values(x)  # (B, K)
            k = q.shape[1]
            if k == 1:
                return torch.autograd.grad(q.sum(), x)[0].detach().unsqueeze(1)
            # all K rows in one batched backward pass (vmap over the cotangents)
            eye = torch.eye(k, dtype=q.dtype, device=q.device).unsqueeze(1).expand(k, *q.shape)
            (rows,) = torch.autograd.grad(q, x, grad_outputs=eye, is_grads_batched=True)  # (K, B, D)
        return rows.transpose(0, 1).detach()

    def _at(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """``Q(z) (B, K)``, and ``∂Q/∂z`` when it comes with them (else None: autograd
        computes it when a Newton step needs it)."""
        if self.evaluate is not None:
            return self.evaluate(z)
        return self.values(z), None

    @staticmethod
    def _newton_step(g: Tensor, r: Tensor) -> Tensor:
        """The Gauss–Newton step ``−Gᵀ(GGᵀ)⁻¹ r (B, D)`` for residuals ``r = Q − Q₀
        (B, K)`` and ``G = ∂Q/∂z (B, K, D)`` at the iterate.

        One invariant: ``−r ∇Q / |∇Q|²`` (no step where ``∇Q = 0``). Several: a Cholesky
        solve of the ``K × K`` Gram matrix, with a pseudo-inverse for the rare batch where
        it is singular (rows of ``G`` dependent or zero, e.g. ``∇L`` at the origin). Both
        cost a few small ops, where the ``lstsq`` they replace cost about 100 µs a call."""
        if g.shape[1] == 1:
            g = g.squeeze(1)
            nn = (g * g).sum(-1, keepdim=True)  # (B, 1)
            return g * torch.where(nn > 0, -r / nn, torch.zeros_like(nn))
        gram = g @ g.transpose(1, 2)  # (B, K, K)
        chol, info = torch.linalg.cholesky_ex(gram)
        if bool(info.any()):
            lam = torch.linalg.pinv(gram) @ r.unsqueeze(-1)
        else:
            lam = torch.cholesky_solve(r.unsqueeze(-1), chol)  # (B, K, 1)
        return -(g * lam).sum(1)  # Gᵀλ: an elementwise sum costs a third of the bmm here

    def __call__(self, z: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
        """``z (B, D)`` projected onto the targets from :meth:`start`."""
        q0, scale = target
        self.last_iterations = 0
        if not torch.isfinite(z).all():
            return z
        # below a few ulps of the state's precision no projection can go (float32: ~1e-6)
        tol = max(self.tol, 8 * torch.finfo(z.dtype).eps)
        y = z
        with torch.no_grad():
            q, g = self._at(y)  # (B, K), (B, K, D) or None
            r = q - q0
            res = (r.abs() / scale).amax(-1)  # (B,) each row's worst invariant
            for i in range(self.max_iter):
                active = res > tol
                if not bool(active.any()):
                    break
                self.last_iterations = i + 1
                # Newton: the Jacobian where the iterate is
                delta = self._newton_step(g if g is not None else self._jacobian(y), r)  # (B, D)
                y_try = y + delta
                q_try, g_try = self._at(y_try)
                r_try = q_try - q0
                res_try = (r_try.abs() / scale).amax(-1)
                worse = ~(res_try < res) & active
                if not bool(worse.any()):  # the usual case: every row that moves improves
                    y, r, g, res = y_try, r_try, g_try, res_try
                    continue
                # backtrack row by row where the full step overshoots (near a saddle of Q,
                # e.g. a pendulum starting just over the top)
                alpha = torch.ones_like(res)
                for _ in range(6):
                    alpha = torch.where(worse, 0.5 * alpha, alpha)
                    y_try = y + alpha.unsqueeze(-1) * delta
                    r_try = self.values(y_try) - q0  # values only: most trial points are dropped
                    res_try = (r_try.abs() / scale).amax(-1)
                    worse = ~(res_try < res) & active
                    if not bool(worse.any()):
                        break
                keep = res_try < res  # (B,) rows that improved move; the rest stay
                if not bool(keep.any()):
                    break  # no row gets closer to the set: the precision's floor
                y = torch.where(keep.unsqueeze(-1), y_try, y)
                r = torch.where(keep.unsqueeze(-1), r_try, r)
                res = torch.where(keep, res_try, res)
                g = None if self.evaluate is None else self.evaluate(y)[1]
        return y


INTEGRATORS: dict[str, Factory] = {
    "euler": euler,
    "rk4": rk4,
    "leapfrog": leapfrog,
    "implicit_midpoint": implicit_midpoint,
    "discrete_gradient": discrete_gradient,
}
#: order of accuracy of each method (checked by a fitted dt sweep in the tests)
ORDER = {"euler": 1, "rk4": 4, "leapfrog": 2, "implicit_midpoint": 2, "discrete_gradient": 2}
SYMPLECTIC = {"euler": False, "rk4": False, "leapfrog": True, "implicit_midpoint": True, "discrete_gradient": False}
#: integrators that need a :class:`GradientForm` (a scalar energy) rather than any field
NEEDS_ENERGY = ("discrete_gradient",)


def get(name: str) -> Factory:
    """The integrator factory called ``name``; refuses unknown names listing the valid ones."""
    try:
        return INTEGRATORS[name]
    except KeyError:
        raise ValueError(f"integrator must be one of {', '.join(INTEGRATORS)}; got {name!r}") from None


def rollout(f: VectorField, z0: Tensor, dt: float, n_steps: int, method: str = "rk4",
            t0: float = 0.0, every: int = 1, stop_on_nonfinite: bool = True,
            should_stop: Callable[[], bool] | None = None,
            project: Projection | None = None,
            project_scales: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Integrate ``n_steps`` steps of size ``dt`` from ``z0 (B, D)``.

    Returns ``(t (T,), z (T, B, D))`` with every ``every``-th state saved, the first being
    ``z0`` itself. If the state becomes non-finite the rollout stops there and the rest of
    the output is filled with NaN, so a blown-up model gives NaN drift, not an exception.

    Args:
        should_stop: checked before every step (default: the check set by
            :func:`stopping`, if any); when it returns true the rollout raises
            :class:`Stopped`. Once a step: a step costs tens of microseconds or more, the
            check well under one, and a slow step (a learned LNN, implicit midpoint) still
            ends within one step of the signal.
        project: a :class:`Projection` applied after every step, onto the invariants'
            values at ``z0`` (``project_scales``: their tolerance scales, see
            :meth:`Projection.start`).
    """
    if n_steps < 0 or every < 1:
        raise ValueError(f"n_steps must be >= 0 and every >= 1; got {n_steps}, {every}")
    step = get(method)(f, dt)
    stop = should_stop if should_stop is not None else _STOP.get()
    n_out = n_steps // every + 1
    out = z0.new_full((n_out,) + tuple(z0.shape), float("nan"))
    out[0] = z0
    z = z0
    target = project.start(z0, project_scales) if project is not None else None
    for i in range(1, n_steps + 1):
        if stop is not None and stop():
            raise Stopped(f"rollout stopped at step {i - 1} of {n_steps}")
        z = step(z, t0 + (i - 1) * dt)
        if project is not None:
            z = project(z, target)
        if i % every == 0:
            out[i // every] = z
            if stop_on_nonfinite and not torch.isfinite(z).all():
                break
    t = t0 + dt * every * torch.arange(n_out, dtype=z0.dtype, device=z0.device)
    return t, out


def solve(f: VectorField, z0: Tensor, t: Tensor, method: str = "rk4", max_dt: float = 1e-2,
          should_stop: Callable[[], bool] | None = None) -> Tensor:
    """States at the increasing times ``t (T,)`` (``t[0]`` is the start), stepping with the
    largest uniform step ``<= max_dt`` that lands on every requested time.
    Returns ``(T, B, D)``. ``should_stop`` as in :func:`rollout` (raises :class:`Stopped`).
    """
    step_f = get(method)
    stop = should_stop if should_stop is not None else _STOP.get()
    out = [z0]
    z = z0
    tt = t.detach().cpu().double().tolist()
    for a, b in zip(tt[:-1], tt[1:]):
        n = max(1, math.ceil((b - a) / max_dt - 1e-9))
        h = (b - a) / n
        step = step_f(f, h)
        for i in range(n):
            if stop is not None and stop():
                raise Stopped(f"solve stopped at t={a + i * h:.4g}")
            z = step(z, a + i * h)
        out.append(z)
    return torch.stack(out)
