"""The methods a user can compare, and which systems each applies to.

A method is an architecture (the hard part) plus an optional soft constraint on the loss.
``ALL_METHODS`` is the shared registry: tests parametrize over every (system, method) pair
that :func:`applies` allows, so a new method is tested by the existing tests.

A method carries its own behaviour: it builds its model (:meth:`Method.build_model`) and
its constraint (:meth:`Method.build_constraint`) from a run's ``TrainConfig``, and says
what it can do (:meth:`Method.has_learned_energy`, :attr:`Method.has_multipliers`,
:meth:`Method.coords`, ...). Code outside this module asks these, never a method's key,
so a method added with :func:`register` is drawn, trained and listed like the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conserv_core import constraints, models, registry
from conserv_core.systems.base import ParameterError, System


@dataclass(frozen=True)
class Method:
    key: str
    title: str
    #: "none", "hard", "soft" or "mixed"
    kind: str
    #: model architecture for ODE systems (None: not applicable)
    arch_ode: str | None
    #: model architecture for field systems (None: not applicable)
    arch_field: str | None
    #: None, "penalty" or "auglag"
    constraint: str | None
    equation: str
    teaching_note: str
    #: the only systems it applies to (None: every system its architectures fit)
    systems: tuple[str, ...] | None = None
    #: the ``TrainConfig`` fields that only some methods read, those this one reads (see
    #: :data:`METHOD_FIELDS`): a sweep trains a method once for all values of a field it
    #: does not read. Declared from the code that reads them (``Trainer._build``), and
    #: checked by ``tests/test_sweep.py`` (two values of an undeclared field must train
    #: bit-identically, two of a declared one differently)
    reads: tuple[str, ...] = ()
    #: a ``TrainConfig`` field that changes the method's equations (the LNN's form), and
    #: the extra equation per value: the method's card shows the one in use
    variant_field: str | None = None
    variant_equations: dict[str, str] = field(default_factory=dict, hash=False)

    def arch_for(self, system: System) -> str | None:
        if self.systems is not None and system.key not in self.systems:
            return None
        return self.arch_ode if system.kind == "ode" else self.arch_field

    # -- what the method can do (ask these, not the key) --------------------------------
    def model_class(self, system: System) -> type[models.Model] | None:
        """The class of the model it trains on ``system`` (None: does not apply)."""
        arch = self.arch_for(system)
        return None if arch is None else models.ARCHITECTURES[arch]

    def capable(self, system: System, capability: str) -> bool:
        """Whether its model on ``system`` declares ``capability`` (one of
        :data:`conserv_core.models.CAPABILITIES`; False where the method does not apply)."""
        if capability not in models.CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {', '.join(models.CAPABILITIES)}")
        cls = self.model_class(system)
        return cls is not None and capability in cls.capabilities

    def has_learned_energy(self, system: System) -> bool:
        """Whether its model on ``system`` has an energy of its own (HNN, LNN, ...)."""
        return self.capable(system, "learned_energy")

    def has_gradient_form(self, system: System) -> bool:
        """Whether its model is ``ż = (J − R)∇H`` with a scalar ``H`` in canonical
        coordinates (hnn, phnn): what the discrete-gradient rollout needs."""
        return self.capable(system, "gradient_form")

    def any_bodies(self, system: System) -> bool:
        """Whether one trained model runs on any number of bodies (the symmetric HNN)."""
        return self.capable(system, "any_bodies")

    def has_pair_potential(self, system: System) -> bool:
        """Whether its model learns one pair function of distance (the symmetric n-body
        HNN), which a view can draw against the true one."""
        return self.capable(system, "pair_potential")

    def cost_per_state(self, system: System) -> models.Cost:
        """What one state of ``system`` costs its model, relative to the work budget's
        unit (:meth:`conserv_core.models.Model.cost_per_state`); the unit where the method
        does not apply."""
        cls = self.model_class(system)
        return models.Cost() if cls is None else cls.cost_per_state(system)

    def coords(self, system: System) -> str | None:
        """The state its model works in: ``"canonical"`` ``[q, p]``, ``"velocity"``
        ``[q, q̇]`` or ``"field"`` (None: does not apply)."""
        cls = self.model_class(system)
        return None if cls is None else cls.coords

    @property
    def has_multipliers(self) -> bool:
        """Whether its constraint learns multipliers (the dashboard plots them)."""
        return self.constraint is not None and constraints.CONSTRAINTS[self.constraint].has_multipliers

    @property
    def is_reference(self) -> bool:
        """An unconstrained method: what the others are compared against."""
        return self.kind == "none"

    def variant(self, config) -> str | None:
        """The value of :attr:`variant_field` in ``config`` (None: the method has no variants)."""
        return None if self.variant_field is None else getattr(config, self.variant_field)

    # -- building -----------------------------------------------------------------------
    def build_model(self, system: System, config) -> models.Model:
        """A fresh, untrained model for ``system``, built by its architecture from
        ``config`` (:meth:`conserv_core.models.Model.from_config`: width, depth,
        activation, and what that architecture reads besides, e.g. the LNN's form).
        Weights are PyTorch's default draw: the trainer redraws them from the run's seed."""
        cls = self.model_class(system)
        if cls is None:
            raise ParameterError(f"method {self.key!r} does not apply to system {system.key!r}")
        return cls.from_config(system, config)

    def build_constraint(self, config):
        """Its soft constraint built from ``config`` (None: hard or unconstrained)."""
        return None if self.constraint is None else constraints.CONSTRAINTS[self.constraint].from_config(config)


ALL_METHODS: dict[str, Method] = {
    m.key: m
    for m in [
        Method(
            "baseline", "Unconstrained MLP", "none", "mlp", "field_mlp", None,
            r"\dot z = f_\theta(z)\qquad\text{(flow: } u = f_\theta(x, y, t))",
            "Fits the data and nothing else. Nothing stops its energy or mass from drifting, "
            "and the error compounds over a long rollout.",
        ),
        Method(
            "hnn", "Hamiltonian NN (hard)", "hard", "hnn", None, None,
            r"\dot q = \frac{\partial H_\theta}{\partial p},\quad \dot p = -\frac{\partial H_\theta}{\partial q}"
            r"\;\Rightarrow\; \frac{dH_\theta}{dt} = \nabla H_\theta^\top J \nabla H_\theta = 0",
            "Learns a scalar energy and derives the dynamics from it, so its own energy is "
            "conserved exactly, for any weights and any input. The true energy stays close "
            "as long as the learned H is close to the true one.",
        ),
        Method(
            "lnn", "Lagrangian NN (hard)", "hard", "lnn", None, None,
            r"\ddot q = (\nabla_{\dot q}\nabla_{\dot q}^\top L_\theta)^{-1}"
            r"\left[\nabla_q L_\theta - (\nabla_q \nabla_{\dot q}^\top L_\theta)\,\dot q\right]",
            "Learns a Lagrangian and gets accelerations from the Euler–Lagrange equations; "
            "works in positions and velocities, with no need to know the momenta. Two forms "
            "(Constraint settings): generic L(q, q̇), as in the paper, or mechanical "
            "½ q̇ᵀM(q)q̇ − V(q) with M positive definite, which learns faster and cannot run away.",
            reads=("lnn_form",),  # the lnn architecture's form (and its activation swap)
            variant_field="lnn_form",
            variant_equations={
                "generic": r"L_\theta(q, \dot q) = \mathrm{MLP}_\theta(q, \dot q)",
                "mechanical": (r"L_\theta = \tfrac12\,\dot q^\top M_\theta(q)\,\dot q - V_\theta(q),"
                               r"\quad M_\theta = C C^\top + \varepsilon I \succ 0"),
            },
        ),
        Method(
            "phnn", "Port-Hamiltonian NN (hard, dissipative)", "hard", "phnn", None, None,
            # two lines: on one, it ran out of its card
            r"\begin{gathered}\dot z = (J - R_\theta)\nabla H_\theta,\quad R_\theta = L_\theta L_\theta^\top \succeq 0"
            r"\\ \Rightarrow\; \frac{dH_\theta}{dt} = -\nabla H_\theta^\top R_\theta \nabla H_\theta \le 0"
            r"\end{gathered}",
            "An HNN with friction built in: it learns an energy and a positive semi-definite damping, so "
            "its energy can only fall, for any weights. With no friction in the data it can learn R = 0 "
            "(an HNN); on a damped pendulum it is the hard constraint that is right, where the HNN "
            "cannot lose energy at all.",
        ),
        Method(
            "shnn", "Symmetric HNN (hard, Noether)", "hard", "shnn", None, None,
            # two lines: on one, it ran out of its card
            r"\begin{gathered}H_\theta = a_\theta \sum_i |p_i|^2 + \sum_{i<j} v_\theta(|q_i - q_j|)"
            r"\\ \Rightarrow\; \frac{dH_\theta}{dt} = \frac{dP}{dt} = \frac{dL}{dt} = 0\end{gathered}",
            "An HNN whose energy cannot tell where the bodies are, which way they face, or which is "
            "which: a kinetic energy with one learned inverse mass, and one learned function of each "
            "pair's distance. By Noether's "
            "theorem its dynamics then keep total momentum and angular momentum exactly, for any "
            "weights, and one trained model runs on any number of bodies. It assumes identical bodies.",
            systems=("nbody",),
        ),
        Method(
            "divfree", "Divergence-free field (hard)", "hard", None, "divfree", None,
            r"u = \left(\frac{\partial \psi_\theta}{\partial y}, -\frac{\partial \psi_\theta}{\partial x}\right)"
            r"\;\Rightarrow\; \nabla\cdot u = 0",
            "Learns a stream function; the velocity is its curl, so it cannot compress or "
            "create fluid anywhere, whatever the weights.",
        ),
        Method(
            "penalty", "Penalty loss (soft)", "soft", "mlp", "field_mlp", "penalty",
            # ⟨·⟩ for the mean over training points: KaTeX drew an \overline as a stray minus
            r"\mathcal{L} = \mathcal{L}_{\mathrm{data}} + \lambda\,\left\langle\left(\tfrac{dQ}{dt}\right)^2\right\rangle"
            r"\qquad\text{(flow: } \lambda\,\langle(\nabla\cdot u)^2\rangle)",
            "The baseline plus a penalty on the rate of change of the known invariants at "
            "training points. Conservation is encouraged, not guaranteed: watch it leak out "
            "of distribution.",
            reads=("lam",),  # constraints.Penalty(lam)
        ),
        Method(
            "auglag", "Augmented Lagrangian (mixed)", "mixed", "mlp", "field_mlp", "auglag",
            r"\mathcal{L} = \mathcal{L}_{\mathrm{data}} + \langle\lambda_i c_i\rangle + \frac{\mu}{2}\langle c_i^2\rangle,"
            r"\qquad \lambda_i \leftarrow \lambda_i + \mu\, c_i",
            "A penalty whose multipliers learn where the constraint is violated and push "
            "harder there; the weight μ grows when progress stalls. Watch the multipliers.",
            # constraints.AugmentedLagrangian(mu, update_every, mu_growth, mu_max): not lam
            reads=("mu", "mu_growth", "mu_max", "update_every"),
        ),
    ]
}


def method_fields() -> frozenset[str]:
    """``TrainConfig`` fields read by some methods only (their soft constraint's settings,
    the LNN's form); every other field is read by every method. Fields such as
    ``n_colloc`` and ``invariants`` are not here: the unconstrained methods read them too
    (the field system's probe points, every method's violation)."""
    return frozenset(f for m in ALL_METHODS.values() for f in m.reads)


#: the fields as the registry stood at import (:func:`method_fields` follows :func:`register`)
METHOD_FIELDS: frozenset[str] = method_fields()


def unread_fields(method: str | Method) -> frozenset[str]:
    """The ``TrainConfig`` fields that ``method`` never reads: its results do not depend on them."""
    m = get_method(method) if isinstance(method, str) else method
    return method_fields() - set(m.reads)


def register(method: Method) -> Method:
    """Add ``method`` to :data:`ALL_METHODS` (at the end): from then on the trainer, the
    CLI (``conserv methods``), sweeps and the dashboard offer it. Its architectures must
    be registered in :data:`conserv_core.models.ARCHITECTURES` (a new one with
    :func:`conserv_core.models.register`, first), its constraint in
    :data:`conserv_core.constraints.CONSTRAINTS` (:func:`conserv_core.constraints.register`),
    and its ``reads`` must name that constraint's settings. A key already taken is refused."""
    if not isinstance(method, Method):
        raise TypeError(f"register takes a Method; got {type(method).__name__}")
    if method.key in ALL_METHODS:
        raise ValueError(f"method key {method.key!r} is already registered")
    for arch in (method.arch_ode, method.arch_field):
        if arch is not None and arch not in models.ARCHITECTURES:
            raise ValueError(f"method {method.key!r}: architecture {arch!r} is not in models.ARCHITECTURES")
    if method.constraint is not None and method.constraint not in constraints.CONSTRAINTS:
        raise ValueError(f"method {method.key!r}: constraint {method.constraint!r} is not in "
                         f"constraints.CONSTRAINTS ({', '.join(constraints.CONSTRAINTS)})")
    if method.constraint is not None:
        # a sweep trains a method once for all values of a field it does not declare: an
        # undeclared setting of its constraint would be swept without effect
        unread = [n for n in constraints.CONSTRAINTS[method.constraint].settings if n not in method.reads]
        if unread:
            raise ValueError(f"method {method.key!r}: its constraint {method.constraint!r} reads "
                             f"{', '.join(unread)}; name them in the method's reads")
    ALL_METHODS[method.key] = method
    return method


def unregister(key: str) -> None:
    """Take a method added by :func:`register` out again."""
    ALL_METHODS.pop(key, None)


def registered(method: Method):
    """``with registered(m):`` the method is offered inside the block only (for tests and
    notebooks that try a method out)."""
    return registry.scoped(register, unregister, method.key, method)


@dataclass(frozen=True)
class RolloutOption:
    """A way to roll a trained model out that adds a guarantee in discrete time. Not a
    method (nothing about training changes): a ``TrainConfig`` setting that applies to the
    methods and systems :attr:`applies_to` names."""

    key: str
    title: str
    #: the TrainConfig setting that turns it on
    setting: str
    applies_to: str
    equation: str
    teaching_note: str


ROLLOUT_OPTIONS: dict[str, RolloutOption] = {
    o.key: o
    for o in [
        RolloutOption(
            "discrete_gradient", "Discrete-gradient rollout (exact per step)", "--integrator discrete_gradient",
            "hnn, phnn and the true ODE systems (a scalar energy, ż = (J − R)∇H)",
            r"z' = z + \Delta t\,(J - R)\,\overline{\nabla} H(z, z'),\quad"
            r"\overline{\nabla} H(z, z')\cdot(z' - z) = H(z') - H(z)",
            "A hard constraint is exact for the continuous dynamics, but a rollout is a discrete map: "
            "under RK4 even the HNN's own energy drifts a little. The discrete gradient makes the "
            "learned energy exact in every step, to the round-off of the run's precision (float32: about "
            "1e-6; float64: 1e-13), and with friction it can only fall. It does not make the learned "
            "energy the true one.",
        ),
        RolloutOption(
            "projection", "Projection onto the invariants (hard at inference)", "--projection",
            "every ODE method (the chosen invariants); the flow: Leray projection of the learned field",
            r"\tilde z = \Phi_{\Delta t}(z),\quad z' = \tilde z + \nabla Q(\tilde z)^\top \lambda,"
            r"\quad Q(z') = Q(z_0)",
            "After every step the state is pulled back onto the set where the known invariants keep "
            "their starting values (flow: the field's divergence-free part carries the dye). Any model "
            "then conserves them to the tolerance, soft or unconstrained. It fixes the invariants only: "
            "the trajectory error and the phase drift of the orbits stay.",
        ),
    ]
}


def get_method(key: str) -> Method:
    try:
        return ALL_METHODS[key]
    except KeyError:
        raise ParameterError(f"method must be one of {', '.join(ALL_METHODS)}; got {key!r}") from None


def applies(method: str | Method, system: System) -> bool:
    m = get_method(method) if isinstance(method, str) else method
    return m.arch_for(system) is not None


def valid_methods(system: System) -> list[str]:
    return [k for k, m in ALL_METHODS.items() if applies(m, system)]


def default_methods(system: System, valid: list[str] | None = None) -> list[str]:
    """The methods a system's page ticks by default: of those that apply (``valid``,
    default every one), the first unconstrained one, the first hard one and the first
    soft one, in the registry's order (the pendulum: baseline, HNN, penalty; the flow:
    baseline, div-free, penalty). The dashboard and the claims
    (:mod:`conserv_core.claims`) share this rule."""
    valid = valid_methods(system) if valid is None else valid
    out: list[str] = []
    for kind in ("none", "hard", "soft"):
        out += [k for k in valid if ALL_METHODS[k].kind == kind][:1]
    return out


def check_applies(method: str, system: System) -> Method:
    """The method, or a ParameterError listing the methods valid for this system."""
    m = get_method(method)
    if not applies(m, system):
        raise ParameterError(
            f"method {method!r} does not apply to system {system.key!r}; "
            f"valid: {', '.join(valid_methods(system))}"
        )
    return m
