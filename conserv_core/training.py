"""The trainer: steps, progress records, stopping, evaluation.

The trainer never prints. It hands plain records to whoever listens (the CLI's progress
bar, the dashboard, a notebook):

* :class:`Progress` after every optimisation step,
* :class:`Evaluation` every ``eval_every`` steps (and at the start and the end): drift
  curves of every true invariant on fixed test initial conditions, in and out of
  distribution, the learned invariant's drift for hnn/lnn, trajectory error, and small
  arrays for the system view,
* :class:`Finished` once, with the reason the run ended.

A run can be stopped from another thread (:meth:`Trainer.stop` or a shared
``threading.Event``) and ends within one step: one optimisation step, or one integrator
step of an evaluation rollout (:func:`integrators.stopping`), with a ``"stopped"``
:class:`Finished` record. Setting it while a trainer is being built (the data and the
truth rollout, seconds for a long horizon) makes the constructor raise
:class:`integrators.Stopped` within one step; no record has been sent then.

Before building anything, a trainer (and a comparison, for all its methods) checks the
run's estimated work against a limit (:func:`conserv_core.budget.check`) and refuses an
oversized run with a :class:`ParameterError` that names the settings responsible.

A non-finite loss ends a run with status ``"diverged"``; the weights from before the bad
step are restored and every record already sent stays valid.

:class:`Comparison` trains several methods round-robin on the same data, so a comparison
of k methods costs k single runs and all curves grow together.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import param
import torch

from conserv_core import budget, constraints, integrators, leray, methods, metrics, models
from conserv_core.devices import DEVICES, resolve_device
from conserv_core.systems.base import ParameterError, System, build

Tensor = torch.Tensor
#: raised by a constructor stopped during set-up (re-exported so callers need one import)
Stopped = integrators.Stopped


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
#: optimiser key -> ``torch.optim`` class (its choices in :class:`TrainConfig`)
OPTIMIZERS: dict[str, type] = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


class TrainConfig(param.Parameterized):
    """Everything a run needs besides the system and the method. Declared once; the CLI
    and the dashboard build their inputs from these bounds."""

    steps = param.Integer(default=1000, bounds=(1, 200_000), doc="Optimisation steps.")
    optimizer = param.Selector(default="adam", objects=list(OPTIMIZERS),
                               doc="Adam (robust) or plain SGD (diverges quickly when lr is too large).")
    lr = param.Number(default=3e-3, bounds=(1e-6, 1e3), doc="Learning rate.")
    weight_decay = param.Number(default=0.0, bounds=(0.0, 1.0), doc="Adam weight decay.")
    batch_size = param.Integer(default=512, bounds=(1, 1_000_000),
                               doc="Minibatch size (the whole set if larger).")
    width = param.Integer(default=64, bounds=(4, 1024), doc="Hidden units per layer.")
    depth = param.Integer(default=2, bounds=(1, 8), doc="Hidden layers.")
    activation = param.Selector(default="tanh", objects=list(models.ACTIVATIONS),
                                doc="Hidden activation (the generic LNN uses softplus in place of tanh and silu).")
    lnn_form = param.Selector(default="generic", objects=["generic", "mechanical"], doc=(
        "LNN only. generic: any L(q, q̇), as in the LNN paper. mechanical: L = ½ q̇ᵀM(q)q̇ − V(q) "
        "with M positive definite, which trains faster and cannot run away. Both see angles as (cos, sin)."))
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Seed for data, weights and batches.")
    device = param.Selector(default="auto", objects=list(DEVICES),
                            doc="auto: cuda, then mps, then cpu.")
    dtype = param.Selector(default="float32", objects=["float32", "float64"], doc="Floating point precision.")
    threads = param.Integer(default=1, bounds=(0, 256),
                            doc="torch intra-op threads for the run (0: leave torch's choice). One is "
                                "fastest for small models on a busy machine.")
    eval_every = param.Integer(default=0, bounds=(0, 200_000), doc="Steps between evaluations (0: steps/10).")
    integrator = param.Selector(default="rk4", objects=["rk4"] + [k for k in integrators.INTEGRATORS if k != "rk4"],
                                doc="Rollout integrator for evaluation (truth and models alike). discrete_gradient "
                                    "conserves a scalar energy in every step: the truth, hnn and phnn only.")
    projection = param.Boolean(default=False, doc=(
        "Hard at inference: after every rollout step, project the model's state back onto the chosen invariants "
        "(any ODE method), or Leray-project the learned velocity onto its divergence-free part (flow). "
        "It holds the invariants, not the trajectory."))
    projection_tol = param.Number(default=1e-10, bounds=(0.0, 1e-2), inclusive_bounds=(False, True),
                                  doc="Relative tolerance of the projection onto the invariants (> 0).")
    horizon = param.Number(default=None, allow_None=True, bounds=(1e-3, 1e5),
                           doc="Evaluation rollout length (None: the system's default).")
    dt = param.Number(default=None, allow_None=True, bounds=(1e-5, 10.0),
                      doc="Evaluation rollout step (None: the system's default).")
    n_test = param.Integer(default=16, bounds=(1, 4096), doc="Fixed test initial conditions.")
    ood_factor = param.Number(default=3.0, bounds=(1.0, 1000.0),
                              doc="How far out of distribution the OOD test set goes (1 = training band).")
    invariants = param.List(default=[], item_type=str,
                            doc="Invariants the soft constraints act on (empty: all conserved ones).")
    lam = param.Number(default=10.0, bounds=(0.0, 1e6), doc="Penalty weight λ.")
    mu = param.Number(default=10.0, bounds=(1e-6, 1e6), doc="Augmented Lagrangian initial μ.")
    mu_growth = param.Number(default=2.0, bounds=(1.0, 100.0), doc="Factor on μ when the violation stalls.")
    mu_max = param.Number(default=100.0, bounds=(1e-6, 1e9), doc="Cap on μ.")
    update_every = param.Integer(default=100, bounds=(1, 100_000), doc="Steps between multiplier updates.")
    n_colloc = param.Integer(default=1024, bounds=(1, 100_000),
                             doc="Collocation points per step for the soft constraints (drawn from a fixed pool).")


def recommended(system: str) -> dict:
    """The training settings runs on system ``system`` start from: what the system
    declares (``System.recommended``, tuned for live teaching; timings in
    ``benchmarks/bench_training.py``). ``{}`` for an unknown key."""
    from conserv_core.systems import ALL_SYSTEMS

    cls = ALL_SYSTEMS.get(system)
    return dict(cls.recommended) if cls is not None else {}


def warm_up() -> None:
    """Pay torch's one-time lazy imports (the first optimiser pulls in torch._dynamo,
    ~1.5 s) now, so a user's first run does not. Servers call this at start-up."""
    p = torch.nn.Parameter(torch.zeros(1))
    torch.optim.Adam([p], lr=1e-3)
    # a batched backward (the projection's Jacobian) imports functorch's vmap on first use (~1 s)
    x = torch.zeros(1, 2, requires_grad=True)
    torch.autograd.grad(x * 2.0, x, grad_outputs=torch.ones(2, 1, 2), is_grads_batched=True)


def make_config(system: str | None = None, **overrides) -> TrainConfig:
    """A validated :class:`TrainConfig`: the system's recommended defaults, then overrides."""
    values = recommended(system) if system else {}
    values.update(overrides)
    return build(TrainConfig, **values)


# ---------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------
@dataclass
class Progress:
    method: str
    step: int
    total_steps: int
    loss: float
    data_loss: float
    constraint_loss: float
    #: rms of the (normalised) true constraint residual on the collocation points
    violation: float
    multipliers: dict[str, float]
    steps_per_s: float
    elapsed: float


@dataclass
class Evaluation:
    method: str
    step: int
    elapsed: float
    #: true invariants along rollouts from the test initial conditions
    drift: dict[str, metrics.Curve]
    #: the same from the out-of-distribution initial conditions
    drift_ood: dict[str, metrics.Curve]
    #: the model's own conserved quantity (hnn, lnn), in and out of distribution
    learned_drift: dict[str, metrics.Curve]
    trajectory_error: metrics.Curve | None
    test_mse: float
    violation: float
    violation_ood: float
    #: small numpy arrays for the system view (trajectories, fields, dye)
    view: dict = field(default_factory=dict)
    #: with ``projection`` on: the same curves along the plain (unprojected) rollout,
    #: keyed like ``drift`` (``"<name>"``, ``"<name>_ood"``, and ``"trajectory"``), so a
    #: view can show what the projection fixed and what it did not
    unprojected: dict[str, metrics.Curve] = field(default_factory=dict)


@dataclass
class Finished:
    method: str
    status: str  # "done", "stopped", "diverged", "error"
    message: str
    step: int
    elapsed: float


Record = Progress | Evaluation | Finished
Listener = Callable[[Record], None]


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: size of a field system's collocation pool (random points in space and time)
FIELD_POOL = 4096


def _along(fn, z: Tensor, state_dim: int) -> Tensor:
    """An invariant along rollouts ``z (T, B, D)``: ``(T, B)`` or ``(T, B, k)``."""
    q = fn(z.reshape(-1, state_dim))
    return q.reshape(z.shape[0], z.shape[1], *q.shape[1:])


def default_invariants(system: System) -> list[str]:
    """The invariants a run constrains and projects onto when ``TrainConfig.invariants``
    is empty: the flow's divergence; an ODE system's conserved ones (all of them if it
    conserves none with its parameters)."""
    if system.kind == "field":
        return ["divergence"]
    return [n for n in system.invariant_names() if system.is_conserved(n)] or list(system.invariant_names())


def constrained_invariants(system: System, config: TrainConfig) -> list[str]:
    """The invariants a run with ``config`` constrains: ``config.invariants``, else
    :func:`default_invariants` (what the soft constraints act on, the projection holds
    and the augmented Lagrangian keeps a multiplier for)."""
    return list(config.invariants) or default_invariants(system)


def check_rollout(system: System, method_keys, config: TrainConfig) -> None:
    """Refuse rollout options that cannot apply, before any work starts.

    * ``discrete_gradient`` needs a scalar energy in canonical coordinates: the true ODE
      systems and the methods whose model has a ``gradient_form`` (hnn, phnn).
    * ``projection`` projects ODE states onto the chosen invariants, each of which the
      system must conserve with its current parameters; on a field system it is the
      Leray projection of the learned velocity.
    """
    if config.integrator in integrators.NEEDS_ENERGY:
        if system.kind != "ode":
            raise ParameterError(
                f"integrator {config.integrator!r} applies to ODE systems with a scalar energy; the {system.key}'s "
                f"parcels are not a Hamiltonian system: use rk4 (and projection for its mass)")
        fit = [k for k in methods.valid_methods(system) if methods.get_method(k).has_gradient_form(system)]
        bad = [k for k in method_keys if k not in fit]
        if bad:
            raise ParameterError(
                f"integrator {config.integrator!r} needs a learned scalar energy H with ż = (J − R)∇H; it applies to "
                f"{', '.join(fit) or 'no method'} (and the true system), not to {', '.join(bad)}: choose rk4 or "
                f"implicit_midpoint for those (projection then holds their invariants)")
    if config.projection and system.kind == "ode":
        names = constrained_invariants(system, config)
        unknown = [n for n in names if n not in system.invariant_names()]
        if unknown:
            raise ParameterError(f"projection: invariants must be among {', '.join(system.invariant_names())}; "
                                 f"got {', '.join(unknown)}")
        lost = [n for n in names if not system.is_conserved(n)]
        if lost:
            raise ParameterError(
                f"projection onto {', '.join(lost)} refused: the {system.key} with these parameters does not "
                f"conserve it (projecting onto Q(0) would force a wrong law); choose invariants it conserves or "
                f"turn projection off")


class _Coords:
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


# ---------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------
class Trainer:
    """Trains one method on one system.

    Args:
        system: a built system (``conserv_core.get_system``).
        method: a key of ``conserv_core.methods.ALL_METHODS`` valid for the system.
        config: a :class:`TrainConfig` (default: the system's recommended one).
        listener: called with every record, on the training thread.
        stop_event: a shared event; setting it ends the run within one step.
        shared: a dict that trainers of the same system and config share (what
            :class:`Comparison` passes): the data, the test starts and the true rollouts
            are built by the first trainer and reused by the others.
        max_work: the work limit in state-steps (default: :func:`budget.max_work`).

    Raises:
        ParameterError: a bad method or invariant, or a run over the work limit (checked
            before any data is generated).
        integrators.Stopped: ``stop_event`` was set while the data or the truth were built.
    """

    def __init__(self, system: System, method: str, config: TrainConfig | None = None,
                 listener: Listener | None = None, stop_event: threading.Event | None = None,
                 shared: dict | None = None, max_work: float | None = None):
        self.system = system
        self._shared = shared
        self.method = methods.check_applies(method, system)
        self.config = config if config is not None else make_config(system.key)
        self.listener = listener
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        cfg = self.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.dtype = _DTYPES[cfg.dtype]
        self.step_count = 0
        self.elapsed = 0.0
        self.status = "ready"
        self.message = ""
        self.last_eval: Evaluation | None = None
        self.history: list[Progress] = []
        self.evaluations: list[Evaluation] = []
        self.inv_names = constrained_invariants(system, cfg)
        if system.kind == "ode":
            bad = [n for n in self.inv_names if n not in system.invariant_names()]
            if bad:
                raise ParameterError(
                    f"invariants must be among {', '.join(system.invariant_names())}; got {', '.join(bad)}")
        check_rollout(system, [self.method.key], cfg)
        budget.check(system, [self.method.key], cfg, max_work)
        # the data and the truth rollout are the long loops of set-up: let a stop end them
        with integrators.stopping(self.stop_event.is_set):
            self._build()

    # -- set-up -------------------------------------------------------------------------
    def _once(self, key: str, make: Callable[[], object]):
        """``make()``, or the value a trainer sharing this one's ``shared`` dict already
        made: the data and the truth do not depend on the method, and building them once
        is most of a comparison's set-up time. Shared tensors are only read."""
        if self._shared is None:
            return make()
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def _build(self) -> None:
        cfg, sysm = self.config, self.system
        # every draw from a generator of the run's own (never torch's global one, which the
        # threads of a server or a notebook share): the weights from seed, batches from seed + 1
        self._gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.model = self.method.build_model(sysm, cfg)
        models.init_weights(self.model, torch.Generator().manual_seed(cfg.seed))
        self.model.to(device=self.device, dtype=self.dtype)
        if sysm.kind == "ode":
            self._setup_ode()
        else:
            self._setup_field()
        self._constraint = self.method.build_constraint(cfg)
        # the data loss is the MSE of targets scaled to unit rms per component, so it is
        # dimensionless like the constraint residuals and λ means the same on every system
        self.y_scale = self.y_train.pow(2).mean(0).sqrt().clamp_min(1e-12)
        self.optimizer = OPTIMIZERS[cfg.optimizer](self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._backup = [p.detach().clone() for p in self.model.parameters()]
        self._t_start: float | None = None

    def _setup_ode(self) -> None:
        cfg, sysm, dev, dt = self.config, self.system, self.device, self.dtype
        self.coords = _Coords(sysm, getattr(self.model, "coords", "canonical"))
        data = self._once("data", lambda: sysm.sample_data(seed=cfg.seed, dtype=torch.float64))
        x, dxdt = data.x, data.dxdt
        s, dsdt = self.coords.from_canonical(x), self.coords.targets(x, dxdt)
        g = torch.Generator().manual_seed(cfg.seed + 2)
        perm = torch.randperm(s.shape[0], generator=g)
        n_train = max(1, int(0.8 * s.shape[0]))
        tr, te = perm[:n_train], perm[n_train:] if s.shape[0] > n_train else perm[:1]
        to = dict(device=dev, dtype=dt)
        self.x_train, self.y_train = s[tr].to(**to), dsdt[tr].to(**to)
        self.x_test, self.y_test = s[te].to(**to), dsdt[te].to(**to)
        if hasattr(self.model, "set_scales"):
            self.model.set_scales(self.x_train, self.y_train)
        # collocation pool for the soft constraints: every training input
        self.colloc = self.x_train
        self.residual = constraints.InvariantRates(sysm, self.inv_names, self.coords.to_canonical,
                                                   self.x_train, self.y_train)
        self._colloc_grads = self.residual._grads(self.colloc)
        # evaluation: fixed test ICs in and out of distribution, rolled out together
        self.eval_dt = cfg.dt if cfg.dt is not None else sysm.dt
        horizon = cfg.horizon if cfg.horizon is not None else sysm.horizon
        self.eval_steps = max(1, int(round(horizon / self.eval_dt)))
        self.eval_every_save = max(1, self.eval_steps // 200)
        self.z0_eval, t, z_true = self._once("truth", lambda: self._true_rollouts(to))
        self.t_eval, self.z_true = t, z_true  # (T,), (T, 2n, D)
        # states far along the OOD true trajectories, where the soft constraint was never trained
        n = cfg.n_test
        self.ood_points = self.coords.from_canonical(z_true[:, n:].reshape(-1, sysm.state_dim))
        self.ood_points = self.ood_points[torch.isfinite(self.ood_points).all(-1)][:: max(1, z_true.shape[0] // 16)]
        self._ood_grads = self.residual._grads(self.ood_points)
        self.in_points = self.x_test
        self._in_grads = self.residual._grads(self.in_points)

    def _true_rollouts(self, to: dict) -> tuple[Tensor, Tensor, Tensor]:
        """The fixed test starts, in and out of distribution ``(2 n_test, D)``, and the
        truth rolled out from them: ``(z0, t (T,), z (T, 2 n_test, D))``."""
        cfg, sysm = self.config, self.system
        z_in = sysm.sample_initial(cfg.n_test, seed=10_000 + cfg.seed, dtype=torch.float64)
        z_ood = sysm.sample_initial(cfg.n_test, seed=20_000 + cfg.seed, scale=cfg.ood_factor, dtype=torch.float64)
        z0 = torch.cat([z_in, z_ood]).to(**to)
        try:
            field = sysm.gradient_form if cfg.integrator in integrators.NEEDS_ENERGY else sysm.vector_field
            with torch.no_grad():
                t, z = integrators.rollout(field, z0, self.eval_dt,
                                           self.eval_steps, method=cfg.integrator, every=self.eval_every_save)
        except RuntimeError as err:
            raise ParameterError(f"dt={self.eval_dt:g} is too large for a {cfg.integrator} rollout of the true "
                                 f"{sysm.key}: {err}") from None
        return z0, t, z

    def _setup_field(self) -> None:
        cfg, sysm, dev, dt = self.config, self.system, self.device, self.dtype
        self.coords = None
        data = self._once("data", lambda: sysm.sample_data(seed=cfg.seed, dtype=torch.float64))
        g = torch.Generator().manual_seed(cfg.seed + 2)
        n = data.xyt.shape[0]
        perm = torch.randperm(n, generator=g)
        n_train = max(1, int(0.8 * n))
        tr, te = perm[:n_train], perm[n_train:]
        to = dict(device=dev, dtype=dt)
        self.x_train, self.y_train = data.xyt[tr].to(**to), data.u[tr].to(**to)
        self.x_test, self.y_test = data.xyt[te].to(**to), data.u[te].to(**to)
        t_end = float(data.xyt[:, 2].max())
        self.t_end = t_end
        # collocation pool: uniform in the periodic square, times in the training window
        m = cfg.n_colloc
        pool = FIELD_POOL
        xy = 2 * math.pi * torch.rand(pool, 2, generator=g, dtype=torch.float64)
        tt = t_end * torch.rand(pool, 1, generator=g, dtype=torch.float64)
        self.colloc = torch.cat([xy, tt], -1).to(**to)
        self.residual = constraints.Divergence(models.divergence, self.y_train)
        self._colloc_grads = None
        # OOD: the same square at later times than any training sample
        xy = 2 * math.pi * torch.rand(m, 2, generator=g, dtype=torch.float64)
        tt = t_end * (1 + (cfg.ood_factor - 1) * torch.rand(m, 1, generator=g, dtype=torch.float64))
        self.ood_points = torch.cat([xy, tt], -1).to(**to)
        self.in_points = self.x_test[: m]
        self._ood_grads = self._in_grads = None
        self.eval_dt = cfg.dt if cfg.dt is not None else sysm.dt
        horizon = cfg.horizon if cfg.horizon is not None else sysm.horizon
        self.eval_steps = max(1, int(round(horizon / self.eval_dt)))
        self.eval_every_save = max(1, self.eval_steps // 200)
        self.patch0 = sysm.dye_patch().to(**to)

        def carry_truth():
            with torch.no_grad():
                return sysm.carry(sysm.velocity, sysm.divergence, self.patch0, 0.0, self.eval_dt * self.eval_steps,
                                  self.eval_dt, method=self._field_integrator())

        self.t_eval, xy_true, logj_true = self._once("truth", carry_truth)
        self.dye_true = xy_true[:: self.eval_every_save]
        self.mass_true = sysm.mass(logj_true)

    def _field_integrator(self) -> str:
        # parcels are not a Hamiltonian system: leapfrog's q/p split would be meaningless
        return "rk4" if self.config.integrator == "leapfrog" else self.config.integrator

    # -- control ------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to end; safe to call from any thread."""
        self.stop_event.set()

    @property
    def eval_every(self) -> int:
        return self.config.eval_every or max(1, self.config.steps // 10)

    def _emit(self, rec: Record) -> None:
        if self.listener is not None:
            self.listener(rec)

    # -- one step -----------------------------------------------------------------------
    def _batch(self) -> tuple[Tensor, Tensor]:
        n = self.x_train.shape[0]
        if self.config.batch_size >= n:
            return self.x_train, self.y_train
        idx = torch.randint(0, n, (self.config.batch_size,), generator=self._gen).to(self.device)
        return self.x_train[idx], self.y_train[idx]

    def _predict(self, x: Tensor) -> Tensor:
        if self.system.kind == "field":
            return self.model(x[:, :2], x[:, 2])
        return self.model(x)

    def step(self) -> Progress:
        """One optimisation step. Raises :class:`FloatingPointError` on a non-finite loss
        (after restoring the weights from before the step)."""
        if self._t_start is None:
            self._t_start = time.perf_counter()
        t0 = time.perf_counter()
        self.model.train()
        xb, yb = self._batch()
        data_loss = (((self._predict(xb) - yb) / self.y_scale) ** 2).mean()
        loss = data_loss
        c_loss = torch.zeros((), device=self.device, dtype=self.dtype)
        if self._constraint is not None:
            pool = self.colloc.shape[0]
            idx = None
            pts, grads = self.colloc, self._colloc_grads
            if self.config.n_colloc < pool:
                idx = torch.randint(0, pool, (self.config.n_colloc,), generator=self._gen).to(self.device)
                pts = pts[idx]
                grads = {k: v[idx] for k, v in grads.items()} if grads is not None else None
            res = self.residual(self.model, pts, grads)
            c_loss = self._constraint.loss(res, idx)
            loss = loss + c_loss
            violation = constraints.rms(res)
        else:
            violation = float("nan")
        if not torch.isfinite(loss):
            self._restore()
            raise FloatingPointError(
                f"training diverged: loss became {float(loss.detach())} (NaN/inf) at step {self.step_count + 1} (lr={self.config.lr:g}); "
                f"kept the weights from step {self.step_count} and every curve so far — lower the learning rate")
        for b, p in zip(self._backup, self.model.parameters()):
            b.copy_(p.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        every = getattr(self._constraint, "update_every", 0)
        if self._constraint is not None and every and self.step_count % every == 0:
            with torch.no_grad():
                res_now = self.residual(self.model, self.colloc, self._colloc_grads) \
                    if self.system.kind == "ode" else None
            if res_now is None:  # divergence needs autograd through the model
                res_now = {k: v.detach() for k, v in self.residual(self.model, self.colloc).items()}
            self._constraint.update(self.step_count, res_now)
        if not math.isfinite(violation):
            # unconstrained: measured on a fixed probe set every 10 steps (it costs a
            # forward pass, which for an LNN is most of a step)
            if self.step_count % 10 == 1 or not self.history:
                m = min(256, self.colloc.shape[0])
                grads = {k: v[:m] for k, v in self._colloc_grads.items()} if self._colloc_grads is not None else None
                self._probe_violation = self._violation(self.colloc[:m], grads)
            violation = self._probe_violation
        dt_step = time.perf_counter() - t0
        self.elapsed += dt_step
        rec = Progress(
            method=self.method.key, step=self.step_count, total_steps=self.config.steps,
            loss=float(loss.detach()), data_loss=float(data_loss.detach()), constraint_loss=float(c_loss.detach()),
            violation=violation, multipliers=self._constraint.multipliers() if self._constraint else {},
            steps_per_s=self.step_count / max(self.elapsed, 1e-9), elapsed=self.elapsed,
        )
        self.history.append(rec)
        return rec

    def _restore(self) -> None:
        with torch.no_grad():
            for b, p in zip(self._backup, self.model.parameters()):
                p.copy_(b)

    def _violation(self, points: Tensor, grads) -> float:
        if self.system.kind == "field":
            with torch.enable_grad():
                res = self.residual(self.model, points)
        else:
            with torch.no_grad():
                res = self.residual(self.model, points, grads)
        return constraints.rms(res)

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self) -> Evaluation:
        """Roll out the current model from the fixed test initial conditions and measure."""
        t0 = time.perf_counter()
        self.model.eval()
        try:
            # a long rollout ends within one integrator step of a stop (raises Stopped)
            with integrators.stopping(self.stop_event.is_set):
                ev = self._evaluate_ode() if self.system.kind == "ode" else self._evaluate_field()
        finally:
            self.model.train()
            self.elapsed += time.perf_counter() - t0
        ev.elapsed = self.elapsed
        self.last_eval = ev
        self.evaluations.append(ev)
        return ev

    def _model_rollout(self, s0: Tensor, method: str, project: bool) -> tuple[Tensor, Tensor]:
        """The model rolled out from ``s0`` (its own coordinates) with ``method``, projected
        after every step onto the chosen invariants if ``project``: ``t (T,)``, ``s (T, B, D)``."""
        field = self.model.gradient_form if method in integrators.NEEDS_ENERGY else (lambda z, t: self.model(z, t))
        proj, scales = None, None
        if project:
            sysm, to_z = self.system, self.coords.to_canonical
            fns = sysm.invariants()
            # canonical models get the invariants' closed-form gradients; velocity ones autograd
            evaluate = None if self.coords.velocity else sysm.invariants_and_gradients(self.inv_names)
            proj = integrators.Projection({k: (lambda s, f=fns[k]: f(to_z(s))) for k in self.inv_names},
                                          tol=self.config.projection_tol, evaluate=evaluate)
            scales = {k: sysm.invariant_scale(k, self.z0_eval) for k in self.inv_names}
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

    def _power(self) -> dict:
        """How fast each field drains the *true* energy, ``−dE/dt = −∇E·f``, averaged over
        the states of the in-distribution true orbits: the model's (``"power"``) and the
        truth's (``"power_true"``, ``∇EᵀR∇E``). What a damped system's view compares."""
        sysm, n = self.system, self.config.n_test
        zt = self.z_true[:, :n].reshape(-1, sysm.state_dim)
        zt = zt[torch.isfinite(zt).all(-1)]
        form = sysm.gradient_form
        grad = form.gradient(zt)
        with torch.no_grad():
            f_model = self.model(zt)  # canonical models only (the caller checks)
        power = float(-(grad * f_model).sum(-1).mean())
        power_true = float(-(grad * form(zt)).sum(-1).mean())
        return {"power": power, "power_true": power_true}

    def _learned_drift(self, s: Tensor, t: Tensor, suffix: str = "") -> dict:
        n = self.config.n_test
        e = self.model.learned_energy(s.reshape(-1, s.shape[-1])).reshape(s.shape[0], s.shape[1]).detach()
        scale = e[0].abs().clamp_min(1e-12)
        return {f"energy{suffix}": metrics.drift_curve(e[:, :n], scale[:n], t),
                f"energy{suffix}_ood": metrics.drift_curve(e[:, n:], scale[n:], t)}

    def _evaluate_ode(self) -> Evaluation:
        sysm, cfg, n = self.system, self.config, self.config.n_test
        has_energy = getattr(self.model, "has_learned_energy", False)
        with torch.no_grad():
            s0 = self.coords.from_canonical(self.z0_eval)
            t, s = self._model_rollout(s0, cfg.integrator, cfg.projection)
            z = self.coords.to_canonical(s)
            test_mse = metrics.mse(self.model(self.x_test), self.y_test)
        drift, drift_ood = self._invariant_drift(z, t)
        learned = self._learned_drift(s, t) if has_energy else {}
        traj = metrics.trajectory_error(z[:, :n], self.z_true[:, :n], t)
        unprojected = {}
        if cfg.projection:
            # the same rollout without the projection: what it fixed, and what it did not
            with torch.no_grad():
                _, s_plain = self._model_rollout(s0, cfg.integrator, False)
                z_plain = self.coords.to_canonical(s_plain)
            plain, plain_ood = self._invariant_drift(z_plain, t)
            unprojected = {**plain, **{f"{k}_ood": v for k, v in plain_ood.items()},
                           "trajectory": metrics.trajectory_error(z_plain[:, :n], self.z_true[:, :n], t)}
        if has_energy and cfg.integrator in integrators.NEEDS_ENERGY:
            # the learned energy under RK4 too: exact in continuous time is not exact in
            # what a rollout shows
            with torch.no_grad():
                _, s_rk4 = self._model_rollout(s0, "rk4", cfg.projection)
            learned.update(self._learned_drift(s_rk4, t, "_rk4"))
        view = {
            "t": t.cpu().numpy(),
            "true": self.z_true[:, :4].detach().cpu().double().numpy(),
            "model": z[:, :4].detach().cpu().double().numpy(),
        }
        if "energy" in sysm.invariant_names() and not sysm.is_conserved("energy") and not self.coords.velocity:
            view.update(self._power())
        if getattr(self.model, "has_learned_energy", False) and sysm.dof == 1:
            view["energy_grid"] = self._energy_grid()
        if hasattr(self.model, "pair_potential") and hasattr(sysm, "pair_potential"):
            view.update(self._pair_potential())
        return Evaluation(
            method=self.method.key, step=self.step_count, elapsed=0.0, drift=drift, drift_ood=drift_ood,
            learned_drift=learned, trajectory_error=traj, test_mse=test_mse,
            violation=self._violation(self.in_points, self._in_grads),
            violation_ood=self._violation(self.ood_points, self._ood_grads), view=view, unprojected=unprojected,
        )

    def _pair_potential(self, n: int = 60) -> dict:
        """The learned pair term against the true one (symmetric n-body model), from half
        the closest pass in the training data to its widest separation: ``r``, ``learned``
        and ``true`` (None for unequal masses), as float64 arrays."""
        q, _ = models.symmetric._bodies(self.x_train.double())
        r_data = models.symmetric._pair_distance2(q).sqrt()
        r = torch.linspace(0.5 * float(r_data.min()), float(r_data.max()), n, dtype=torch.float64)
        learned = self.model.pair_potential(r.to(dtype=self.dtype, device=self.device))
        true = self.system.pair_potential(r)
        return {"pair_potential": {"r": r.numpy(), "learned": learned.detach().cpu().double().numpy(),
                                   "true": None if true is None else true.numpy(),
                                   "data_range": (float(r_data.min()), float(r_data.max()))}}

    def _energy_grid(self, n: int = 41) -> dict:
        zt = self.z_true[:, : self.config.n_test].reshape(-1, self.system.state_dim)
        zt = zt[torch.isfinite(zt).all(-1)]
        qmax = float(zt[:, 0].abs().max()) * 1.2 + 1e-6
        pmax = float(zt[:, 1].abs().max()) * 1.2 + 1e-6
        qs = torch.linspace(-qmax, qmax, n, dtype=self.dtype, device=self.device)
        ps = torch.linspace(-pmax, pmax, n, dtype=self.dtype, device=self.device)
        Q, P = torch.meshgrid(qs, ps, indexing="xy")
        z = torch.stack([Q.reshape(-1), P.reshape(-1)], -1)
        with torch.no_grad():
            e = self.model.learned_energy(self.coords.from_canonical(z)).reshape(n, n)
        return {"q": qs.cpu().double().numpy(), "p": ps.cpu().double().numpy(), "H": e.cpu().double().numpy()}

    def _evaluate_field(self) -> Evaluation:
        sysm, cfg = self.system, self.config
        model = self.model

        def vel(xy, t):
            with torch.no_grad():
                return model(xy, t)

        def div(xy, t):
            return models.divergence(model, xy, t).detach()

        horizon = self.eval_dt * self.eval_steps
        ones = torch.ones(1, dtype=self.dtype, device=self.device)
        unprojected, extra = {}, {}
        if cfg.projection:
            # hard at inference: the parcels ride the Leray projection of the learned field
            lf = leray.LerayField(model, sysm, dtype=self.dtype, device=self.device)
            t, xy, logj = sysm.carry(lf.velocity, lf.divergence, self.patch0, 0.0, horizon, self.eval_dt,
                                     method=self._field_integrator())
            _, _, logj_plain = sysm.carry(vel, div, self.patch0, 0.0, horizon, self.eval_dt,
                                          method=self._field_integrator())
            unprojected["mass"] = metrics.drift_curve(sysm.mass(logj_plain).unsqueeze(1), ones, t)
            extra = self._velocity_errors(vel, lf)
        else:
            t, xy, logj = sysm.carry(vel, div, self.patch0, 0.0, horizon, self.eval_dt,
                                     method=self._field_integrator())
        mass = sysm.mass(logj)  # (T,)
        drift = {"mass": metrics.drift_curve(mass.unsqueeze(1), ones, t)}
        with torch.no_grad():
            test_mse = metrics.mse(self._predict(self.x_test), self.y_test)
        # divergence along time, a 'drift' view of the local constraint
        n_t = 24
        times = torch.linspace(0, float(t[-1]), n_t, dtype=self.dtype, device=self.device)
        g = torch.Generator().manual_seed(123)
        xy_probe = (2 * math.pi * torch.rand(256, 2, generator=g, dtype=torch.float64)).to(self.device, self.dtype)
        u_scale = float(self.residual.scales["divergence"])
        div_t = [float(div(xy_probe, float(tt)).pow(2).mean().sqrt()) / u_scale for tt in times]
        drift["divergence"] = metrics.Curve(times.double().cpu().tolist(), div_t)
        view = {
            "t": t[:: self.eval_every_save].cpu().numpy(),
            "dye_model": xy[:: self.eval_every_save].detach().cpu().double().numpy(),
            "dye_true": self.dye_true.detach().cpu().double().numpy(),
            "mass": mass.detach().cpu().double().numpy(),
            "mass_true": self.mass_true.detach().cpu().double().numpy(),
        }
        view.update(self._field_view(div))
        view.update(extra)
        return Evaluation(
            method=self.method.key, step=self.step_count, elapsed=0.0, drift=drift, drift_ood={},
            learned_drift={}, trajectory_error=None, test_mse=test_mse,
            violation=self._violation(self.in_points, None),
            violation_ood=self._violation(self.ood_points, None), view=view, unprojected=unprojected,
        )

    def _velocity_errors(self, vel, lf, n_times: int = 3) -> dict:
        """The rms velocity error against the truth on the solver's grid, of the network's
        own field and of its Leray projection, relative to the true field's rms, at
        ``n_times`` times across the training window. On the grid the projection cannot
        raise it (the truth is divergence-free and P is an orthogonal projection); what it
        changes is the field the parcels ride, and its smoothness between grid points."""
        sysm = self.system
        pts = sysm.grid_points(dtype=self.dtype, device=self.device)
        plain, proj = [], []
        for tt in torch.linspace(0.0, self.t_end, n_times).tolist():
            true = sysm.velocity(pts, tt)
            ref = float(true.pow(2).sum(-1).mean().sqrt().clamp_min(1e-300))
            plain.append(float((vel(pts, tt) - true).pow(2).sum(-1).mean().sqrt()) / ref)
            proj.append(float((lf.velocity(pts, tt) - true).pow(2).sum(-1).mean().sqrt()) / ref)
        return {"velocity_error": sum(plain) / n_times, "velocity_error_projected": sum(proj) / n_times}

    def _field_view(self, div, n: int = 24) -> dict:
        xs = torch.linspace(0, 2 * math.pi, n + 1, dtype=self.dtype, device=self.device)[:-1]
        X, Y = torch.meshgrid(xs, xs, indexing="xy")
        xy = torch.stack([X.reshape(-1), Y.reshape(-1)], -1)
        with torch.no_grad():
            u = self.model(xy, 0.0).reshape(n, n, 2)
        d = div(xy, 0.0).reshape(n, n)
        return {"grid": xs.cpu().double().numpy(), "u": u.cpu().double().numpy(), "div": d.cpu().double().numpy()}

    # -- running ------------------------------------------------------------------------
    def run(self) -> "Trainer":
        """Train to ``config.steps`` (or until stopped / diverged), emitting records."""
        for rec in self.iter_records():
            self._emit(rec)
        return self

    def iter_records(self):
        """Generator form of :meth:`run`: yields every record in order."""
        if self.step_count == 0:
            try:
                first = self.evaluate()
            except integrators.Stopped:
                yield self._finish("stopped", "stopped during the first evaluation")
                return
            except (RuntimeError, ValueError) as err:
                yield self._finish("error", f"{type(err).__name__}: {err}")
                return
            yield first
        yield from self._advance(self.config.steps - self.step_count)

    def _advance(self, n: int):
        """Up to ``n`` steps with evaluations on schedule; sets the final status."""
        self.status = "running"
        try:
            for _ in range(n):
                if self.stop_event.is_set():
                    yield self._finish("stopped", f"stopped at step {self.step_count}")
                    return
                yield self.step()
                if self.step_count % self.eval_every == 0 or self.step_count == self.config.steps:
                    yield self.evaluate()
        except FloatingPointError as err:
            yield self._finish("diverged", str(err))
            return
        except integrators.Stopped:
            # stopped inside an evaluation: the step's Progress was sent, its curves not
            yield self._finish("stopped", f"stopped at step {self.step_count} (during an evaluation)")
            return
        except (RuntimeError, ValueError) as err:
            # e.g. implicit midpoint not converging on a stiff learned field: report it,
            # keep every record already sent
            yield self._finish("error", f"{type(err).__name__}: {err}")
            return
        if self.step_count >= self.config.steps:
            yield self._finish("done", f"finished {self.step_count} steps in {self.elapsed:.1f} s")

    def _finish(self, status: str, message: str) -> Finished:
        self.status, self.message = status, message
        return Finished(self.method.key, status, message, self.step_count, self.elapsed)

    # -- results ------------------------------------------------------------------------
    def summary(self) -> metrics.Summary:
        ev = self.last_eval
        return metrics.Summary(
            method=self.method.key, train_seconds=self.elapsed, steps=self.step_count,
            test_mse=ev.test_mse if ev else float("nan"), drift=dict(ev.drift) if ev else {},
            status=self.status,
        )

    def save(self, path) -> None:
        """Checkpoint as plain tensors and primitives (loadable with ``weights_only=True``)."""
        torch.save({
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "system": self.system.key,
            "system_params": _plain_params(self.system),
            "method": self.method.key,
            "config": _plain_params(self.config),
            "step": self.step_count,
        }, path)


def method_summary(method: str, status: str, message: str, train_seconds: float, steps: int,
                   ev: Evaluation | None) -> dict:
    """One method's result as plain JSON: its headline numbers (:class:`metrics.Summary`)
    and, once evaluated, every curve of its latest evaluation. What ``conserv compare
    --json`` and the dashboard's download both write."""
    d = metrics.Summary(method=method, train_seconds=train_seconds, steps=steps,
                        test_mse=ev.test_mse if ev else float("nan"), drift=dict(ev.drift) if ev else {},
                        status=status).to_dict()
    d["message"] = message
    if ev is not None:
        d["drift_ood"] = {k: v.to_dict() for k, v in ev.drift_ood.items()}
        d["learned_drift"] = {k: v.to_dict() for k, v in ev.learned_drift.items()}
        d["violation"] = ev.violation
        d["violation_ood"] = ev.violation_ood
        d["trajectory_error"] = ev.trajectory_error.to_dict() if ev.trajectory_error else None
    return d


def comparison_summary(system: System, config: TrainConfig, truth: Evaluation | None, methods: list[dict]) -> dict:
    """A comparison as plain JSON: the settings, the truth's drift and each method's
    :func:`method_summary`."""
    return {
        "system": system.key,
        "system_params": _plain_params(system),
        "config": _plain_params(config),
        "truth": {k: v.to_dict() for k, v in truth.drift.items()} if truth else {},
        "methods": methods,
    }


def _plain_params(obj: param.Parameterized) -> dict:
    out = {}
    for k, v in obj.param.values().items():
        if k == "name":
            continue
        if isinstance(v, (tuple, list)):
            v = list(v)
        out[k] = v
    return out


def load_checkpoint(path) -> Trainer:
    """Rebuild a trainer (system, method, config, weights) from :meth:`Trainer.save`."""
    from conserv_core.systems import get_system

    ck = torch.load(path, map_location="cpu", weights_only=True)
    sysm = get_system(ck["system"], **{k: tuple(v) if isinstance(v, list) and k.endswith("band") else v
                                       for k, v in ck["system_params"].items()})
    tr = Trainer(sysm, ck["method"], build(TrainConfig, **ck["config"]))
    tr.model.load_state_dict(ck["state_dict"])
    tr.step_count = ck["step"]
    return tr


def truth_evaluation(trainer: Trainer) -> Evaluation:
    """Drift of the true system under the run's rollout integrator: the floor every
    model's curve should be read against (it separates integrator error from model error)."""
    sysm, n = trainer.system, trainer.config.n_test
    if sysm.kind == "field":
        ones = torch.ones(1, dtype=trainer.mass_true.dtype, device=trainer.mass_true.device)
        mass = trainer.mass_true
        t = torch.linspace(0, trainer.eval_dt * trainer.eval_steps, mass.shape[0], dtype=mass.dtype)
        drift = {"mass": metrics.drift_curve(mass.unsqueeze(1), ones, t)}
        return Evaluation("truth", 0, 0.0, drift, {}, {}, None, 0.0, 0.0, 0.0, {})
    z, t = trainer.z_true, trainer.t_eval
    drift, drift_ood = {}, {}
    for name, fn in sysm.invariants().items():
        if not sysm.is_conserved(name):
            continue  # its curves measure each model against the truth's own Q(t)
        q = _along(fn, z, sysm.state_dim)
        scale = sysm.invariant_scale(name, trainer.z0_eval)
        drift[name] = metrics.drift_curve(q[:, :n], scale[:n], t)
        drift_ood[name] = metrics.drift_curve(q[:, n:], scale[n:], t)
    return Evaluation("truth", 0, 0.0, drift, drift_ood, {}, None, 0.0, 0.0, 0.0, {})


def check_on_bodies(system: System, method_keys, n_bodies: int) -> list[str]:
    """The methods of ``method_keys`` whose trained model can be rolled out on
    ``n_bodies`` bodies (a model with ``any_bodies``, the symmetric HNN), or a
    :class:`ParameterError` naming what is wrong, before any training."""
    if "n_bodies" not in type(system).param:
        raise ParameterError(f"rolling a model out on another number of bodies needs the nbody system "
                             f"(a system with n_bodies); got {system.key}")
    lo, hi = type(system).param["n_bodies"].bounds
    if isinstance(n_bodies, bool) or not isinstance(n_bodies, int) or not lo <= n_bodies <= hi:
        raise ParameterError(f"rollout bodies must be an integer in [{lo}, {hi}]; got {n_bodies!r}")
    if system.masses is not None:
        raise ParameterError("rollout bodies needs identical bodies (masses=None): a model of identical bodies "
                             "cannot say what an extra body's mass is")
    able = [k for k in method_keys if methods.get_method(k).any_bodies(system)]
    if not able:
        raise ParameterError(f"rollout bodies applies to methods whose model runs on any number of bodies "
                             f"(shnn); got {', '.join(method_keys)}")
    return able


def on_bodies(trainer: Trainer, n_bodies: int) -> tuple[Evaluation, Evaluation]:
    """The trained model of ``trainer`` rolled out on ``n_bodies`` bodies: its evaluation
    and the truth's, on that many bodies' test starts (same seed, integrator, step and
    horizon; the system's other parameters unchanged). What "one model, any number of
    bodies" means in numbers. The weights are used as they are: nothing is retrained."""
    check_on_bodies(trainer.system, [trainer.method.key], n_bodies)
    sysm = trainer.system
    values = {k: v for k, v in sysm.param.values().items() if k not in ("name", "n_bodies", "preset")}
    other = type(sysm)(**values, n_bodies=n_bodies)  # the 'random' preset: the others fix N
    cfg = trainer.config.param.values()
    cfg = TrainConfig(**{k: v for k, v in cfg.items() if k != "name"})
    there = Trainer(other, trainer.method.key, cfg, stop_event=trainer.stop_event)
    there.model = trainer.model  # the trained weights, on N' bodies
    there.step_count = trainer.step_count
    return there.evaluate(), truth_evaluation(there)


# ---------------------------------------------------------------------------------------
# several methods side by side
# ---------------------------------------------------------------------------------------
class Comparison:
    """Train several methods on the same system and data, round-robin, one step each in
    turn, so every method's curves grow together and k methods cost k single runs.

    Records are passed to ``listener`` exactly as a single :class:`Trainer` emits them
    (each carries its ``method``), plus a ``truth`` :class:`Evaluation` first.

    Construction checks the work of all the methods together against ``max_work``
    (:func:`budget.check`) before anything is built, then builds the data and the truth
    once. A stop during that set-up raises :class:`integrators.Stopped` out of the
    constructor (within one integrator step, no record sent): there are no trainers to
    report on yet, so the caller reports the stop (:func:`conserv_core.runs.execute` does).
    """

    def __init__(self, system: System, method_keys: list[str], config: TrainConfig | None = None,
                 listener: Listener | None = None, stop_event: threading.Event | None = None,
                 max_work: float | None = None):
        if not method_keys:
            raise ParameterError(f"methods must name at least one of {', '.join(methods.valid_methods(system))}")
        self.system = system
        self.config = config if config is not None else make_config(system.key)
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.listener = listener
        seen = []
        for k in method_keys:
            methods.check_applies(k, system)
            if k not in seen:
                seen.append(k)
        check_rollout(system, seen, self.config)
        budget.check(system, seen, self.config, max_work)
        shared: dict = {}  # the data and the truth, built by the first trainer
        self.trainers = {k: Trainer(system, k, self.config, None, self.stop_event, shared, max_work)
                         for k in seen}

    def stop(self) -> None:
        self.stop_event.set()

    def _emit(self, rec: Record) -> None:
        if self.listener is not None:
            self.listener(rec)

    def run(self) -> "Comparison":
        first = next(iter(self.trainers.values()))
        self._emit(truth_evaluation(first))
        gens = {k: tr.iter_records() for k, tr in self.trainers.items()}
        active = dict(gens)
        while active:
            for k in list(active):
                # advance one method by one step (plus its evaluation / finish record)
                tr = self.trainers[k]
                target = tr.step_count + 1
                try:
                    while True:
                        rec = next(active[k])
                        self._emit(rec)
                        if isinstance(rec, Finished):
                            del active[k]
                            break
                        if isinstance(rec, Progress) and rec.step >= target:
                            break
                except StopIteration:
                    active.pop(k, None)
        return self


__all__ = [
    "Comparison", "Evaluation", "Finished", "Progress", "recommended", "Stopped", "TrainConfig", "Trainer",
    "check_on_bodies", "comparison_summary", "constrained_invariants", "default_invariants", "method_summary",
    "on_bodies",
    "load_checkpoint", "make_config", "truth_evaluation", "warm_up",
]

