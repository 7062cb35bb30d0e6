"""Softened Newtonian gravity of N point masses in the plane (N = 2 ... 8).

State ``z = [q, p]`` of shape ``(B, 4N)`` (``dof = 2N``): positions
``q = (x_1, y_1, x_2, y_2, ...)`` and momenta ``p = (p_x1, p_y1, ...)`` with
``p_i = m_i v_i``. Inside, both halves are viewed as ``(B, N, 2)``.

    H(q, p) = Σ_i |p_i|² / (2 m_i) − Σ_{i<j} G m_i m_j / sqrt(r_ij² + ε²)
    dq_i/dt = p_i / m_i,    dp_i/dt = Σ_{j≠i} G m_i m_j (q_j − q_i) / (r_ij² + ε²)^{3/2}

The softening ``ε`` (Plummer, as in galactic dynamics) keeps the pair force bounded by
``2 G m_i m_j / (3√3 ε²)``. It is still a central pair force that depends on the
distance only, so the flow keeps all three invariants: energy, total linear momentum
``P = Σ p_i`` and angular momentum ``L = Σ x_i p_yi − y_i p_xi``. The Hamiltonian is
separable, so leapfrog is symplectic on it and conserves ``P`` and ``L`` to round-off.

References:
    Aarseth, *Gravitational N-Body Simulations* (2003), ch. 1–2 (softening, units).
    Chenciner & Montgomery, "A remarkable periodic solution of the three-body problem in
    the case of equal masses", Annals of Mathematics 152 (2000) 881–901; initial
    conditions to 8 digits from Simó (2002) as quoted there.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, ClassVar

import param
import torch

from conserv_core import integrators
from conserv_core.systems.base import Invariant, ODESystem, ParameterError, Tensor

#: bodies each preset needs; the preset sets ``n_bodies`` to this
PRESET_BODIES: dict[str, int] = {"two_body_circular": 2, "figure_eight": 3}

#: Chenciner–Montgomery figure-eight for G = m = 1 (positions, velocities, period)
_FIG8_X1 = (0.97000436, -0.24308753)
_FIG8_V3 = (-0.93240737, -0.86473146)
_FIG8_PERIOD = 6.32591398

#: separation of the unperturbed two-body circular preset
_CIRCULAR_SEPARATION = 1.0


@functools.lru_cache(maxsize=64)
def _constants(masses: tuple[float, ...], G: float, dtype: torch.dtype, device: torch.device):
    """Per-system constant tensors, built once per (masses, G, dtype, device): masses
    ``(N,)``, pair weights ``G m_i m_j`` with a zero diagonal ``(N, N)`` and the identity
    ``(N, N)``. Read-only: shared by calls."""
    n = len(masses)
    m = torch.tensor(masses, dtype=dtype, device=device)
    eye = torch.eye(n, dtype=dtype, device=device)
    gmm = G * m[:, None] * m[None, :] * (1 - eye)
    return m, gmm, eye


@functools.lru_cache(maxsize=64)
def _momentum_jacobian(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``∂P/∂z (1, 2, 4N)``: ones on each momentum axis. Read-only."""
    g = torch.zeros(1, 2, 4 * n, dtype=dtype, device=device)
    g[:, 0, 2 * n::2] = 1.0
    g[:, 1, 2 * n + 1::2] = 1.0
    return g


@functools.lru_cache(maxsize=64)
def _inverse_masses(masses: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``1/m_i`` on each body's two momentum axes, ``(2N,)``. Read-only."""
    return torch.tensor([1.0 / m for m in masses for _ in range(2)], dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _quarter_turn(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Signs ``(2N, 2)`` that turn the swapped pairs ``(b, a)`` into ``∂L/∂z``: ``(+, −)``
    on the N momentum pairs (giving ``(p_y, −p_x)`` at each q), ``(−, +)`` on the N
    position pairs (``(−y, x)`` at each p). Read-only."""
    return torch.tensor([[1.0, -1.0]] * n + [[-1.0, 1.0]] * n, dtype=dtype, device=device)


def _angular_jacobian(z: Tensor, n: int) -> Tensor:
    """``∂L/∂z (B, 4N)``: ``(p_y, −p_x)`` at each q and ``(−y, x)`` at each p, the state's
    pairs swapped and turned a quarter (:func:`_quarter_turn`)."""
    n2 = 2 * n
    swapped = torch.cat([z[:, n2:], z[:, :n2]], -1).reshape(z.shape[0], -1, 2).flip(-1)
    return (swapped * _quarter_turn(n, z.dtype, z.device)).reshape(z.shape)


class NBody(ODESystem):
    """Planar N-body gravity ``H = Σ|p_i|²/2m_i − Σ_{i<j} G m_i m_j / sqrt(r_ij² + ε²)``."""

    key: ClassVar[str] = "nbody"
    title: ClassVar[str] = "N-body gravity (2D)"
    equations: ClassVar[dict[str, str]] = {
        "Hamiltonian": (r"H(q,p) = \sum_i \frac{|p_i|^2}{2m_i}"
                        r" - \sum_{i<j} \frac{G\,m_i m_j}{\sqrt{r_{ij}^2 + \varepsilon^2}}"
                        r" + \frac{k}{2} \sum_i m_i |q_i|^2"),
        "Dynamics": (r"\dot q_i = \frac{p_i}{m_i},\qquad \dot p_i = \sum_{j\neq i}"
                     r" \frac{G\,m_i m_j\,(q_j - q_i)}{(r_{ij}^2 + \varepsilon^2)^{3/2}} - k\,m_i q_i"),
        "Linear momentum": r"P = \sum_i p_i,\qquad \dot P = -k \sum_i m_i q_i \;(= 0 \text{ without a trap})",
        "Angular momentum": r"L = \sum_i (x_i\,p_{y,i} - y_i\,p_{x,i}),\qquad \dot L = 0",
    }
    teaching_note: ClassVar[str] = (
        "Three conservation laws at once: energy, total momentum and angular momentum. "
        "A Hamiltonian network conserves its own learned energy, but momentum only if it "
        "learns translation symmetry; watch the centre of mass, which starts at rest, "
        "walk away under an unconstrained network."
    )
    recommended: ClassVar[dict] = dict(steps=2000, lr=2e-3, width=128)
    demo: ClassVar[dict] = dict(steps=800, width=64, lr=3e-3)
    view_family: ClassVar[str] = "bodies"
    time_label: ClassVar[str] = "time t (units with G = m = 1)"
    look_for: ClassVar[str] = (
        "Look at the three drift plots: a Hamiltonian network holds its energy but can still leak "
        "momentum, because nothing in it knows that space is the same everywhere. Tick the symmetric HNN "
        "(or load the momentum-by-symmetry preset): its momentum stays at round-off, kept by symmetry "
        "(Noether). In the orbit view, watch the learned bodies leave the true paths."
    )
    controls: ClassVar[tuple[str, ...] | None] = ("n_bodies", "preset", "G", "softening")
    reference_dt: ClassVar[float] = 5e-3

    n_bodies = param.Integer(softbounds=(2, 8), label="Bodies N", default=2, bounds=(2, 64), doc=(
        "Number of bodies N. A preset other than 'random' sets it (2 for "
        "'two_body_circular', 3 for 'figure_eight'); changing it away from the preset's N "
        "switches the preset back to 'random'."))
    G = param.Number(softbounds=(0.1, 5.0), step=0.1, label="Gravitational constant G",
                     default=1.0, bounds=(1e-3, 1e3), doc="Gravitational constant G.")
    # Why 0.2 (lengths here are ~1): with three or more bodies, chaotic encounters form
    # tight binaries whose size is limited only by ε. Measured over the default horizon,
    # 64 random configurations per N: at ε = 0.05 the truth's own RK4 relative energy
    # error reached O(1) at dt = 0.01 for N = 3..8 (median 0.75-5; still 0.06-0.4 at
    # dt = 0.005); at ε = 0.2 and dt = 0.01 it stayed at or below 2e-4 for every
    # N = 2..8. ε also caps the pair force at 2 G m_i m_j / (3√3 ε²) ≈ 9.6 G m_i m_j,
    # so training targets stay bounded.
    softening = param.Number(softbounds=(0.0, 0.5), step=0.01, label="Softening ε",
                             default=0.2, bounds=(0.0, 1.0), doc=(
        "Plummer softening length ε ≥ 0: the pair potential is −G m_i m_j / sqrt(r² + ε²). "
        "ε > 0 bounds the force in close encounters, which keeps the reference solution "
        "accurate at the default step and the training targets bounded. The "
        "'figure_eight' preset sets ε = 0 (it is a periodic orbit only there); leaving "
        "that preset restores the default."))
    trap = param.Number(softbounds=(0.0, 3.0), step=0.1, label="Trap k (breaks momentum)",
                        default=0.0, bounds=(0.0, 10.0), doc=(
        "Strength k ≥ 0 of a harmonic trap about the origin, potential (k/2) Σ m_i |q_i|² "
        "(a symmetry breaker): it pulls every body towards a fixed point, so space is no "
        "longer the same everywhere and total momentum is not conserved (angular momentum "
        "about the origin and energy still are). 0: no trap."))
    mass = param.Number(default=1.0, bounds=(1e-3, 1e3), doc="Mass of every body (unless 'masses' is given).")
    masses = param.List(default=None, allow_None=True, doc=(
        "Optional per-body masses, one positive number per body within the bounds of "
        "'mass'; None gives every body 'mass'."))
    preset = param.Selector(label="Initial conditions",
                            default="random", objects=["random", "two_body_circular", "figure_eight"], doc=(
        "Initial conditions: 'random' bound configurations with zero total momentum; "
        "'two_body_circular' exact circular orbits (sets n_bodies = 2); 'figure_eight' "
        "the Chenciner–Montgomery choreography (sets n_bodies = 3 and softening = 0, "
        "needs equal masses)."))
    virial_band = param.Range(default=(0.3, 0.6), bounds=(0.05, 0.95), doc=(
        "'random' preset: virial ratios T/|V| drawn from this band (< 1 keeps every "
        "configuration bound; 0.5 is a circular two-body orbit)."))

    # Defaults for N = 2 at unit G, m: the relative orbit has period ≈ 2π·(d³/2)^½ ≈ 4.4
    # at separation d ≈ 1 (see sample_initial), so a training trajectory covers about one
    # orbit and the evaluation horizon four to five.
    n_traj = param.Integer(default=32, bounds=(1, 10_000), doc="Training trajectories.")
    t_span = param.Number(default=5.0, bounds=(0.1, 1000.0), doc="Length of each training trajectory.")
    n_points = param.Integer(default=40, bounds=(2, 10_000), doc="Samples per training trajectory.")
    dt = param.Number(default=0.02, bounds=(1e-5, 1.0), inclusive_bounds=(False, True),
                      doc="Rollout time step used for evaluation and reference trajectories.")
    horizon = param.Number(default=20.0, bounds=(0.1, 10_000.0), doc="Evaluation rollout length (time units).")

    def __init__(self, **params):
        preset = params.get("preset", type(self).preset)
        need = PRESET_BODIES.get(preset)
        if need is not None:
            asked = params.setdefault("n_bodies", need)
            if asked != need:
                raise ParameterError(
                    f"NBody.n_bodies={asked!r} conflicts with preset={preset!r}, which has "
                    f"{need} bodies; leave n_bodies out or set it to {need}"
                )
        if preset == "figure_eight":
            params.setdefault("softening", 0.0)
        super().__init__(**params)
        self.body_masses()
        self._check_preset()
        self.param.watch(self._on_preset, "preset")
        self.param.watch(self._on_n_bodies, "n_bodies")

    # -- parameters ---------------------------------------------------------------------
    def _on_preset(self, event: param.parameterized.Event) -> None:
        need = PRESET_BODIES.get(event.new)
        if need is not None and self.n_bodies != need:
            self.n_bodies = need
        if event.new == "figure_eight":
            self.softening = 0.0
        elif event.old == "figure_eight" and self.softening == 0.0:
            self.softening = type(self).param["softening"].default

    def _on_n_bodies(self, event: param.parameterized.Event) -> None:
        need = PRESET_BODIES.get(self.preset)
        if need is not None and event.new != need:
            self.preset = "random"

    def body_masses(self) -> list[float]:
        """The N masses as floats, validated (refuses a bad ``masses`` list)."""
        n = self.n_bodies
        if self.masses is None:
            return [float(self.mass)] * n
        lo, hi = type(self).param["mass"].bounds
        ok = len(self.masses) == n and all(
            isinstance(m, numbers.Real) and not isinstance(m, bool) and math.isfinite(m) and lo <= m <= hi
            for m in self.masses
        )
        if not ok:
            raise ParameterError(
                f"NBody.masses must be None or a list of n_bodies={n} finite masses, each in "
                f"[{lo}, {hi}]; got {self.masses!r}"
            )
        return [float(m) for m in self.masses]

    def _check_preset(self) -> None:
        need = PRESET_BODIES.get(self.preset)
        if need is not None and self.n_bodies != need:
            raise ParameterError(f"NBody.preset={self.preset!r} needs n_bodies={need}, got {self.n_bodies}")
        if self.preset == "figure_eight" and len(set(self.body_masses())) != 1:
            raise ParameterError(
                f"NBody.preset='figure_eight' needs equal masses; got masses={self.masses!r}"
            )

    @property
    def dof(self) -> int:
        return 2 * self.n_bodies

    def cost_per_state(self) -> float:
        """The true field sums the force over all N(N − 1)/2 pairs. Measured
        (benchmarks/bench_budget.py, one core): 1.1 units at N = 2, 1.2 at 8, 1.5 at 16;
        by the pairs, ~8 at N = 64."""
        n = self.n_bodies
        return 1.1 + 0.0035 * (n * (n - 1) // 2)

    @param.depends("n_bodies", "mass", "masses", "G", "softening", "trap", watch=True, on_init=True)
    def _cache_constants(self) -> None:
        # plain Python values for the hot path: a param attribute read costs ~10 µs and
        # body_masses() validates the list on every call. A masses list that does not
        # fit (mid-way through changing n_bodies and masses) caches None, and the next
        # physics call re-validates, so the error still names the parameter.
        self._n = self.n_bodies
        self._eps2 = self.softening**2
        self._trap = self.trap
        self._G = self.G
        try:
            self._masses: tuple[float, ...] | None = tuple(self.body_masses())
        except ParameterError:
            self._masses = None

    def _masses_key(self) -> tuple[float, ...]:
        return self._masses if self._masses is not None else tuple(self.body_masses())

    def _const(self, like: Tensor):
        """``_constants`` for this system in the dtype and device of ``like``."""
        return _constants(self._masses_key(), self._G, like.dtype, like.device)

    def _m(self, like: Tensor) -> Tensor:
        """Masses ``(N,)`` in the dtype and device of ``like``."""
        return self._const(like)[0]

    def _bodies(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``z (..., 4N) -> q, p`` each ``(..., N, 2)``."""
        n = self._n
        shape = z.shape[:-1] + (n, 2)
        return z[..., : 2 * n].reshape(shape), z[..., 2 * n :].reshape(shape)

    # -- physics ------------------------------------------------------------------------
    def _pairs(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pair separations ``dx, dy = q_j − q_i`` and ``r² + ε²`` (1 added on the
        diagonal, which ``G m_i m_j`` then masks out), each ``(..., N, N)``.

        Per axis rather than as one ``(..., N, N, 2)`` tensor: a reduction over a last
        axis of length 2 is slow on CPU (59 µs of the force's 148 µs at 32 × 8 bodies)."""
        eye = self._const(q)[2]
        qx, qy = q[..., 0], q[..., 1]
        dx = qx.unsqueeze(-2) - qx.unsqueeze(-1)
        dy = qy.unsqueeze(-2) - qy.unsqueeze(-1)
        return dx, dy, dx * dx + dy * dy + (eye + self._eps2)

    def _forces(self, q: Tensor) -> Tensor:
        """Gravitational force on each body, ``q (..., N, 2) -> (..., N, 2)``: dense over
        pairs (:meth:`_pairs`)."""
        gmm = self._const(q)[1]
        dx, dy, r2 = self._pairs(q)
        inv = r2.rsqrt()
        w = gmm * (inv * inv * inv)
        return torch.stack([(w * dx).sum(-1), (w * dy).sum(-1)], -1)

    def _potential(self, q: Tensor) -> Tensor:
        """``V(q) = −Σ_{i<j} G m_i m_j / sqrt(r_ij² + ε²)``, ``(..., N, 2) -> (...)``:
        half the dense sum over ordered pairs."""
        gmm = self._const(q)[1]
        _, _, r2 = self._pairs(q)
        return -0.5 * (gmm * r2.rsqrt()).sum((-2, -1))

    def vector_field(self, z: Tensor, t=None) -> Tensor:
        q, p = self._bodies(z)
        m = self._m(z)
        dq = p / m[:, None]
        dp = self._forces(q)
        if self._trap:
            dp = dp - self._trap * m[:, None] * q
        return torch.cat([dq.flatten(-2), dp.flatten(-2)], -1)

    def energy(self, z: Tensor) -> Tensor:
        q, p = self._bodies(z)
        m = self._m(z)
        kinetic = ((p[..., 0] * p[..., 0] + p[..., 1] * p[..., 1]) / (2 * m)).sum(-1)
        energy = kinetic + self._potential(q)
        if self._trap:
            energy = energy + 0.5 * self._trap * (m * (q[..., 0] * q[..., 0] + q[..., 1] * q[..., 1])).sum(-1)
        return energy

    def potential_derivatives(self, q: Tensor, hessian: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """``V``, ``∇V`` and ``∇²V`` (pairs and trap) for ``q (B, 2N)``, from one pass over
        the pairs: ``(B,)``, ``(B, 2N)``, ``(B, 2N, 2N)`` (coordinates ordered as in ``q``;
        None unless ``hessian``).

        The Hessian block of a pair ``i ≠ j`` is ``G m_i m_j [3 d dᵀ / s^{5/2} − I / s^{3/2}]``
        with ``d = q_j − q_i`` and ``s = r² + ε²``; each diagonal block is minus its row's
        pair blocks (``V`` depends on differences only), plus ``k m_i I`` from the trap.
        Built per axis pair (xx, xy, yy) as ``(B, N, N)`` tensors, as :meth:`_forces`."""
        b = q.shape[0]
        n = self._n
        gmm = self._const(q)[1]
        dx, dy, r2 = self._pairs(q.reshape(b, n, 2))
        inv = r2.rsqrt()
        inv2 = inv * inv
        w1 = gmm * inv  # G m_i m_j / s^{1/2}, (B, N, N), zero diagonal
        w3 = w1 * inv2  # G m_i m_j / s^{3/2}
        value = -0.5 * w1.sum((-2, -1))  # (B,): each pair counted twice
        grad = torch.stack([(w3 * dx).sum(-1), (w3 * dy).sum(-1)], -1).reshape(b, 2 * n).neg_()  # −force
        if self._trap:  # (k/2) Σ m_i |q_i|²
            kq = self._trap * q / _inverse_masses(self._masses_key(), q.dtype, q.device)  # k m_i q_i, (B, 2N)
            value, grad = value + 0.5 * (kq * q).sum(-1), grad + kq
        if not hessian:
            return value, grad, None
        w5 = 3.0 * w3 * inv2  # 3 G m_i m_j / s^{5/2}
        hxy = w5 * dx * dy
        blocks = torch.stack([w5 * dx * dx - w3, hxy, hxy, w5 * dy * dy - w3], 1)  # (B, 4, N, N): xx, xy, yx, yy
        diag = -blocks.sum(-1)  # (B, 4, N)
        if self._trap:
            km = self._trap * self._m(q)  # (N,)
            diag = diag + torch.stack([km, torch.zeros_like(km), torch.zeros_like(km), km])
        blocks.diagonal(dim1=-2, dim2=-1).add_(diag)  # in place: diag_embed built a zero (B, 4, N, N) first
        # (B, a, c, i, j) -> (B, i, a, j, c): row 2i + a, column 2j + c
        return value, grad, blocks.reshape(b, 2, 2, n, n).permute(0, 3, 1, 4, 2).reshape(b, 2 * n, 2 * n)

    def separable_energy(self) -> integrators.SeparableEnergy:
        """``H = Σ|p_i|²/2m_i + V(q)`` (pairs and trap), no dissipation: the discrete
        gradient's Newton solve applies."""
        return integrators.SeparableEnergy([1.0 / m for m in self._masses_key() for _ in range(2)],
                                           self.potential_derivatives)

    def linear_momentum(self, z: Tensor) -> Tensor:
        """Total momentum ``P = Σ p_i``, ``(B, 4N) -> (B, 2)``."""
        return self._bodies(z)[1].sum(-2)

    def angular_momentum(self, z: Tensor) -> Tensor:
        """``L = Σ x_i p_yi − y_i p_xi`` about the origin, ``(B, 4N) -> (B,)``."""
        q, p = self._bodies(z)
        return (q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]).sum(-1)

    def invariants(self) -> dict[str, Invariant]:
        return {"energy": self.energy, "momentum": self.linear_momentum, "angular_momentum": self.angular_momentum}

    def invariant_gradients(self) -> dict[str, Callable[[Tensor], Tensor]]:
        """``∇E`` (from the field), ``∂P/∂z`` (ones on each momentum axis) and
        ``∂L/∂z = (p_y, −p_x; −y, x)`` per body, each ``(B, k, 4N)``."""

        def momentum(z: Tensor) -> Tensor:
            return _momentum_jacobian(self._n, z.dtype, z.device).expand(z.shape[0], 2, z.shape[-1]).clone()

        def angular(z: Tensor) -> Tensor:
            return _angular_jacobian(z, self._n).unsqueeze(1)

        return {"energy": lambda z: self.energy_gradient(z).unsqueeze(1), "momentum": momentum,
                "angular_momentum": angular}

    def invariants_and_gradients(self, names) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """As the base, written for a projected step's Newton iterate, which needs all of
        them at once: ``E`` and ``∇E = (−F, p/m)`` from one pass over the pairs, ``∇L``
        as the state's pairs turned a quarter (``L`` is then ``∇_q L · q``), and ``∇P``
        constant. 0.17 ms for E, P and L at 32 × 8 bodies, against 0.35 ms one by one."""
        names = tuple(names)
        super().invariants_and_gradients(names)  # refuses names without a closed form
        n2 = 2 * self._n

        def evaluate(z: Tensor) -> tuple[Tensor, Tensor]:
            b, d = z.shape
            vals, jac = [], []
            for name in names:
                if name == "energy":
                    gmm = self._const(z)[1]
                    dx, dy, r2 = self._pairs(z[:, :n2].reshape(b, -1, 2))
                    inv = r2.rsqrt()
                    w = gmm * (inv * inv * inv)
                    minus_force = torch.stack([(w * dx).sum(-1), (w * dy).sum(-1)], -1).neg_()
                    p = z[:, n2:]
                    velocity = p * _inverse_masses(self._masses_key(), z.dtype, z.device)  # (B, 2N)
                    energy = 0.5 * (velocity * p).sum(-1) - 0.5 * (gmm * inv).sum((-2, -1))
                    grad_q = minus_force.reshape(b, n2)
                    if self._trap:  # (k/2) Σ m_i |q_i|²: its gradient k m_i q_i
                        kq = self._trap * z[:, :n2] / _inverse_masses(self._masses_key(), z.dtype, z.device)
                        energy = energy + 0.5 * (kq * z[:, :n2]).sum(-1)
                        grad_q = grad_q + kq
                    vals.append(energy.unsqueeze(-1))
                    jac.append(torch.cat([grad_q, velocity], -1).unsqueeze(1))
                elif name == "momentum":
                    vals.append(z[:, n2:].reshape(b, -1, 2).sum(1))
                    jac.append(_momentum_jacobian(self._n, z.dtype, z.device).expand(b, 2, d))
                else:  # angular momentum: L = ∂L/∂q · q
                    turned = _angular_jacobian(z, self._n)
                    vals.append((turned[:, :n2] * z[:, :n2]).sum(-1, keepdim=True))
                    jac.append(turned.unsqueeze(1))
            return torch.cat(vals, -1), torch.cat(jac, 1)

        return evaluate

    def is_conserved(self, name: str) -> bool:
        """A trap breaks translation symmetry: total momentum is then not conserved."""
        return not (name == "momentum" and self.trap > 0)

    def pair_potential(self, r: Tensor) -> Tensor | None:
        """The true pair term ``−G m² / √(r² + ε²)`` at distances ``r (M,)``, shifted to
        vanish at the largest ``r`` (as :meth:`SymmetricHNN.pair_potential` is), or None
        when the bodies' masses differ (then no single pair function exists)."""
        m = self.body_masses()
        if len(set(m)) > 1:
            return None
        v = -self.G * m[0] * m[0] / (r * r + self.softening ** 2).sqrt()
        return v - v[r.argmax()]

    def invariant_scale(self, name: str, z0: Tensor) -> Tensor:
        """Drift scales, ``(B,)``. P(0) = 0 and L(0) may be ~0, so the momenta are measured
        against the sum of their per-body magnitudes; energy against ``|E(0)|``, never less
        than 1% of ``T + |V|`` (an out-of-distribution state can have ``E ≈ 0``)."""
        q, p = self._bodies(z0)
        tiny = torch.finfo(z0.dtype).tiny ** 0.5
        if name == "momentum":
            return p.norm(dim=-1).sum(-1).clamp_min(tiny)
        if name == "angular_momentum":
            per_body = q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]  # (B, N)
            floor = 1e-3 * (q.norm(dim=-1) * p.norm(dim=-1)).sum(-1)
            return torch.maximum(per_body.abs().sum(-1), floor).clamp_min(tiny)
        if name == "energy":
            m = self._m(z0)
            kinetic = (p.pow(2).sum(-1) / (2 * m)).sum(-1)
            potential = self._potential(q)
            return torch.maximum((kinetic + potential).abs(), 0.01 * (kinetic + potential.abs())).clamp_min(tiny)
        return super().invariant_scale(name, z0)

    def lagrangian(self, q: Tensor, qdot: Tensor) -> Tensor:
        shape = q.shape[:-1] + (self.n_bodies, 2)
        qb, vb = q.reshape(shape), qdot.reshape(shape)
        m = self._m(q)
        return (0.5 * m * vb.pow(2).sum(-1)).sum(-1) - self._potential(qb)

    def momentum(self, q: Tensor, qdot: Tensor) -> Tensor:
        return qdot * self._m(qdot).repeat_interleave(2)

    def velocity(self, z: Tensor) -> Tensor:
        return z[..., self.dof :] / self._m(z).repeat_interleave(2)

    # -- presets ------------------------------------------------------------------------
    def period(self) -> float | None:
        """Period of the unperturbed preset orbit (:meth:`preset_initial`), or None where
        none is known: the 'random' preset, and the figure-eight with softening > 0."""
        m = self.body_masses()
        if self.preset == "two_body_circular":
            d, eps = _CIRCULAR_SEPARATION, self.softening
            omega = math.sqrt(self.G * sum(m) / (d * d + eps * eps) ** 1.5)
            return 2 * math.pi / omega
        if self.preset == "figure_eight" and self.softening == 0.0:
            return _FIG8_PERIOD / math.sqrt(self.G * m[0])
        return None

    def preset_initial(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """The preset's exact initial condition ``(1, 4N)``, unrotated and unperturbed."""
        if self.preset == "random":
            raise ParameterError("NBody.preset='random' has no single initial condition; use sample_initial")
        z = self._preset_batch(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
        return z.to(dtype=dtype, device=device)

    def _preset_batch(self, angle: Tensor, size: Tensor) -> Tensor:
        """Preset orbits rotated by ``angle (n,)`` and with lengths times ``size (n,)``.

        Both are exact symmetries: rotation always; size for the circular orbit because
        its velocity is recomputed for the new separation (softening included), and for
        the figure-eight (ε = 0) by the scaling ``q → λq, t → λ^{3/2} t``.
        """
        self._check_preset()
        m = torch.tensor(self.body_masses(), dtype=torch.float64)
        if self.preset == "two_body_circular":
            total = float(m.sum())
            d = _CIRCULAR_SEPARATION * size  # (n,)
            omega = torch.sqrt(self.G * total / (d * d + self.softening**2) ** 1.5)  # (n,)
            radii = torch.stack([m[1] / total * d, -m[0] / total * d], -1)  # (n, 2) signed
            q = radii[..., None] * torch.tensor([1.0, 0.0], dtype=torch.float64)  # (n, 2, 2)
            v = (omega[:, None] * radii)[..., None] * torch.tensor([0.0, 1.0], dtype=torch.float64)
        else:  # figure_eight
            x1 = torch.tensor(_FIG8_X1, dtype=torch.float64)
            v3 = torch.tensor(_FIG8_V3, dtype=torch.float64)
            q = torch.stack([x1, -x1, torch.zeros(2, dtype=torch.float64)]) * size[:, None, None]
            v = torch.stack([-v3 / 2, -v3 / 2, v3]) * (math.sqrt(self.G * float(m[0])) / size.sqrt())[:, None, None]
        c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]  # (n, 1)

        def rotate(a: Tensor) -> Tensor:  # (n, N, 2)
            return torch.stack([c * a[..., 0] - s * a[..., 1], s * a[..., 0] + c * a[..., 1]], -1)

        q, p = rotate(q), rotate(v) * m[:, None]
        return torch.cat([q.flatten(1), p.flatten(1)], -1)

    # -- data ---------------------------------------------------------------------------
    def sample_initial(self, n: int, seed: int = 0, scale: float = 1.0,
                       dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Seeded initial conditions ``(n, 4N)`` with centre of mass at rest at the origin.

        * ``'random'``: bodies near a ring of radius ``0.5 (N/2)^{1/3}`` (angles evenly
          spaced, then jittered; radii ×[0.75, 1.25]), velocities along the local circular
          direction plus 20% noise, one rotation sense per configuration, then rescaled so
          that ``T/|V|`` is drawn from ``virial_band``: every configuration has
          ``E = V (1 − T/|V|) < 0``. The ring grows as ``N^{1/3}`` so the mean density,
          hence the orbital time scale, does not change with N (at fixed masses).
        * ``'two_body_circular'``: exact circular orbits, separation ×[0.9, 1.1] around 1
          and a random orientation.
        * ``'figure_eight'``: the choreography, rotated at random and sized ×[0.95, 1.05]
          (both exact symmetries when ε = 0).

        With a ``trap``, the centre of mass starts off the trap's centre (see the code).

        ``scale > 1`` is out of distribution: positions ×scale and speeds ×sqrt(scale),
        so ``T/|V|`` grows as scale²: wider, faster, and from about scale 1.3 unbound:
        bodies escape, which no training trajectory did.
        """
        if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number; got {scale!r}")
        self.body_masses()
        self._check_preset()
        g = torch.Generator().manual_seed(seed)

        def uniform(*shape: int) -> Tensor:
            return torch.rand(shape, generator=g, dtype=torch.float64)

        if self.preset == "random":
            z = self._random_bound(n, g)
        elif self.preset == "two_body_circular":
            z = self._preset_batch(2 * math.pi * uniform(n), 0.9 + 0.2 * uniform(n))
        else:
            z = self._preset_batch(2 * math.pi * uniform(n), 0.95 + 0.1 * uniform(n))
        if self.trap > 0:
            # with a trap, the centre of mass starts off its centre (a distance in
            # [0.25, 0.5] in a random direction), so it swings and total momentum changes:
            # at the centre, P = 0 would stay 0 and the broken symmetry would not show
            angle, dist = 2 * math.pi * uniform(n), 0.25 + 0.25 * uniform(n)
            shift = torch.stack([dist * angle.cos(), dist * angle.sin()], -1)  # (n, 2)
            z = torch.cat([z[:, : self.dof] + shift.repeat(1, self.n_bodies), z[:, self.dof :]], -1)
        z = torch.cat([z[:, : self.dof] * scale, z[:, self.dof :] * math.sqrt(scale)], -1)
        return z.to(dtype=dtype, device=device)

    def _random_bound(self, n: int, g: torch.Generator) -> Tensor:
        """Bound random configurations ``(n, 4N)`` in float64 (see :meth:`sample_initial`)."""
        nb = self.n_bodies
        m = torch.tensor(self.body_masses(), dtype=torch.float64)  # (N,)

        def uniform(*shape: int) -> Tensor:
            return torch.rand(shape, generator=g, dtype=torch.float64)

        radius = 0.5 * (nb / 2) ** (1 / 3)
        slot = 2 * math.pi / nb
        angle = slot * torch.arange(nb, dtype=torch.float64) + 2 * math.pi * uniform(n, 1) \
            + slot * 0.25 * (2 * uniform(n, nb) - 1)  # (n, N)
        r = radius * (0.75 + 0.5 * uniform(n, nb))  # (n, N)
        q = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], -1)  # (n, N, 2)
        q = q - (m[:, None] * q).sum(-2, keepdim=True) / m.sum()

        # speed of a circular orbit under the inward part of the actual pull, then noise
        acc = self._forces(q) / m[:, None]  # (n, N, 2)
        dist = q.norm(dim=-1, keepdim=True)  # (n, N, 1)
        inward = -(acc * q).sum(-1, keepdim=True) / dist  # (n, N, 1)
        speed = (inward.clamp_min(0.0) * dist).sqrt()
        sense = torch.where(uniform(n, 1, 1) < 0.5, -1.0, 1.0)
        tangent = sense * torch.stack([-q[..., 1], q[..., 0]], -1) / dist  # (n, N, 2)
        noise = 0.2 * speed.mean(-2, keepdim=True) * torch.randn(q.shape, generator=g, dtype=torch.float64)
        v = speed * tangent + noise
        v = v - (m[:, None] * v).sum(-2, keepdim=True) / m.sum()

        kinetic = (0.5 * m * v.pow(2).sum(-1)).sum(-1)  # (n,)
        potential = self._potential(q)  # (n,) < 0
        lo, hi = self.virial_band
        ratio = lo + (hi - lo) * uniform(n)
        v = v * (ratio * potential.abs() / kinetic.clamp_min(1e-300)).sqrt()[:, None, None]
        return torch.cat([q.flatten(1), (m[:, None] * v).flatten(1)], -1)
