"""Soft constraints: a penalty and an augmented Lagrangian, usable with any model.

Both act on a *residual* ``c`` that is zero when the constraint holds, evaluated on a
fixed pool of collocation points (ODE systems: the training inputs; fields: random points
of the periodic square and the training time window), a random batch of the pool at each
step. A small fixed set was tried first and the network learned to satisfy the
constraint on those points only, so the pool is large and sampled:

* ODE systems, for each chosen invariant ``Q`` (component-wise for vectors):
  ``c = dQ/dt = ∇Q(z) · f_θ(z)`` — the rate form of ``Q_out − Q_in`` (DESIGN.md writes
  the penalty as ``λ·mean|Q_out − Q_in|²``; for a step ``h``, ``Q_out − Q_in = h·dQ/dt
  + O(h²)``, so the rate form is the same penalty without a step size to choose).
  Each residual is divided by a fixed scale, ``rms(|∇Q|·|ż|)`` over the training data,
  so λ is dimensionless and comparable across invariants.
* Field systems: ``c = ∇·u_θ(x, y, t) / rms|u|`` at collocation points.

The penalty adds ``λ·Σ_Q mean(c²)``. The augmented Lagrangian (Nocedal & Wright,
*Numerical Optimization*, §17.3) adds ``Σ_Q [mean(λ_i·c_i) + (μ/2)·mean(c_i²)]`` with one
multiplier per collocation point and component, updated on a schedule
``λ_i ← λ_i + μ·c_i``; μ grows by ``mu_growth`` (up to ``mu_max``) when the violation has
not fallen below ``stall_ratio`` of its value at the previous update.

Each constraint is a :class:`Constraint`: a class with a ``kind`` (the key a
:class:`~conserv_core.methods.Method` names), ``has_multipliers``, and the ``settings`` it
reads, declared here as ``param`` Parameters with their bounds, doc and widget hints
(``label``, ``softbounds``, ``step``; a negative ``precedence`` keeps one off the
dashboard). :func:`register` adds a constraint to :data:`CONSTRAINTS` and a setting that is
new to ``training.TrainConfig``, so a plugin's constraint with a knob of its own is one
file: the CLI, the links and the dashboard's "Constraint settings" card read the knob off
``TrainConfig`` and the registry.
"""

from __future__ import annotations

import abc
from typing import Callable, ClassVar

import param
import torch

from conserv_core import registry

Tensor = torch.Tensor
ResidualFn = Callable[[torch.nn.Module, Tensor], dict[str, Tensor]]  # -> name: (M, k)


class InvariantRates:
    """Residuals ``dQ/dt`` of an ODE system's invariants along a model's vector field.

    Args:
        system: an ODE system.
        names: which invariants to constrain.
        to_canonical: maps the model's state ``s (M, D)`` to ``z = [q, p]``
            (identity for canonical models; the Legendre map for an LNN).
        x, dxdt: training inputs and targets in the model's coordinates, for the scales.
    """

    def __init__(self, system, names: list[str], to_canonical: Callable[[Tensor], Tensor],
                 x: Tensor, dxdt: Tensor):
        invs = system.invariants()
        unknown = [n for n in names if n not in invs]
        if unknown:
            raise ValueError(f"invariants must be among {', '.join(invs)}; got {unknown}")
        self.names = list(names)
        self._invs = {n: invs[n] for n in self.names}
        self._to_canonical = to_canonical
        self.scales: dict[str, Tensor] = {}
        grads = self._grads(x)
        for n, g in grads.items():  # g: (N, k, D)
            rate_scale = (g.norm(dim=-1) * dxdt.norm(dim=-1, keepdim=True)).pow(2).mean(0).sqrt()
            self.scales[n] = rate_scale.clamp_min(1e-12)  # (k,)

    def _grads(self, s: Tensor) -> dict[str, Tensor]:
        """``∇_s Q(to_canonical(s))`` for each invariant: name -> ``(M, k, D)``; no graph kept."""
        out = {}
        with torch.enable_grad():
            s_ = s.detach().requires_grad_(True)
            z = self._to_canonical(s_)
            for n, fn in self._invs.items():
                q = fn(z)
                q = q.unsqueeze(-1) if q.dim() == 1 else q  # (M, k)
                rows = [torch.autograd.grad(q[:, j].sum(), s_, retain_graph=True)[0] for j in range(q.shape[1])]
                out[n] = torch.stack(rows, 1).detach()
        return out

    def __call__(self, model: torch.nn.Module, s: Tensor, grads: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Residuals name -> ``(M, k)``, differentiable in the model's weights.

        ``grads`` may be passed in when ``s`` is a fixed collocation set (they don't depend
        on the weights), which saves an autograd pass per step.
        """
        grads = self._grads(s) if grads is None else grads
        f = model(s)  # (M, D)
        return {n: torch.einsum("mkd,md->mk", g, f) / self.scales[n] for n, g in grads.items()}


class Divergence:
    """Residual ``∇·u_θ / rms|u|`` of a field model at points ``xyt (M, 3)``."""

    names = ["divergence"]

    def __init__(self, divergence_fn: Callable, u: Tensor):
        self._div = divergence_fn
        self.scales = {"divergence": u.norm(dim=-1).pow(2).mean().sqrt().clamp_min(1e-12).reshape(1)}

    def __call__(self, model: torch.nn.Module, xyt: Tensor, grads=None) -> dict[str, Tensor]:
        return {"divergence": (self._div(model, xyt[:, :2], xyt[:, 2]) / self.scales["divergence"]).unsqueeze(-1)}


def rms(res: dict[str, Tensor]) -> float:
    """One number for the size of the residuals: root mean square over all of them."""
    if not res:
        return 0.0
    total = sum(float(c.detach().pow(2).sum()) for c in res.values())
    count = sum(c.numel() for c in res.values())
    return (total / max(count, 1)) ** 0.5


class Constraint(abc.ABC):
    """A soft constraint on the loss, built afresh for each run from its ``TrainConfig``.

    The trainer calls :meth:`loss` every step and :meth:`update` every ``update_every``
    steps (0: never) with the residuals on the whole collocation pool; the dashboard plots
    :meth:`multipliers` when ``has_multipliers``. A subclass declares its class attributes
    and :meth:`loss`; :meth:`from_config` passes each setting by name to ``__init__``.
    """

    #: the key a Method's ``constraint`` names
    kind: ClassVar[str]
    #: whether it learns multipliers the dashboard plots
    has_multipliers: ClassVar[bool] = False
    #: the ``TrainConfig`` fields it reads, as Parameters (bounds, doc, widget hints);
    #: :func:`register` adds those ``TrainConfig`` lacks
    settings: ClassVar[dict[str, param.Parameter]] = {}
    #: steps between :meth:`update` calls (0: nothing to update)
    update_every: int = 0

    @classmethod
    def from_config(cls, config) -> "Constraint":
        """The constraint with ``config``'s value of each of its settings."""
        return cls(**{n: getattr(config, n) for n in cls.settings})

    @abc.abstractmethod
    def loss(self, res: dict[str, Tensor], idx: Tensor | None = None) -> Tensor:
        """The term added to the data loss, from residuals at the pool points ``idx``."""

    def update(self, step: int, res: dict[str, Tensor]) -> bool:
        """Update internal state at ``step`` from the residuals on the whole pool; True if it did."""
        return False

    def multipliers(self) -> dict[str, float]:
        """Numbers the dashboard plots per constrained quantity (empty: none)."""
        return {}


class Penalty(Constraint):
    """``loss += λ · Σ_Q mean(c²)``; nothing to update."""

    kind = "penalty"
    settings = {"lam": param.Number(default=10.0, bounds=(0.0, 1e6), softbounds=(0.0, 20.0), step=0.1,
                                    label="Penalty weight λ (penalty)", doc="Penalty weight λ.")}

    def __init__(self, lam: float):
        self.lam = float(lam)

    def loss(self, res: dict[str, Tensor], idx: Tensor | None = None) -> Tensor:
        return self.lam * sum(c.pow(2).mean() for c in res.values())


class AugmentedLagrangian(Constraint):
    """``loss += Σ_Q [mean(λ_i c_i) + (μ/2) mean(c_i²)]`` with scheduled multiplier updates.

    Args:
        mu: initial penalty weight μ.
        update_every: steps between multiplier updates.
        mu_growth: factor applied to μ when the violation stalls.
        mu_max: cap on μ.
        stall_ratio: the violation must fall below this fraction of its value at the
            previous update, or μ grows.
    """

    kind = "auglag"
    has_multipliers = True
    settings = {
        "mu": param.Number(default=10.0, bounds=(1e-6, 1e6), softbounds=(0.1, 20.0), step=0.1,
                           label="Initial μ (aug. Lagrangian)", doc="Augmented Lagrangian initial μ."),
        "mu_growth": param.Number(default=2.0, bounds=(1.0, 100.0), softbounds=(1.0, 10.0), step=0.1,
                                  label="μ growth when stalled", doc="Factor on μ when the violation stalls."),
        # a cap for runaway growth, not a teaching knob: no control on the dashboard
        "mu_max": param.Number(default=100.0, bounds=(1e-6, 1e9), precedence=-1, doc="Cap on μ."),
        "update_every": param.Integer(default=100, bounds=(1, 100_000), softbounds=(1, 500), step=1,
                                      label="Multiplier update every (steps)",
                                      doc="Steps between multiplier updates."),
    }
    def __init__(self, mu: float, update_every: int = 50, mu_growth: float = 2.0,
                 mu_max: float = 1e4, stall_ratio: float = 0.8):
        self.mu = float(mu)
        self.update_every = int(update_every)
        self.mu_growth = float(mu_growth)
        self.mu_max = float(mu_max)
        self.stall_ratio = float(stall_ratio)
        self.lam: dict[str, Tensor] = {}
        self._last_violation: float | None = None

    def loss(self, res: dict[str, Tensor], idx: Tensor | None = None) -> Tensor:
        """``res`` holds residuals at the pool points ``idx`` (all of them if None)."""
        total = 0.0
        for n, c in res.items():
            lam = self.lam.get(n)
            if lam is not None:
                lam = lam if idx is None else lam[idx]
                total = total + (lam * c).mean()
            total = total + 0.5 * self.mu * c.pow(2).mean()
        return total

    def update(self, step: int, res: dict[str, Tensor]) -> bool:
        """Apply the multiplier step if ``step`` is on the schedule; True if it did.

        ``res`` holds the residuals at *every* point of the collocation pool."""
        if step == 0 or step % self.update_every:
            return False
        for n, c in res.items():
            c = c.detach()
            self.lam[n] = self.lam.get(n, torch.zeros_like(c)) + self.mu * c
        v = rms(res)
        if self._last_violation is not None and v > self.stall_ratio * self._last_violation:
            self.mu = min(self.mu * self.mu_growth, self.mu_max)
        self._last_violation = v
        return True

    def multipliers(self) -> dict[str, float]:
        """RMS multiplier per constrained quantity, and μ."""
        out = {n: float(l.pow(2).mean().sqrt()) for n, l in self.lam.items()}
        out["mu"] = self.mu
        return out


#: soft constraint key (a :class:`~conserv_core.methods.Method`'s ``constraint``) -> its
#: :class:`Constraint` class; :func:`register` adds to it
CONSTRAINTS: dict[str, type[Constraint]] = {c.kind: c for c in (Penalty, AugmentedLagrangian)}
#: kind -> the settings :func:`register` added to ``TrainConfig`` for it (:func:`unregister` removes them)
_ADDED: dict[str, list[str]] = {}


def register(cls: type[Constraint]) -> type[Constraint]:
    """Add constraint ``cls`` to :data:`CONSTRAINTS` (at the end), and each of its
    ``settings`` that ``training.TrainConfig`` lacks to ``TrainConfig`` (at the end): from
    then on a method may name its ``kind``, and the CLI (``--name-of-setting``), links
    and the dashboard's "Constraint settings" card offer its settings. A setting may be
    shared with another constraint by reusing its Parameter object
    (``Penalty.settings["lam"]``). Refused: a class that is not a :class:`Constraint`, a
    kind already taken, a setting whose name ``TrainConfig`` already uses for another
    Parameter."""
    from conserv_core import training  # training imports this module

    if not (isinstance(cls, type) and issubclass(cls, Constraint)):
        raise TypeError(f"register takes a Constraint subclass; got {cls!r}")
    if cls.kind in CONSTRAINTS:
        raise ValueError(f"constraint kind {cls.kind!r} is already registered")
    for n, p in cls.settings.items():
        if not isinstance(p, param.Parameter):
            raise TypeError(f"constraint {cls.kind!r}: setting {n!r} must be a param.Parameter; got {p!r}")
        if n in training.TrainConfig.param and training.TrainConfig.param[n] is not p:
            raise ValueError(f"constraint {cls.kind!r}: setting {n!r} is already a TrainConfig field; "
                             f"name a new one, or reuse that field's Parameter to share it")
    added = [n for n in cls.settings if n not in training.TrainConfig.param]
    for n in added:
        training.TrainConfig.param.add_parameter(n, cls.settings[n])
    CONSTRAINTS[cls.kind] = cls
    _ADDED[cls.kind] = added
    return cls


def unregister(kind: str) -> None:
    """Take a constraint added by :func:`register` out again, with the settings it added."""
    from conserv_core import training

    CONSTRAINTS.pop(kind, None)
    config = training.TrainConfig
    for n in _ADDED.pop(kind, []):
        type.__delattr__(config, n)
        # param caches its class parameters and has no public way to remove one: the cache
        # is cleared as ``add_parameter`` clears it, and rebuilt from the class on next use
        config._param__private.params.clear()


def registered(cls: type[Constraint]):
    """``with registered(C):`` the constraint and its new settings exist inside the block only."""
    return registry.scoped(register, unregister, cls.kind, cls)
