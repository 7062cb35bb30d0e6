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
of k methods costs k single runs and all curves grow together. A :class:`Gate` pauses
it, steps it by one evaluation interval and resumes it, as in TF Playground: it waits
only at evaluation boundaries, so a paused run's curves are those of its models, and it
changes no arithmetic, so a paused and stepped run ends bit-identical to one that was not.

What does not depend on the method (the data, the test starts, the truth) and the
evaluation of a model against it live in :mod:`conserv_core.problems`, built once per
comparison; the records in :mod:`conserv_core.records`. The trainer is the step, the
loop, stopping and divergence.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Callable

import param
import torch

from conserv_core import budget, constraints, integrators, methods, metrics, models, problems
from conserv_core.problems import Fit, Problem, ViewSpec
from conserv_core.devices import DEVICES, resolve_device
from conserv_core.records import Evaluation, Finished, Listener, Paused, Progress, Record
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
    lnn_form = param.Selector(default="generic", objects=["generic", "mechanical"], label="Lagrangian form (LNN)", doc=(
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
    # the built-in soft constraints' settings, declared beside their constraint; placed here
    # so that a link lists them where it always has (a registered constraint's new settings
    # are added at the end by constraints.register)
    lam = constraints.Penalty.settings["lam"]
    mu = constraints.AugmentedLagrangian.settings["mu"]
    mu_growth = constraints.AugmentedLagrangian.settings["mu_growth"]
    mu_max = constraints.AugmentedLagrangian.settings["mu_max"]
    update_every = constraints.AugmentedLagrangian.settings["update_every"]
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
# helpers
# ---------------------------------------------------------------------------------------
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


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


@dataclasses.dataclass(frozen=True)
class Plan:
    """A run's set-up, checked once by :func:`plan_run`: the system, the methods (each
    once, in order), the config, what the evaluations' views hold and the work the budget
    priced. A :class:`Comparison` or :class:`Trainer` built from a plan checks nothing
    again; one built from loose arguments makes its plan first, through the same checks."""
    system: System
    methods: tuple[methods.Method, ...]
    config: TrainConfig
    view: ViewSpec
    #: state-steps, :func:`budget.check`'s estimate for all the methods together
    work: float

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(m.key for m in self.methods)

    def method(self, key: str) -> methods.Method:
        for m in self.methods:
            if m.key == key:
                return m
        raise ParameterError(f"method must be one of this plan's {', '.join(self.keys)}; got {key!r}")


def plan_run(system: System, method_keys, config: TrainConfig | None = None, max_work: float | None = None,
             view: ViewSpec | None = None) -> Plan:
    """Every check a run needs, once, before any work starts: at least one method, each
    applying to the system (named first, before the budget's arithmetic needs it), the
    constrained invariants, the rollout options, and the work of all the methods
    together against ``max_work``. ``ParameterError`` names what is wrong and its range."""
    config = config if config is not None else make_config(system.key)
    if not method_keys:
        raise ParameterError(f"methods must name at least one of {', '.join(methods.valid_methods(system))}")
    keys = list(dict.fromkeys(method_keys))
    chosen = tuple(methods.check_applies(k, system) for k in keys)
    if system.kind == "ode":
        bad = [n for n in constrained_invariants(system, config) if n not in system.invariant_names()]
        if bad:
            raise ParameterError(
                f"invariants must be among {', '.join(system.invariant_names())}; got {', '.join(bad)}")
    check_rollout(system, keys, config)
    work = budget.check(system, keys, config, max_work)
    return Plan(system, chosen, config, view if view is not None else ViewSpec(), work)


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
        problem: the :class:`~conserv_core.problems.Problem` to train on, shared by the
            trainers of a :class:`Comparison` (built once: the data, the test starts and
            the true rollouts); default: built here. It must have been built for this
            system and the same settings (refused otherwise).
        max_work: the work limit in state-steps (default: :func:`budget.max_work`).
        view: how much each evaluation's ``view`` arrays hold (:class:`ViewSpec`: the
            caller's drawing, not the measurement; default: the dashboard's).

    Raises:
        ParameterError: a bad method or invariant, or a run over the work limit (checked
            before any data is generated).
        integrators.Stopped: ``stop_event`` was set while the data or the truth were built.
    """

    def __init__(self, system: System, method: str, config: TrainConfig | None = None,
                 listener: Listener | None = None, stop_event: threading.Event | None = None,
                 problem: Problem | None = None, max_work: float | None = None, view: ViewSpec | None = None,
                 plan: Plan | None = None):
        if plan is None:  # a trainer of its own: checked here, the one way every run is
            plan = plan_run(system, [method], config, max_work, view)
        self.system = plan.system
        self.method = plan.method(method)
        self.view = plan.view
        self.config = plan.config
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
        self.inv_names = constrained_invariants(self.system, cfg)
        # the data and the truth rollout are the long loops of set-up: let a stop end them
        with integrators.stopping(self.stop_event.is_set):
            self._build(problem)

    # -- set-up -------------------------------------------------------------------------
    def _build(self, problem: Problem | None) -> None:
        cfg, sysm = self.config, self.system
        # every draw from a generator of the run's own (never torch's global one, which the
        # threads of a server or a notebook share): the weights from seed, batches from seed + 1
        self._gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.model = self.method.build_model(sysm, cfg)
        models.init_weights(self.model, torch.Generator().manual_seed(cfg.seed))
        self.model.to(device=self.device, dtype=self.dtype)
        if problem is None:
            problem = problems.build(sysm, cfg, self.device, self.dtype)
        else:
            problem.check_shares(sysm, cfg)
        self.problem = problem
        #: the data in the model's coordinates, the constraint's residual and probes
        self.fit: Fit = problem.fit(self.model, self.inv_names)
        self._constraint = self.method.build_constraint(cfg)
        # the data loss is the MSE of targets scaled to unit rms per component, so it is
        # dimensionless like the constraint residuals and λ means the same on every system
        self.y_scale = self.fit.y_train.pow(2).mean(0).sqrt().clamp_min(1e-12)
        self.optimizer = OPTIMIZERS[cfg.optimizer](self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._backup = [p.detach().clone() for p in self.model.parameters()]
        self._probe_violation = float("nan")

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
        x, y = self.fit.x_train, self.fit.y_train
        if self.config.batch_size >= x.shape[0]:
            return x, y
        idx = torch.randint(0, x.shape[0], (self.config.batch_size,), generator=self._gen).to(self.device)
        return x[idx], y[idx]

    def _constraint_loss(self) -> tuple[Tensor, float]:
        """The soft constraint's loss on a draw from the collocation pool, and the rms
        residual there; ``(0, nan)`` without a soft constraint."""
        fit = self.fit
        if self._constraint is None:
            return torch.zeros((), device=self.device, dtype=self.dtype), float("nan")
        pts, grads, idx = fit.colloc, fit.colloc_grads, None
        if self.config.n_colloc < pts.shape[0]:
            idx = torch.randint(0, pts.shape[0], (self.config.n_colloc,), generator=self._gen).to(self.device)
            pts = pts[idx]
            grads = {k: v[idx] for k, v in grads.items()} if grads is not None else None
        res = fit.residual(self.model, pts, grads)
        return self._constraint.loss(res, idx), constraints.rms(res)

    def step(self) -> Progress:
        """One optimisation step. Raises :class:`FloatingPointError` on a non-finite loss
        (after restoring the weights from before the step)."""
        t0 = time.perf_counter()
        self.model.train()
        xb, yb = self._batch()
        data_loss = (((self.fit.predict(self.model, xb) - yb) / self.y_scale) ** 2).mean()
        c_loss, violation = self._constraint_loss()
        loss = data_loss + c_loss
        if not torch.isfinite(loss):
            self._restore()
            raise FloatingPointError(
                f"training diverged: loss became {float(loss.detach())} (NaN/inf) at step {self.step_count + 1} "
                f"(lr={self.config.lr:g}); kept the weights from step {self.step_count} and every curve so far — "
                f"lower the learning rate")
        for b, p in zip(self._backup, self.model.parameters()):
            b.copy_(p.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        every = getattr(self._constraint, "update_every", 0)
        if every and self.step_count % every == 0:
            self._constraint.update(self.step_count, self.fit.residuals_everywhere(self.model))
        if not math.isfinite(violation):
            violation = self._probe()
        self.elapsed += time.perf_counter() - t0
        rec = Progress(
            method=self.method.key, step=self.step_count, total_steps=self.config.steps,
            loss=float(loss.detach()), data_loss=float(data_loss.detach()), constraint_loss=float(c_loss.detach()),
            violation=violation, multipliers=self._constraint.multipliers() if self._constraint else {},
            steps_per_s=self.step_count / max(self.elapsed, 1e-9), elapsed=self.elapsed,
        )
        self.history.append(rec)
        return rec

    def _probe(self) -> float:
        """An unconstrained run's violation, measured on a fixed probe set every 10 steps
        (it costs a forward pass, which for an LNN is most of a step)."""
        if self.step_count % 10 == 1 or not self.history:
            fit = self.fit
            m = min(256, fit.colloc.shape[0])
            grads = {k: v[:m] for k, v in fit.colloc_grads.items()} if fit.colloc_grads is not None else None
            self._probe_violation = fit.violation(self.model, fit.colloc[:m], grads)
        return self._probe_violation

    def _restore(self) -> None:
        with torch.no_grad():
            for b, p in zip(self._backup, self.model.parameters()):
                p.copy_(b)

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self) -> Evaluation:
        """Roll out the current model from the fixed test initial conditions and measure."""
        t0 = time.perf_counter()
        self.model.eval()
        try:
            # a long rollout ends within one integrator step of a stop (raises Stopped)
            with integrators.stopping(self.stop_event.is_set):
                ev = self.problem.evaluate(self.model, self.fit, self.method.key, self.step_count, self.inv_names,
                                           self.view)
        finally:
            self.model.train()
            self.elapsed += time.perf_counter() - t0
        ev.elapsed = self.elapsed
        self.last_eval = ev
        self.evaluations.append(ev)
        return ev

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


def model_state(trainer: Trainer) -> dict:
    """A trainer's weights as plain numpy arrays by state-dict key (scales included: they
    are buffers), what :func:`reevaluate` loads."""
    return {k: v.detach().cpu().numpy().copy() for k, v in trainer.model.state_dict().items()}


def reevaluate(system: System, config: TrainConfig, weights: dict[str, tuple[int, dict]],
               view: ViewSpec | None = None, **changes) -> dict[str, Evaluation]:
    """Trained models evaluated again with some evaluation settings changed, without a
    training step: the out-of-distribution slider's work (``ood_factor=8``).

    The problem is rebuilt from ``config`` with ``changes`` (the data and the
    in-distribution starts are the run's: they come from its seed; the OOD starts and the
    truth from them are new); each model is built, fitted to it (which sets its input
    scales) and then given its trained weights, so the scales are the trained ones.

    Args:
        weights: method key -> (its step count, :func:`model_state`).
        view: how much the evaluations' ``view`` arrays hold (the run's :class:`ViewSpec`).
        changes: ``TrainConfig`` fields that only change the evaluation (``ood_factor``).

    Returns:
        ``"truth"`` and each method's :class:`Evaluation` at the new settings.
    """
    cfg = reevaluation_config(config, **changes)
    out: dict[str, Evaluation] = {}
    key = repr((system.key, sorted(_plain_params(system).items()), sorted(_plain_params(cfg).items())))
    with _REEVALUATED_LOCK:
        problem = _REEVALUATED.get(key)
    if problem is not None:
        system = problem.system  # equal settings (the key); a shared problem wants the same object
    for method, (step, state) in weights.items():
        tr = Trainer(system, method, cfg, problem=problem, view=view)
        problem = tr.problem
        tr.model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        tr.step_count = int(step)
        out[method] = tr.evaluate()
    if problem is not None:
        with _REEVALUATED_LOCK:
            _REEVALUATED[key] = problem
            _REEVALUATED.move_to_end(key)
            while len(_REEVALUATED) > REEVALUATED_KEPT:
                _REEVALUATED.popitem(last=False)
        out = {"truth": problem.truth(), **out}
    return out


#: how many problems :func:`reevaluate` keeps per process (a server's pool, a Dask worker),
#: newest last: the slider's jobs are one per method, so a second method at the same factor,
#: or a move back to a factor, skips rebuilding the data, the test starts and the truth
REEVALUATED_KEPT = 4
_REEVALUATED: collections.OrderedDict[str, Problem] = collections.OrderedDict()
_REEVALUATED_LOCK = threading.Lock()


#: the settings :func:`reevaluate` may change: those that only move the test set
REEVALUATE_FIELDS = ("ood_factor",)


def reevaluation_config(config: TrainConfig, **changes) -> TrainConfig:
    """``config`` with ``changes`` to the test settings (:data:`REEVALUATE_FIELDS`),
    validated: a ``ParameterError`` names a field that would change training, or a value
    out of its range."""
    bad = [k for k in changes if k not in REEVALUATE_FIELDS]
    if bad:
        raise ParameterError(f"a re-evaluation changes only {', '.join(REEVALUATE_FIELDS)}; got {', '.join(bad)}")
    return build(TrainConfig, **{**_plain_params(config), **changes})


def truth_evaluation(trainer: Trainer) -> Evaluation:
    """The truth's own drift on ``trainer``'s problem (the floor the curves are read against)."""
    return trainer.problem.truth()


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
    there = Trainer(other, trainer.method.key, cfg, stop_event=trainer.stop_event, view=trainer.view)
    there.model = trainer.model  # the trained weights, on N' bodies
    there.step_count = trainer.step_count
    return there.evaluate(), truth_evaluation(there)


# ---------------------------------------------------------------------------------------
# play / pause / step
# ---------------------------------------------------------------------------------------
#: how often a paused run looks at its stop event (seconds): Stop ends a paused run this fast
GATE_POLL_S = 0.05


class Gate:
    """Play / pause / step for a :class:`Comparison`, from any thread.

    The comparison calls :meth:`hold` at every evaluation boundary (after the evaluations
    at step 0 and at every multiple of ``eval_every``, before the next step). Paused, it
    waits there; :meth:`step` lets it run exactly one more interval and wait again;
    :meth:`resume` lets it run on. Step presses are counted, never toggled (``grants``
    only grows), so a copy of the gate kept in step by polling (a Dask worker's, see
    :meth:`mirror`) grants each press once however often it reads the same state.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._paused = False
        self._grants = 0  # Step presses so far
        self._used = 0  # of those, the intervals already run

    def pause(self) -> None:
        """Wait at the next evaluation boundary."""
        self._update(paused=True)

    def resume(self) -> None:
        """Run on (Step presses not yet used are dropped)."""
        self._update(paused=False)

    def step(self) -> None:
        """Run one more evaluation interval, then wait (pauses a running run: it waits
        one boundary later than :meth:`pause` would)."""
        self._update(paused=True, grants=1)

    @property
    def paused(self) -> bool:
        return self._paused

    def state(self) -> dict:
        """The gate as plain data (what crosses to a worker)."""
        with self._cond:
            return {"paused": self._paused, "grants": self._grants}

    def mirror(self, state: dict) -> None:
        """Take another gate's :meth:`state` (idempotent: a press already seen is not
        granted again)."""
        with self._cond:
            more = max(0, int(state.get("grants", 0)) - self._grants)
            self._update(paused=bool(state.get("paused", False)), grants=more)

    def _update(self, paused: bool, grants: int = 0) -> None:
        # one lock for both, so a boundary never sees a new press without its pause
        with self._cond:
            self._paused = paused
            self._grants += grants
            self._cond.notify_all()

    def hold(self, stop_event: threading.Event, on_wait: Callable[[int], None] | None = None) -> None:
        """At a boundary: return at once if the run may go on (not paused, or a Step press
        left), else call ``on_wait(grants)`` once and wait until it may, or until
        ``stop_event`` is set (looked at every :data:`GATE_POLL_S`)."""
        announced = False
        while True:
            with self._cond:
                if not self._paused:
                    self._used = self._grants  # presses made while running are not banked
                    return
                if self._used < self._grants:
                    self._used += 1
                    return
                if stop_event.is_set():
                    return
                if announced:
                    self._cond.wait(GATE_POLL_S)
                    continue
                grants = self._grants
            announced = True
            if on_wait is not None:
                on_wait(grants)  # outside the lock: a listener may be slow (it sends)


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

    ``gate`` (a :class:`Gate`; default: never paused) is looked at between rounds where
    every method stands at an evaluation boundary with its evaluation sent; a wait there
    is announced with a :class:`~conserv_core.records.Paused` record. ``view`` (a
    :class:`ViewSpec`) is how much every evaluation's ``view`` arrays hold.
    """

    def __init__(self, system: System, method_keys: list[str], config: TrainConfig | None = None,
                 listener: Listener | None = None, stop_event: threading.Event | None = None,
                 max_work: float | None = None, gate: Gate | None = None, view: ViewSpec | None = None,
                 plan: Plan | None = None):
        if plan is None:
            plan = plan_run(system, method_keys, config, max_work, view)
        self.plan = plan
        self.system = plan.system
        self.config = plan.config
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.gate = gate if gate is not None else Gate()
        self.listener = listener
        self.trainers: dict[str, Trainer] = {}
        problem = None  # the data and the truth, built with the first trainer, shared by the rest
        for k in plan.keys:
            self.trainers[k] = tr = Trainer(plan.system, k, None, None, self.stop_event, problem, plan=plan)
            problem = tr.problem

    @classmethod
    def from_plan(cls, plan: Plan, listener: Listener | None = None, stop_event: threading.Event | None = None,
                  gate: Gate | None = None) -> "Comparison":
        """The comparison of a checked :class:`Plan` (:func:`plan_run`): nothing is checked again."""
        return cls(plan.system, list(plan.keys), listener=listener, stop_event=stop_event, gate=gate, plan=plan)

    def stop(self) -> None:
        self.stop_event.set()

    def _emit(self, rec: Record) -> None:
        if self.listener is not None:
            self.listener(rec)

    def run(self) -> "Comparison":
        first = next(iter(self.trainers.values()))
        self._emit(truth_evaluation(first))
        active = {k: tr.iter_records() for k, tr in self.trainers.items()}
        # every method's step-0 evaluation before any step: a run paused at once shows them
        for k in list(active):
            self._turn(k, active, first=True)
        while active:
            self._hold(active)
            for k in list(active):
                self._turn(k, active)
        return self

    def _turn(self, key: str, active: dict, first: bool = False) -> None:
        """One method's turn: its first record (the step-0 evaluation), or one step and,
        when the step is on the evaluation schedule, that step's evaluation; a
        :class:`Finished` record ends the method. Each record goes to the listener."""
        tr = self.trainers[key]
        take = 1 if first else None  # records left to take this turn (None: up to a step)
        try:
            while take != 0:
                rec = next(active[key])
                self._emit(rec)
                if isinstance(rec, Finished):
                    del active[key]
                    return
                if take is not None:
                    take -= 1
                elif isinstance(rec, Progress):
                    # on schedule, the step's evaluation (or the Finished of a stop during it) follows
                    take = 1 if rec.step % tr.eval_every == 0 or rec.step == tr.config.steps else 0
        except StopIteration:
            active.pop(key, None)

    def _hold(self, active: dict) -> None:
        """Let the gate hold the run when every method left stands at an evaluation
        boundary with steps still to make (its curves are those of its model)."""
        trainers = [self.trainers[k] for k in active]
        steps = {tr.step_count for tr in trainers}
        if len(steps) == 1 and all(tr.step_count % tr.eval_every == 0 and tr.step_count < tr.config.steps
                                   for tr in trainers):
            step = steps.pop()
            self.gate.hold(self.stop_event, lambda grants: self._emit(Paused(step, grants)))


__all__ = [
    "Comparison", "Evaluation", "Finished", "Gate", "Paused", "Progress", "recommended", "Stopped", "TrainConfig",
    "Trainer",
    "check_on_bodies", "comparison_summary", "constrained_invariants", "default_invariants", "method_summary",
    "on_bodies",
    "load_checkpoint", "make_config", "model_state", "reevaluate", "reevaluation_config", "truth_evaluation", "warm_up",
]

