"""The interface every physical system fills.

Two kinds of system live here:

* **ODE systems** (:class:`ODESystem`: pendulum, n-body, spring, ...). The state is
  ``z = [q, p]`` with shape ``(batch, 2 * dof)``: the first ``dof`` columns are the
  generalised coordinates ``q``, the last ``dof`` their conjugate momenta ``p``. A model
  learns the map ``z -> dz/dt``.
* **Field systems** (:class:`FieldSystem`: 2D incompressible flow). The model learns a
  velocity field ``u(x, y, t)``; conservation is measured by carrying fluid parcels
  through it. See :mod:`conserv_core.systems.flow`.

Every system is a :class:`param.Parameterized`: each physical parameter is declared once,
with its type, bounds and doc. The UI builds its widgets from these declarations, and
:func:`check_finite` plus param's own bounds refuse bad input with a message that names
the parameter and its valid range.

All tensors are batched torch tensors on any device, in float32 or float64; functions
return tensors of the dtype and device of their input.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, ClassVar

import param
import torch

Tensor = torch.Tensor
Invariant = Callable[[Tensor], Tensor]


class ParameterError(ValueError):
    """A user-facing parameter is outside its valid range (the message names both)."""


def _range_text(p: param.Parameter) -> str:
    bounds = getattr(p, "bounds", None)
    if bounds is None:
        return ""
    lo, hi = bounds
    incl = getattr(p, "inclusive_bounds", (True, True))
    left = "[" if incl[0] else "("
    right = "]" if incl[1] else ")"
    return f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def describe_range(obj: param.Parameterized | type, name: str) -> str:
    """Human text for a parameter's valid range, e.g. ``'[2, 8]'`` or one of a list."""
    p = obj.param[name]
    if isinstance(p, param.Selector) and not isinstance(p, param.ListSelector):
        return "one of " + ", ".join(repr(o) for o in p.objects)
    return _range_text(p)


def _numbers(p: param.Parameter, value) -> tuple:
    """The real numbers in ``value`` if ``p`` is numeric (a Number or a numeric tuple such
    as a Range), else ``()``. Booleans and None are not numbers here."""
    if isinstance(p, param.NumericTuple) and isinstance(value, tuple):
        items = value
    elif isinstance(p, param.Number):
        items = (value,)
    else:
        return ()
    return tuple(v for v in items if isinstance(v, numbers.Real) and not isinstance(v, bool))


def _within(p: param.Parameter, v: float) -> bool:
    lo, hi = p.bounds if getattr(p, "bounds", None) is not None else (None, None)
    incl_lo, incl_hi = getattr(p, "inclusive_bounds", (True, True))
    above = lo is None or v > lo or (incl_lo and v == lo)
    below = hi is None or v < hi or (incl_hi and v == hi)
    return above and below


def _refuse(owner: str, name: str, obj, p: param.Parameter, value) -> None:
    """Raise :class:`ParameterError` if ``value`` holds a non-finite or out-of-bounds number.

    param's own messages name one violated bound ("must be at least 0.001"); ours name the
    whole range, and param lets NaN through every bound check, so both are checked here.
    """
    nums = _numbers(p, value)
    if not nums:
        return
    if isinstance(p, param.Range) and len(nums) == 2 and nums[0] > nums[1]:
        raise ParameterError(f"{owner}.{name} must be an increasing pair (low, high) in "
                             f"{describe_range(obj, name)}, got {value!r}")
    if not all(math.isfinite(v) and _within(p, v) for v in nums):
        what = ("hold finite numbers" if isinstance(p, param.NumericTuple)
                else "be an integer" if isinstance(p, param.Integer) else "be a finite number")
        where = describe_range(obj, name)
        raise ParameterError(f"{owner}.{name} must {what}{' in ' + where if where else ''}, got {value!r}")


def check_finite(obj: param.Parameterized) -> None:
    """Refuse NaN/inf in any numeric parameter or numeric tuple (param's bounds let NaN
    through), and out-of-bounds values set where param does not check them."""
    for name, p in obj.param.objects("existing").items():
        _refuse(type(obj).__name__, name, obj, p, getattr(obj, name))


def build(cls: type[param.Parameterized], **params) -> param.Parameterized:
    """Instantiate ``cls`` with validated parameters, or raise :class:`ParameterError`.

    Unknown names are refused listing the valid ones; a NaN/inf or out-of-bounds number
    (also inside a Range) with the parameter's name and whole range. Anything else param
    refuses (a wrong type, a system's own checks) is re-raised as ``ParameterError``.
    """
    known = set(cls.param) - {"name"}
    unknown = set(params) - known
    if unknown:
        raise ParameterError(
            f"{cls.__name__} has no parameter {sorted(unknown)[0]!r}; valid: {', '.join(sorted(known))}"
        )
    for key, value in params.items():
        _refuse(cls.__name__, key, cls, cls.param[key], value)
    try:
        obj = cls(**params)
    except ValueError as err:  # param's bound / type check
        raise ParameterError(str(err)) from err
    check_finite(obj)
    return obj


def split_indices(n: int, frac: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The one train/test rule: a permutation of ``n`` pairs drawn from ``generator``, its
    first ``int(frac·n)`` (at least one) for training and the rest for testing (the first
    training pair when nothing is left, so neither part is empty)."""
    perm = torch.randperm(n, generator=generator)
    k = max(1, int(frac * n))
    return perm[:k], perm[k:] if n > k else perm[:1]


@dataclass
class Dataset:
    """Supervised pairs for an ODE system: noisy states ``x`` and their time derivatives.

    Attributes:
        x: ``(n, 2*dof)`` states (noise added).
        dxdt: ``(n, 2*dof)`` true time derivatives at the clean states (plus noise if asked).
        z0: ``(n_traj, 2*dof)`` the trajectories' initial conditions.
        t: ``(n_points,)`` sample times along each trajectory.
    """

    x: Tensor
    dxdt: Tensor
    z0: Tensor
    t: Tensor

    def to(self, device=None, dtype=None) -> "Dataset":
        return Dataset(*(v.to(device=device, dtype=dtype) for v in (self.x, self.dxdt, self.z0, self.t)))

    def split(self, frac: float, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """Random split of the pairs by :func:`split_indices` (``z0``/``t`` are shared by
        both halves)."""
        a, b = (i.to(self.x.device) for i in split_indices(self.x.shape[0], frac, torch.Generator().manual_seed(seed)))
        return (Dataset(self.x[a], self.dxdt[a], self.z0, self.t), Dataset(self.x[b], self.dxdt[b], self.z0, self.t))


class System(param.Parameterized):
    """Abstract base of every system. Subclasses set the class attributes below."""

    #: registry key, e.g. ``"pendulum"``
    key: ClassVar[str] = ""
    #: ``"ode"`` or ``"field"``
    kind: ClassVar[str] = ""
    #: one-line description for menus
    title: ClassVar[str] = ""
    #: LaTeX strings (without ``$``) keyed by what they state, e.g. ``{"H": r"H = ..."}``
    equations: ClassVar[dict[str, str]] = {}
    #: what a student should look for, one or two sentences
    teaching_note: ClassVar[str] = ""
    #: the training settings a run on this system starts from (``TrainConfig`` fields:
    #: :func:`conserv_core.training.make_config` applies them before a user's overrides)
    recommended: ClassVar[dict] = {}
    #: the same for a live demo in the dashboard, about 20 s on a busy 2-core machine
    #: (empty: the dashboard's 600 steps at width 48)
    demo: ClassVar[dict] = {}
    #: what the dashboard's system view draws: ``"phase"`` (a phase portrait, or the path
    #: in the plane of the first two coordinates), ``"bodies"`` (orbits of planar bodies:
    #: the state is ``[x_1, y_1, ..., p_x1, p_y1, ...]``) or ``"field"`` (a velocity field
    #: with dye, :class:`FieldSystem`)
    view_family: ClassVar[str] = ""
    #: the time axis of rollouts, with units
    time_label: ClassVar[str] = "time t"
    #: the first line above the plots: what a student should look at first (empty: the
    #: teaching note)
    look_for: ClassVar[str] = ""
    #: the parameters a dashboard shows as controls, in order (None: every number and
    #: choice the class itself declares)
    controls: ClassVar[tuple[str, ...] | None] = None

    __abstract = True

    def cost_per_state(self) -> float:
        """What one state of the true field costs an RK4 step, relative to the work
        budget's unit (:mod:`conserv_core.budget`: the default pendulum MLP). One unit
        overprices the closed-form fields (the pendulum's is 0.4, benchmarks/bench_budget.py),
        which errs towards refusing; a field that grows with the system overrides it (a
        flow's solver is priced by its grid instead)."""
        return 1.0

    def invariant_names(self) -> tuple[str, ...]:
        """Names of the quantities a drift view reports for this system."""
        raise NotImplementedError

    def is_conserved(self, name: str) -> bool:
        """Whether the named invariant is actually conserved with the current parameters
        (a damped pendulum's energy is not; a viscous flow's kinetic energy is not)."""
        return True


class ODESystem(System):
    """A system with state ``z = [q, p]`` of shape ``(batch, 2 * dof)``.

    Subclasses implement :meth:`vector_field`, :meth:`invariants`, :meth:`sample_initial`
    and set :attr:`dof`. If the Hamiltonian is separable (``H = T(p) + V(q)``) they set
    ``separable = True`` and leapfrog may be used on the true field.
    """

    kind: ClassVar[str] = "ode"
    view_family: ClassVar[str] = "phase"
    #: axis labels of the phase portrait (None: ``q``, ``p`` or ``q1``, ``q2``)
    portrait_axes: ClassVar[tuple[str, str] | None] = None
    separable: ClassVar[bool] = True
    #: which coordinates ``q_i`` are angles (2π-periodic); models that know it feed them
    #: to their networks as ``(cos q_i, sin q_i)``
    angle_coords: ClassVar[tuple[int, ...]] = ()

    #: default training data, chosen so generating it is far under a second
    n_traj = param.Integer(default=40, bounds=(1, 10_000), doc="Training trajectories.")
    t_span = param.Number(default=6.0, bounds=(0.1, 1000.0), doc="Length of each training trajectory.")
    n_points = param.Integer(default=30, bounds=(2, 10_000), doc="Samples per training trajectory.")
    noise = param.Number(default=0.0, bounds=(0.0, 10.0), doc="Std of Gaussian noise added to training states.")
    dt = param.Number(default=0.05, bounds=(1e-5, 1.0), inclusive_bounds=(False, True),
                      doc="Rollout time step used for evaluation and reference trajectories.")
    horizon = param.Number(default=30.0, bounds=(0.1, 10_000.0), doc="Evaluation rollout length (time units).")

    __abstract = True

    @property
    def dof(self) -> int:
        raise NotImplementedError

    @property
    def state_dim(self) -> int:
        return 2 * self.dof

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``z (B, 2*dof) -> (q (B, dof), p (B, dof))``."""
        return z[..., : self.dof], z[..., self.dof :]

    # -- physics ------------------------------------------------------------------------
    def vector_field(self, z: Tensor, t: Tensor | float | None = None) -> Tensor:
        """True time derivative ``dz/dt``, ``(B, 2*dof) -> (B, 2*dof)``."""
        raise NotImplementedError

    def energy(self, z: Tensor) -> Tensor:
        """Total energy ``(B, 2*dof) -> (B,)``."""
        raise NotImplementedError

    def invariants(self) -> dict[str, Invariant]:
        """Named invariants: ``z (B, 2*dof) -> (B,)`` for scalars, ``(B, k)`` for vectors."""
        return {"energy": self.energy}

    def invariant_names(self) -> tuple[str, ...]:
        return tuple(self.invariants())

    def invariant_gradients(self) -> dict[str, Callable[[Tensor], Tensor]]:
        """Closed-form gradients of the invariants, name -> ``z (B, D) -> (B, k, D)`` (``k``
        components; 1 for a scalar). What projection uses instead of autograd where the
        model's state is canonical: a Newton step then costs a few tensor operations.
        Default: the energy's, from :meth:`energy_gradient`; ``tests/test_geometric.py``
        checks every one against autograd."""
        return {"energy": lambda z: self.energy_gradient(z).unsqueeze(1)}

    def invariants_and_gradients(self, names) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """The invariants ``names`` and their closed-form gradients, evaluated together:
        ``z (B, D) -> (Q (B, K), ∂Q/∂z (B, K, D))``, the components in the order of
        ``names``. What a projection's Newton iterate needs (the ``evaluate`` of
        :class:`~conserv_core.integrators.Projection`). Default: :meth:`invariants` and
        :meth:`invariant_gradients` one by one; a system whose invariants share work
        (n-body's pair sums) overrides it."""
        fns, grads = self.invariants(), self.invariant_gradients()
        names = tuple(names)
        missing = [n for n in names if n not in fns or n not in grads]
        if missing:
            raise ValueError(f"no closed-form gradient of {', '.join(missing)} for the {self.key}; "
                             f"it has {', '.join(grads)}")

        def evaluate(z: Tensor) -> tuple[Tensor, Tensor]:
            b, d = z.shape
            q = torch.cat([fns[n](z).reshape(b, -1) for n in names], -1)
            return q, torch.cat([grads[n](z).reshape(b, -1, d) for n in names], 1)

        return evaluate

    def dissipation(self, z: Tensor) -> Tensor | None:
        """``R(z)`` in ``ż = (J − R)∇H``, ``(B, D) -> (B, D, D)`` positive semi-definite, or
        None for a conservative system (the default)."""
        return None

    def energy_gradient(self, z: Tensor) -> Tensor:
        """``∇H(z)``, ``(B, D)``, read off the vector field: ``ż = J∇H`` gives
        ``∇_q H = −ṗ`` and ``∇_p H = q̇``. A dissipative system overrides it.
        ``tests/test_geometric.py`` checks it against autograd of :meth:`energy` for every
        system, which proves each vector field is ``(J − R)∇H`` with the stated ``H``."""
        f = self.vector_field(z)
        return torch.cat([-f[..., self.dof:], f[..., : self.dof]], -1)

    @property
    def gradient_form(self) -> "integrators.GradientForm":
        """The truth as ``ż = (J − R)∇H`` with ``H`` = :meth:`energy`, what
        :func:`~conserv_core.integrators.discrete_gradient` integrates."""
        from conserv_core import integrators

        z = torch.zeros(1, self.state_dim, dtype=torch.float64)
        r = self.dissipation if self.dissipation(z) is not None else None
        return integrators.GradientForm(self.energy, r, self.energy_gradient, separable=self.separable_energy())

    def separable_energy(self) -> "integrators.SeparableEnergy | None":
        """The declaration ``H = ½ Σ p_i²/m_i + V(q)`` with ``∇²V`` in closed form and
        :meth:`dissipation` on the momenta only
        (:class:`~conserv_core.integrators.SeparableEnergy`), with which the discrete
        gradient solves its steps by Newton; None (the default): the general
        fixed-point solve. ``tests/test_geometric.py`` checks every declaration against
        autograd's Hessian of :meth:`energy`."""
        return None

    def invariant_scale(self, name: str, z0: Tensor) -> Tensor:
        """Scale ``s`` in the drift ``|Q(t) - Q(0)| / s``, shape ``(B,)``.

        Default ``|Q(0)|``; systems override it where Q starts near zero (momentum).
        """
        q0 = self.invariants()[name](z0)
        s = q0.abs() if q0.dim() == 1 else q0.norm(dim=-1)
        return s.clamp_min(torch.finfo(z0.dtype).tiny ** 0.5)

    def lagrangian(self, q: Tensor, qdot: Tensor) -> Tensor:
        """True Lagrangian ``L(q, q_dot) -> (B,)`` (used to check the LNN machinery)."""
        raise NotImplementedError

    def velocity(self, z: Tensor) -> Tensor:
        """``q_dot`` from ``z = [q, p]`` (the Legendre map), ``(B, 2*dof) -> (B, dof)``."""
        return self.vector_field(z)[..., : self.dof]

    def momentum(self, q: Tensor, qdot: Tensor) -> Tensor:
        """``p`` from ``(q, q_dot)`` (inverse Legendre map), ``(B, dof)``."""
        raise NotImplementedError

    # -- data ---------------------------------------------------------------------------
    def sample_initial(self, n: int, seed: int = 0, scale: float = 1.0,
                       dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Seeded initial conditions ``(n, 2*dof)`` from the training distribution.

        ``scale > 1`` moves them out of distribution: the system decides what grows (energy
        for the pendulum, speeds and spread for n-body), and by how much, so that
        ``scale = 1`` is the training band itself.
        """
        raise NotImplementedError

    def reference_rollout(self, z0: Tensor, t: Tensor) -> Tensor:
        """Accurate trajectories at the times ``t (T,)``: ``z0 (B, D) -> (T, B, D)``.

        RK4 with a step far below the sampling interval; subclasses may do better.
        """
        from conserv_core import integrators

        return integrators.solve(self.vector_field, z0, t, method="rk4", max_dt=self.reference_dt)

    #: step used by the reference solver (RK4); subclasses choose one that is accurate
    reference_dt: ClassVar[float] = 1e-3

    def sample_data(self, seed: int = 0, dtype: torch.dtype = torch.float32, device=None,
                    n_traj: int | None = None, scale: float = 1.0) -> Dataset:
        """Seeded training data: ``n_traj`` trajectories of ``n_points`` samples on
        ``[0, t_span]``, states with Gaussian noise of std ``noise``, exact derivatives."""
        n_traj = self.n_traj if n_traj is None else n_traj
        z0 = self.sample_initial(n_traj, seed=seed, scale=scale, dtype=torch.float64)
        t = torch.linspace(0.0, self.t_span, self.n_points, dtype=torch.float64)
        traj = self.reference_rollout(z0, t)  # (T, B, D)
        x = traj.reshape(-1, self.state_dim)
        dxdt = self.vector_field(x)
        if self.noise > 0:
            g = torch.Generator().manual_seed(seed + 7919)
            x = x + self.noise * torch.randn(x.shape, generator=g, dtype=x.dtype)
        return Dataset(x, dxdt, z0, t).to(device=device, dtype=dtype)


class FieldSystem(System):
    """A system whose model learns a velocity field ``u(x, y, t)`` on the periodic square
    ``[0, 2π)²`` (see ``flow.py``). Conservation is read off parcels of dye carried
    through a field: the trainer, the evaluation and the views use exactly the methods
    below, which a subclass implements.

    The dye/parcel contract: :meth:`dye_patch` gives parcels ``(n, 2)``; :meth:`carry`
    moves them through a velocity and integrates its divergence along each path (the
    log of the Jacobian ``J``); :meth:`mass` turns ``log J`` into the dye's mass, which
    stays 1 exactly when ``∇·u = 0`` along the paths.
    """

    kind: ClassVar[str] = "field"
    view_family: ClassVar[str] = "field"
    __abstract = True

    def velocity(self, xy: Tensor, t) -> Tensor:
        """The true velocity at points, ``(B, 2), t -> (B, 2)``."""
        raise NotImplementedError

    def divergence(self, xy: Tensor, t) -> Tensor:
        """``∇·u`` of the true field at points, ``(B, 2) -> (B,)``."""
        raise NotImplementedError

    def divergence_scale(self) -> float:
        """A scale for ``|∇·u|`` (the drift view's compressibility is relative to it)."""
        raise NotImplementedError

    def grid_points(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """The points where fields are drawn, ``(n², 2)``."""
        raise NotImplementedError

    def grid_invariants(self, u: Tensor) -> dict[str, Tensor]:
        """Invariants of velocity grids ``u (..., 2, n, n)``, each ``(...)``."""
        raise NotImplementedError

    def dye_patch(self, n: int | None = None, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Parcels covering the dye patch, ``(n, 2)``."""
        raise NotImplementedError

    def carry(self, velocity=None, divergence=None, xy0: Tensor | None = None, t0: float = 0.0,
              horizon: float | None = None, dt: float | None = None,
              method: str = "rk4") -> tuple[Tensor, Tensor, Tensor]:
        """Carry parcels ``xy0`` (default :meth:`dye_patch`) through ``velocity`` (default
        the true one) from ``t0`` for ``horizon``: ``t (T,)``, ``xy (T, B, 2)``,
        ``log J (T, B)``."""
        raise NotImplementedError

    @staticmethod
    def mass(log_j: Tensor) -> Tensor:
        """The dye's mass from the parcels' ``log J (T, B)``: ``(T,)``, 1 at ``t = 0``."""
        raise NotImplementedError

    def sample_data(self, seed: int = 0, dtype: torch.dtype = torch.float32, device=None, n: int | None = None):
        """Seeded training data: points ``(x, y, t)`` and the true velocity there."""
        raise NotImplementedError
