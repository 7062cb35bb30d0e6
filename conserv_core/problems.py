"""The problem a comparison's methods are trained and judged on, built once.

A :class:`Problem` holds what does not depend on the method: the data and its
train/test split, the collocation pool and the out-of-distribution probes, the fixed test
starts in and out of distribution, and the truth rolled out from them. One kind per
system family: :class:`ODEProblem` and :class:`FieldProblem` (:func:`build` picks).

For a given model it makes

* a :class:`Fit`: the training and test pairs in the model's own coordinates (an LNN's
  ``[q, q̇]``), the constraint residual and its cached gradients, where the violation is
  measured; what a trainer's step reads;
* an :class:`~conserv_core.records.Evaluation` (:meth:`Problem.evaluate`): the model
  rolled out against the truth, every drift curve, and the small arrays the system view
  draws: how many trajectories and how fine a grid those hold is the caller's
  :class:`ViewSpec` (the app's), not the engine's.

:class:`~conserv_core.training.Trainer` keeps only the step, the loop, stopping and
divergence; :class:`~conserv_core.training.Comparison` builds one problem for all its
trainers. Every draw comes from a generator seeded from the run's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from conserv_core import constraints, integrators, leray, metrics, models
from conserv_core.records import Evaluation
from conserv_core.systems.base import ParameterError, System, split_indices

Tensor = torch.Tensor

#: size of a field system's collocation pool (random points in space and time)
FIELD_POOL = 4096
#: the share of the data a run trains on (the rest is its test set)
TRAIN_FRACTION = 0.8
#: the settings a problem is built from: trainers may share one only if these agree
PROBLEM_FIELDS = ("seed", "n_test", "ood_factor", "dt", "horizon", "integrator", "projection", "projection_tol",
                  "n_colloc", "dtype", "device")


@dataclass(frozen=True)
class ViewSpec:
    """How much an evaluation's ``view`` arrays hold: what the app draws, so the app (its
    system view) chooses it and a run carries it (``RunSpec.view``); nothing measured
    depends on it. The defaults are the dashboard's.

    Attributes:
        trajectories: test trajectories in ``view["true"]`` and ``view["model"]``, the
            first test starts (in distribution up to ``n_test``): ``(T, trajectories, D)``.
        energy_grid: points per side of ``view["energy_grid"]``, a learned energy over the
            phase plane (one degree of freedom): ``H`` is ``(n, n)``.
        field_grid: points per side of a flow's ``view["u"]`` ``(n, n, 2)`` and
            ``view["div"]`` ``(n, n)`` at t = 0.
    """

    trajectories: int = 4
    energy_grid: int = 41
    field_grid: int = 64

    #: (low, high) of each field: arrays a page can draw, and send, several times a run
    BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {"trajectories": (1, 64), "energy_grid": (2, 201),
                                                    "field_grid": (2, 256)}

    def __post_init__(self):
        for name, (lo, hi) in self.BOUNDS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ParameterError(f"view {name} must be an integer in [{lo}, {hi}]; got {v!r}")

    @classmethod
    def of(cls, values: dict) -> "ViewSpec":
        """From plain data (``RunSpec.view``); unknown keys are refused by name."""
        unknown = set(values) - set(cls.BOUNDS)
        if unknown:
            raise ParameterError(f"view takes {', '.join(cls.BOUNDS)}; got {', '.join(sorted(unknown))}")
        return cls(**values)


def _along(fn, z: Tensor, state_dim: int) -> Tensor:
    """An invariant along rollouts ``z (T, B, D)``: ``(T, B)`` or ``(T, B, k)``."""
    q = fn(z.reshape(-1, state_dim))
    return q.reshape(z.shape[0], z.shape[1], *q.shape[1:])


class Coords:
    """Conversion between the system's canonical state ``z = [q, p]`` and a model's."""

    def __init__(self, system: System, model_coords: str):
        self.system = system
        self.velocity = model_coords == "velocity"

    def from_canonical(self, z: Tensor) -> Tensor:
        if not self.velocity:
            return z
        q = z[..., : self.system.dof]
        return torch.cat([q, self.system.velocity(z)], -1)

    def to_canonical(self, s: Tensor) -> Tensor:
        if not self.velocity:
            return s
        q, qd = s[..., : self.system.dof], s[..., self.system.dof:]
        return torch.cat([q, self.system.momentum(q, qd)], -1)

    def targets(self, z: Tensor, dzdt: Tensor) -> Tensor:
        """``ds/dt`` from ``dz/dt`` by the chain rule (a Jacobian–vector product)."""
        if not self.velocity:
            return dzdt
        # reverse-mode (double-backward) JVP: torch.func.jvp's forward AD loads JIT
        # decompositions on first use (~2 s and a deprecation warning)
        _, ds = torch.autograd.functional.jvp(self.from_canonical, z, dzdt)
        return ds.detach()


@dataclass
class Fit:
    """One model's view of a problem: what its training step and its violation read.

    ``x``/``y`` are inputs and targets in the model's coordinates (field systems: points
    ``(x, y, t)`` and velocities); ``colloc`` is the soft constraints' pool and
    ``colloc_grads`` the invariants' gradients there (None: computed through the model);
    the violation is measured at ``in_points`` (the test inputs) and ``ood_points``.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    colloc: Tensor
    colloc_grads: dict | None
    residual: object
    in_points: Tensor
    in_grads: dict | None
    ood_points: Tensor
    ood_grads: dict | None
    coords: Coords | None
    field: bool

    def predict(self, model, x: Tensor) -> Tensor:
        return model(x[:, :2], x[:, 2]) if self.field else model(x)

    def violation(self, model, points: Tensor, grads) -> float:
        """The rms constraint residual of ``model`` at ``points``."""
        if self.field:
            with torch.enable_grad():
                res = self.residual(model, points)
        else:
            with torch.no_grad():
                res = self.residual(model, points, grads)
        return constraints.rms(res)

    def residuals_everywhere(self, model) -> dict:
        """The residuals at every pool point, detached (what a multiplier update reads)."""
        if self.field:  # the divergence needs autograd through the model
            return {k: v.detach() for k, v in self.residual(model, self.colloc).items()}
        with torch.no_grad():
            return self.residual(model, self.colloc, self.colloc_grads)


class Problem:
    """What a comparison shares; see the module docstring. Build with :func:`build`."""

    kind: ClassVar[str] = ""

    def __init__(self, system: System, config, device: torch.device, dtype: torch.dtype):
        self.system, self.config, self.device, self.dtype = system, config, device, dtype
        self.key = tuple(getattr(config, f) for f in PROBLEM_FIELDS)
        self.eval_dt = config.dt if config.dt is not None else system.dt
        horizon = config.horizon if config.horizon is not None else system.horizon
        self.eval_steps = max(1, int(round(horizon / self.eval_dt)))
        self.eval_every_save = max(1, self.eval_steps // 200)

    @property
    def to(self) -> dict:
        return dict(device=self.device, dtype=self.dtype)

    def check_shares(self, system: System, config) -> None:
        """Refuse a trainer that would read this problem with other settings."""
        key = tuple(getattr(config, f) for f in PROBLEM_FIELDS)
        if system is not self.system or key != self.key:
            diff = [f for f, a, b in zip(PROBLEM_FIELDS, key, self.key) if a != b]
            raise ValueError(f"a shared problem needs the same system and settings; these differ: "
                             f"{', '.join(diff) or 'the system'}")

    def fit(self, model, inv_names: list[str]) -> Fit:
        raise NotImplementedError

    def evaluate(self, model, fit: Fit, method: str, step: int, inv_names: list[str],
                 shown: ViewSpec = ViewSpec()) -> Evaluation:
        """``model`` rolled out and measured; its ``view`` arrays as ``shown`` asks."""
        raise NotImplementedError

    def truth(self) -> Evaluation:
        """The truth's own drift (the floor every curve is read against)."""
        raise NotImplementedError


def build(system: System, config, device: torch.device, dtype: torch.dtype) -> Problem:
    """The problem for ``system`` with ``config``: :class:`ODEProblem` or
    :class:`FieldProblem`. Generates the data and rolls the truth out (the long part of
    set-up: a stop set through :func:`integrators.stopping` ends it)."""
    cls = ODEProblem if system.kind == "ode" else FieldProblem
    return cls(system, config, device, dtype)


# ---------------------------------------------------------------------------------------
# ODE systems
# ---------------------------------------------------------------------------------------
class ODEProblem(Problem):
    """Trajectory data ``(z, dz/dt)`` in float64, an 80/20 split, and the truth rolled out
    from ``n_test`` starts in distribution and ``n_test`` at ``ood_factor``."""

    kind = "ode"

    def __init__(self, system, config, device, dtype):
        super().__init__(system, config, device, dtype)
        self.data = system.sample_data(seed=config.seed, dtype=torch.float64)
        self.train_idx, self.test_idx = split_indices(self.data.x.shape[0], TRAIN_FRACTION,
                                                      torch.Generator().manual_seed(config.seed + 2))
        self.z0_eval, self.t_eval, self.z_true = self._true_rollouts()  # (2n, D), (T,), (T, 2n, D)

    def _true_rollouts(self) -> tuple[Tensor, Tensor, Tensor]:
        """The fixed test starts, in and out of distribution ``(2 n_test, D)``, and the
        truth rolled out from them: ``(z0, t (T,), z (T, 2 n_test, D))``."""
        cfg, sysm = self.config, self.system
        z_in = sysm.sample_initial(cfg.n_test, seed=10_000 + cfg.seed, dtype=torch.float64)
        z_ood = sysm.sample_initial(cfg.n_test, seed=20_000 + cfg.seed, scale=cfg.ood_factor, dtype=torch.float64)
        z0 = torch.cat([z_in, z_ood]).to(**self.to)
        try:
            field = sysm.gradient_form if cfg.integrator in integrators.NEEDS_ENERGY else sysm.vector_field
            with torch.no_grad():
                t, z = integrators.rollout(field, z0, self.eval_dt,
                                           self.eval_steps, method=cfg.integrator, every=self.eval_every_save)
        except RuntimeError as err:
            raise ParameterError(f"dt={self.eval_dt:g} is too large for a {cfg.integrator} rollout of the true "
                                 f"{sysm.key}: {err}") from None
        return z0, t, z

    def fit(self, model, inv_names):
        sysm, to = self.system, self.to
        coords = Coords(sysm, model.coords)
        x, dxdt = self.data.x, self.data.dxdt
        s, dsdt = coords.from_canonical(x), coords.targets(x, dxdt)
        tr, te = self.train_idx, self.test_idx
        x_train, y_train = s[tr].to(**to), dsdt[tr].to(**to)
        x_test, y_test = s[te].to(**to), dsdt[te].to(**to)
        model.set_scales(x_train, y_train)
        # collocation pool for the soft constraints: every training input
        residual = constraints.InvariantRates(sysm, inv_names, coords.to_canonical, x_train, y_train)
        # states far along the OOD true trajectories, where the soft constraint was never trained
        n = self.config.n_test
        ood = coords.from_canonical(self.z_true[:, n:].reshape(-1, sysm.state_dim))
        ood = ood[torch.isfinite(ood).all(-1)][:: max(1, self.z_true.shape[0] // 16)]
        return Fit(x_train, y_train, x_test, y_test, colloc=x_train, colloc_grads=residual._grads(x_train),
                   residual=residual, in_points=x_test, in_grads=residual._grads(x_test),
                   ood_points=ood, ood_grads=residual._grads(ood), coords=coords, field=False)

    def truth(self) -> Evaluation:
        sysm, n = self.system, self.config.n_test
        z, t = self.z_true, self.t_eval
        drift, drift_ood = {}, {}
        for name, fn in sysm.invariants().items():
            if not sysm.is_conserved(name):
                continue  # its curves measure each model against the truth's own Q(t)
            q = _along(fn, z, sysm.state_dim)
            scale = sysm.invariant_scale(name, self.z0_eval)
            drift[name] = metrics.drift_curve(q[:, :n], scale[:n], t)
            drift_ood[name] = metrics.drift_curve(q[:, n:], scale[n:], t)
        return Evaluation("truth", 0, 0.0, drift, drift_ood, {}, None, 0.0, 0.0, 0.0, {})

    # -- evaluation ---------------------------------------------------------------------
    def rollout(self, model, fit: Fit, s0: Tensor, method: str, project: bool,
                inv_names: list[str]) -> tuple[Tensor, Tensor]:
        """``model`` rolled out from ``s0`` (its own coordinates) with ``method``, projected
        after every step onto ``inv_names`` if ``project``: ``t (T,)``, ``s (T, B, D)``."""
        field = model.gradient_form if method in integrators.NEEDS_ENERGY else (lambda z, t: model(z, t))
        proj, scales = None, None
        if project:
            sysm, to_z = self.system, fit.coords.to_canonical
            fns = sysm.invariants()
            # canonical models get the invariants' closed-form gradients; velocity ones autograd
            evaluate = None if fit.coords.velocity else sysm.invariants_and_gradients(inv_names)
            proj = integrators.Projection({k: (lambda s, f=fns[k]: f(to_z(s))) for k in inv_names},
                                          tol=self.config.projection_tol, evaluate=evaluate)
            scales = {k: sysm.invariant_scale(k, self.z0_eval) for k in inv_names}
        return integrators.rollout(field, s0, self.eval_dt, self.eval_steps, method=method,
                                   every=self.eval_every_save, project=proj, project_scales=scales)

    def _invariant_drift(self, z: Tensor, t: Tensor) -> tuple[dict, dict]:
        """Drift curves of every true invariant along canonical rollouts ``z (T, 2n, D)``,
        in and out of distribution. A quantity the system does not conserve with its
        parameters (a damped pendulum's energy) is compared with the truth's own
        ``Q(t)`` instead of ``Q(0)``: ``|Q(t) − Q_true(t)| / s``."""
        sysm, n = self.system, self.config.n_test
        drift, drift_ood = {}, {}
        for name, fn in sysm.invariants().items():
            q = _along(fn, z, sysm.state_dim)
            if not sysm.is_conserved(name):
                q = q - _along(fn, self.z_true, sysm.state_dim)  # zero at t = 0: the same starts
            scale = sysm.invariant_scale(name, self.z0_eval)
            drift[name] = metrics.drift_curve(q[:, :n], scale[:n], t)
            drift_ood[name] = metrics.drift_curve(q[:, n:], scale[n:], t)
        return drift, drift_ood

    def _power(self, model) -> dict:
        """How fast each field drains the *true* energy, ``−dE/dt = −∇E·f``, averaged over
        the states of the in-distribution true orbits: the model's (``"power"``) and the
        truth's (``"power_true"``, ``∇EᵀR∇E``). What a damped system's view compares."""
        sysm, n = self.system, self.config.n_test
        zt = self.z_true[:, :n].reshape(-1, sysm.state_dim)
        zt = zt[torch.isfinite(zt).all(-1)]
        form = sysm.gradient_form
        grad = form.gradient(zt)
        with torch.no_grad():
            f_model = model(zt)  # canonical models only (the caller checks)
        power = float(-(grad * f_model).sum(-1).mean())
        power_true = float(-(grad * form(zt)).sum(-1).mean())
        return {"power": power, "power_true": power_true}

    def _learned_drift(self, model, s: Tensor, t: Tensor, suffix: str = "") -> dict:
        n = self.config.n_test
        e = model.learned_energy(s.reshape(-1, s.shape[-1])).reshape(s.shape[0], s.shape[1]).detach()
        scale = e[0].abs().clamp_min(1e-12)
        return {f"energy{suffix}": metrics.drift_curve(e[:, :n], scale[:n], t),
                f"energy{suffix}_ood": metrics.drift_curve(e[:, n:], scale[n:], t)}

    def evaluate(self, model, fit, method, step, inv_names, shown: ViewSpec = ViewSpec()):
        sysm, cfg, n = self.system, self.config, self.config.n_test
        has_energy = "learned_energy" in model.capabilities
        with torch.no_grad():
            s0 = fit.coords.from_canonical(self.z0_eval)
            t, s = self.rollout(model, fit, s0, cfg.integrator, cfg.projection, inv_names)
            z = fit.coords.to_canonical(s)
            test_mse = metrics.mse(model(fit.x_test), fit.y_test)
        drift, drift_ood = self._invariant_drift(z, t)
        learned = self._learned_drift(model, s, t) if has_energy else {}
        traj = metrics.trajectory_error(z[:, :n], self.z_true[:, :n], t)
        unprojected = {}
        if cfg.projection:
            # the same rollout without the projection: what it fixed, and what it did not
            with torch.no_grad():
                _, s_plain = self.rollout(model, fit, s0, cfg.integrator, False, inv_names)
                z_plain = fit.coords.to_canonical(s_plain)
            plain, plain_ood = self._invariant_drift(z_plain, t)
            unprojected = {**plain, **{f"{k}_ood": v for k, v in plain_ood.items()},
                           "trajectory": metrics.trajectory_error(z_plain[:, :n], self.z_true[:, :n], t)}
        if has_energy and cfg.integrator in integrators.NEEDS_ENERGY:
            # the learned energy under RK4 too: exact in continuous time is not exact in
            # what a rollout shows
            with torch.no_grad():
                _, s_rk4 = self.rollout(model, fit, s0, "rk4", cfg.projection, inv_names)
            learned.update(self._learned_drift(model, s_rk4, t, "_rk4"))
        view = {
            "t": t.cpu().numpy(),
            "true": self.z_true[:, :shown.trajectories].detach().cpu().double().numpy(),
            "model": z[:, :shown.trajectories].detach().cpu().double().numpy(),
        }
        if "energy" in sysm.invariant_names() and not sysm.is_conserved("energy") and not fit.coords.velocity:
            view.update(self._power(model))
        if has_energy and sysm.dof == 1:
            view["energy_grid"] = self._energy_grid(model, fit, shown.energy_grid)
        if "pair_potential" in model.capabilities and hasattr(sysm, "pair_potential"):
            view.update(self._pair_potential(model, fit))
        return Evaluation(
            method=method, step=step, elapsed=0.0, drift=drift, drift_ood=drift_ood,
            learned_drift=learned, trajectory_error=traj, test_mse=test_mse,
            violation=fit.violation(model, fit.in_points, fit.in_grads),
            violation_ood=fit.violation(model, fit.ood_points, fit.ood_grads), view=view, unprojected=unprojected,
        )

    def _pair_potential(self, model, fit: Fit, n: int = 60) -> dict:
        """The learned pair term against the true one (symmetric n-body model), from half
        the closest pass in the training data to its widest separation: ``r``, ``learned``
        and ``true`` (None for unequal masses), as float64 arrays."""
        q, _ = models.symmetric._bodies(fit.x_train.double())
        r_data = models.symmetric._pair_distance2(q).sqrt()
        r = torch.linspace(0.5 * float(r_data.min()), float(r_data.max()), n, dtype=torch.float64)
        learned = model.pair_potential(r.to(**self.to))
        true = self.system.pair_potential(r)
        return {"pair_potential": {"r": r.numpy(), "learned": learned.detach().cpu().double().numpy(),
                                   "true": None if true is None else true.numpy(),
                                   "data_range": (float(r_data.min()), float(r_data.max()))}}

    def _energy_grid(self, model, fit: Fit, n: int) -> dict:
        zt = self.z_true[:, : self.config.n_test].reshape(-1, self.system.state_dim)
        zt = zt[torch.isfinite(zt).all(-1)]
        qmax = float(zt[:, 0].abs().max()) * 1.2 + 1e-6
        pmax = float(zt[:, 1].abs().max()) * 1.2 + 1e-6
        qs = torch.linspace(-qmax, qmax, n, **self.to)
        ps = torch.linspace(-pmax, pmax, n, **self.to)
        Q, P = torch.meshgrid(qs, ps, indexing="xy")
        z = torch.stack([Q.reshape(-1), P.reshape(-1)], -1)
        with torch.no_grad():
            e = model.learned_energy(fit.coords.from_canonical(z)).reshape(n, n)
        return {"q": qs.cpu().double().numpy(), "p": ps.cpu().double().numpy(), "H": e.cpu().double().numpy()}


# ---------------------------------------------------------------------------------------
# field systems
# ---------------------------------------------------------------------------------------
class FieldProblem(Problem):
    """Velocity samples at points ``(x, y, t)``, a collocation pool over the periodic
    square and the training window, probes at later times, and the dye patch carried
    through the true field from ``t = 0`` and, out of distribution, from
    ``t_end·(ood_factor − 1)`` for the same duration (later times: the network's field there
    is extrapolated; a divergence-free one keeps the mass at any time)."""

    kind = "field"

    def __init__(self, system, config, device, dtype):
        super().__init__(system, config, device, dtype)
        to = self.to
        data = system.sample_data(seed=config.seed, dtype=torch.float64)
        g = torch.Generator().manual_seed(config.seed + 2)  # the split, then the pool and the probes
        tr, te = split_indices(data.xyt.shape[0], TRAIN_FRACTION, g)
        self.x_train, self.y_train = data.xyt[tr].to(**to), data.u[tr].to(**to)
        self.x_test, self.y_test = data.xyt[te].to(**to), data.u[te].to(**to)
        self.t_end = t_end = float(data.xyt[:, 2].max())
        # collocation pool: uniform in the periodic square, times in the training window
        m = config.n_colloc
        xy = 2 * math.pi * torch.rand(FIELD_POOL, 2, generator=g, dtype=torch.float64)
        tt = t_end * torch.rand(FIELD_POOL, 1, generator=g, dtype=torch.float64)
        self.colloc = torch.cat([xy, tt], -1).to(**to)
        # OOD: the same square at later times than any training sample
        xy = 2 * math.pi * torch.rand(m, 2, generator=g, dtype=torch.float64)
        tt = t_end * (1 + (config.ood_factor - 1) * torch.rand(m, 1, generator=g, dtype=torch.float64))
        self.ood_points = torch.cat([xy, tt], -1).to(**to)
        self.patch0 = system.dye_patch().to(**to)
        with torch.no_grad():
            self.t_eval, xy_true, logj_true = system.carry(
                system.velocity, system.divergence, self.patch0, 0.0, self.eval_dt * self.eval_steps,
                self.eval_dt, method=self.integrator)
        self.dye_true = xy_true[:: self.eval_every_save]
        self.mass_true = system.mass(logj_true)
        # OOD dye test: the same patch carried for the same duration, starting at
        # t_end·(ood_factor − 1), so it ends ood_factor training windows out (×1: the
        # in-distribution test). Past the solved span the true field is frozen at its last
        # snapshot (still divergence-free, so the truth's floor is the same round-off).
        self.ood_t0 = t_end * (config.ood_factor - 1)
        with torch.no_grad():
            self.t_ood, _, logj_ood = system.carry(
                system.velocity, system.divergence, self.patch0, self.ood_t0, self.eval_dt * self.eval_steps,
                self.eval_dt, method=self.integrator)
        self.mass_true_ood = system.mass(logj_ood)

    @property
    def integrator(self) -> str:
        # parcels are not a Hamiltonian system: leapfrog's q/p split would be meaningless
        return "rk4" if self.config.integrator == "leapfrog" else self.config.integrator

    def fit(self, model, inv_names):
        residual = constraints.Divergence(models.divergence, self.y_train)
        return Fit(self.x_train, self.y_train, self.x_test, self.y_test, colloc=self.colloc, colloc_grads=None,
                   residual=residual, in_points=self.x_test[: self.config.n_colloc], in_grads=None,
                   ood_points=self.ood_points, ood_grads=None, coords=None, field=True)

    def truth(self) -> Evaluation:
        mass = self.mass_true
        ones = torch.ones(1, dtype=mass.dtype, device=mass.device)
        t = torch.linspace(0, self.eval_dt * self.eval_steps, mass.shape[0], dtype=mass.dtype)
        drift = {"mass": metrics.drift_curve(mass.unsqueeze(1), ones, t)}
        drift_ood = {"mass": metrics.drift_curve(self.mass_true_ood.unsqueeze(1), ones, self.t_ood)}
        return Evaluation("truth", 0, 0.0, drift, drift_ood, {}, None, 0.0, 0.0, 0.0, {})

    def evaluate(self, model, fit, method, step, inv_names, shown: ViewSpec = ViewSpec()):
        sysm, cfg = self.system, self.config

        def vel(xy, t):
            with torch.no_grad():
                return model(xy, t)

        def div(xy, t):
            return models.divergence(model, xy, t).detach()

        horizon = self.eval_dt * self.eval_steps
        ones = torch.ones(1, **self.to)
        unprojected, extra = {}, {}

        def mass_drift(v, d, t0):  # the dye patch carried from t0 for the horizon: t, xy, its mass drift
            t, xy, logj = sysm.carry(v, d, self.patch0, t0, horizon, self.eval_dt, method=self.integrator)
            mass = sysm.mass(logj)  # (T,)
            return t, xy, mass, metrics.drift_curve(mass.unsqueeze(1), ones, t)

        if cfg.projection:
            # hard at inference: the parcels ride the Leray projection of the learned field
            lf = leray.LerayField(model, sysm, dtype=self.dtype, device=self.device)
            t, xy, mass, curve = mass_drift(lf.velocity, lf.divergence, 0.0)
            ood = mass_drift(lf.velocity, lf.divergence, self.ood_t0)[3]
            unprojected["mass"] = mass_drift(vel, div, 0.0)[3]
            unprojected["mass_ood"] = mass_drift(vel, div, self.ood_t0)[3]
            extra = self._velocity_errors(vel, lf)
        else:
            # one carry of both patches, the OOD one's times shifted by ood_t0 (per-point
            # times): ~1.4x one patch's cost where two carries took 2x
            n = self.patch0.shape[0]
            shift = torch.cat([torch.zeros(n, **self.to), torch.full((n,), self.ood_t0, **self.to)])
            t, xy2, logj2 = sysm.carry(lambda p, tt: vel(p, tt + shift), lambda p, tt: div(p, tt + shift),
                                       torch.cat([self.patch0, self.patch0]), 0.0, horizon, self.eval_dt,
                                       method=self.integrator)
            xy, mass, mass_ood = xy2[:, :n], sysm.mass(logj2[:, :n]), sysm.mass(logj2[:, n:])
            curve = metrics.drift_curve(mass.unsqueeze(1), ones, t)
            ood = metrics.drift_curve(mass_ood.unsqueeze(1), ones, t + self.ood_t0)
        drift, drift_ood = {"mass": curve}, {"mass": ood}
        with torch.no_grad():
            test_mse = metrics.mse(fit.predict(model, fit.x_test), fit.y_test)
        # divergence along time, a 'drift' view of the local constraint
        n_t = 24
        g = torch.Generator().manual_seed(123)
        xy_probe = (2 * math.pi * torch.rand(256, 2, generator=g, dtype=torch.float64)).to(self.device, self.dtype)
        u_scale = float(fit.residual.scales["divergence"])
        # in and over the OOD dye window too: the OOD switch keeps both plots
        for out, t0 in ((drift, 0.0), (drift_ood, self.ood_t0)):
            times = torch.linspace(t0, t0 + horizon, n_t, **self.to)
            div_t = [float(div(xy_probe, float(tt)).pow(2).mean().sqrt()) / u_scale for tt in times]
            out["divergence"] = metrics.Curve(times.double().cpu().tolist(), div_t)
        view = {
            "t": t[:: self.eval_every_save].cpu().numpy(),
            "dye_model": xy[:: self.eval_every_save].detach().cpu().double().numpy(),
            "dye_true": self.dye_true.detach().cpu().double().numpy(),
            "mass": mass.detach().cpu().double().numpy(),
            "mass_true": self.mass_true.detach().cpu().double().numpy(),
        }
        view.update(self._field_view(model, div, shown.field_grid))
        view.update(extra)
        return Evaluation(
            method=method, step=step, elapsed=0.0, drift=drift, drift_ood=drift_ood,
            learned_drift={}, trajectory_error=None, test_mse=test_mse,
            violation=fit.violation(model, fit.in_points, None),
            violation_ood=fit.violation(model, fit.ood_points, None), view=view, unprojected=unprojected,
        )

    def _velocity_errors(self, vel, lf, n_times: int = 3) -> dict:
        """The rms velocity error against the truth on the solver's grid, of the network's
        own field and of its Leray projection, relative to the true field's rms, at
        ``n_times`` times across the training window. On the grid the projection cannot
        raise it (the truth is divergence-free and P is an orthogonal projection); what it
        changes is the field the parcels ride, and its smoothness between grid points."""
        sysm = self.system
        pts = sysm.grid_points(**self.to)
        plain, proj = [], []
        for tt in torch.linspace(0.0, self.t_end, n_times).tolist():
            true = sysm.velocity(pts, tt)
            ref = float(true.pow(2).sum(-1).mean().sqrt().clamp_min(1e-300))
            plain.append(float((vel(pts, tt) - true).pow(2).sum(-1).mean().sqrt()) / ref)
            proj.append(float((lf.velocity(pts, tt) - true).pow(2).sum(-1).mean().sqrt()) / ref)
        return {"velocity_error": sum(plain) / n_times, "velocity_error_projected": sum(proj) / n_times}

    def _field_view(self, model, div, n: int) -> dict:
        xs = torch.linspace(0, 2 * math.pi, n + 1, **self.to)[:-1]
        X, Y = torch.meshgrid(xs, xs, indexing="xy")
        xy = torch.stack([X.reshape(-1), Y.reshape(-1)], -1)
        with torch.no_grad():
            u = model(xy, 0.0).reshape(n, n, 2)
        d = div(xy, 0.0).reshape(n, n)
        return {"grid": xs.cpu().double().numpy(), "u": u.cpu().double().numpy(), "div": d.cpu().double().numpy()}
