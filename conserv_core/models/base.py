"""The contract every learned model fills: what it declares, and how it is built.

Code outside the models asks a model's class what it is (``kind``, ``coords``) and what
it can do (``capabilities``), never whether it happens to have an attribute: a probe
such as ``getattr(cls, "has_learned_energy", False)`` silently answers "no" for a new
architecture that spelled it differently. So each concrete class declares, in its own
body, every flag of :data:`FLAGS`; the base has no default to fall back on, and
:meth:`Model.__init_subclass__` refuses a class that leaves one out (a subclass inherits
no answer either: the port-Hamiltonian model is an HNN whose energy is *not* kept).

Building goes through the class too (:meth:`Model.from_spec`, :meth:`Model.from_config`),
so an architecture with its own ``__init__`` (a plugin's) is built by
:func:`conserv_core.models.build` and by a method without a branch on its class.

The hierarchy: :class:`Model` (any learned vector field), :class:`EnergyModel` (one with
a learned scalar energy, :meth:`EnergyModel.learned_energy`), :class:`FieldModel` (a
velocity field ``u(x, y, t)`` of a flow).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from conserv_core.systems.base import ParameterError

#: what a model may declare in ``capabilities``, and what each promises
CAPABILITIES: dict[str, str] = {
    "learned_energy": "an energy of its own, learned_energy(s) -> (B,); exactly the EnergyModels",
    "conserves_learned_energy": "its exact flow keeps learned_energy for any weights (hnn, lnn, shnn; "
                                "the port-Hamiltonian model's may fall)",
    "gradient_form": "a gradient_form attribute, ż = (J − R)∇H in canonical coordinates: what the "
                     "discrete-gradient rollout needs",
    "any_bodies": "one set of weights evaluates any number of bodies (training.on_bodies)",
    "pair_potential": "pair_potential(r) -> (M,), one learned function of a pair's distance",
}
#: the values of ``kind`` and ``coords``
KINDS = ("ode", "field")
COORDS = ("canonical", "velocity", "field")
#: the class flags every concrete model declares in its own body
FLAGS = ("kind", "coords", "default_activation", "capabilities")
#: a capability whose promise is a member: the class must have it
_MEMBERS = {"learned_energy": "learned_energy", "gradient_form": "gradient_form", "pair_potential": "pair_potential"}


@dataclass(frozen=True)
class Cost:
    """What one state costs a model, in units of the work budget's state-step
    (:mod:`conserv_core.budget`): the default pendulum MLP advancing one state one RK4
    step (``rollout``), or taking one training sample through one optimisation step
    (``train``, priced further by ``budget.TRAIN_SAMPLE_COST``).

    A model declares it (:meth:`Model.cost_per_state`) because only the model knows how
    its work grows: a dense MLP with its input width, the symmetric HNN with the number
    of body pairs. Were every state priced alike, a 64-body symmetric HNN (2 016 pairs,
    ~1 300 units a state) would be priced like two bodies and hold a worker for hours.
    The figures are measured by ``benchmarks/bench_budget.py``.
    """

    #: an RK4 step of one state under ``no_grad``, relative to the unit
    rollout: float = 1.0
    #: one training sample through one optimisation step, relative to the unit's
    train: float = 1.0
    #: what sets the price, for the budget's message (e.g. "2,016 pairs of n_bodies=64")
    why: str = ""
    #: the setting that lowers it, for the message (e.g. "n_bodies"; empty: none to name)
    lower: str = ""


@dataclass(frozen=True)
class Spec:
    """The settings every architecture is built from, already checked against
    :class:`~conserv_core.models.ModelSpec`'s bounds (:func:`conserv_core.models.spec_for`)."""

    #: the registry key asked for (refusals name it)
    arch: str
    #: ODE models: the state's size ``2·dof`` (None for field models)
    state_dim: int | None
    width: int
    depth: int
    activation: str
    #: field models: Fourier modes per axis
    n_modes: int

    def even_state(self) -> int:
        """``state_dim``, refused unless even (state ``[q, p]`` or ``[q, q̇]``)."""
        if self.state_dim % 2:
            raise ParameterError(f"state_dim must be even for {self.arch} (state = [q, p] or [q, q̇]); "
                                 f"got {self.state_dim}")
        return self.state_dim


def _is_abstract(cls: type) -> bool:
    # ABCMeta sets __abstractmethods__ only after __init_subclass__ has run: look ourselves
    return any(getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in dir(cls))


class Model(nn.Module, metaclass=abc.ABCMeta):
    """A learned vector field. Concrete subclasses declare, in their own body:

    * ``kind``: ``"ode"`` (``f(s) -> ds/dt``) or ``"field"`` (``u(xy, t)``);
    * ``coords``: the state it works in, ``"canonical"`` (``[q, p]``), ``"velocity"``
      (``[q, q̇]``, the trainer converts with the system's Legendre map) or ``"field"``;
    * ``default_activation``: one of :data:`~conserv_core.models.mlp.ACTIVATIONS`, used
      when a run leaves the activation to the architecture;
    * ``capabilities``: a ``frozenset`` drawn from :data:`CAPABILITIES`.
    """

    kind: ClassVar[str]
    coords: ClassVar[str]
    default_activation: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if _is_abstract(cls):
            return
        name = cls.__name__
        for flag in FLAGS:
            if flag not in cls.__dict__:
                raise TypeError(f"{name} must declare {flag!r} in its own body (a model class declares "
                                f"{', '.join(FLAGS)}; see conserv_core.models.base)")
        caps = cls.capabilities
        if not isinstance(caps, frozenset):
            raise TypeError(f"{name}.capabilities must be a frozenset; got {type(caps).__name__}")
        unknown = sorted(caps - set(CAPABILITIES))
        if unknown:
            raise TypeError(f"{name} declares unknown capabilities {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(CAPABILITIES)}")
        if cls.kind not in KINDS:
            raise TypeError(f"{name}.kind must be one of {', '.join(KINDS)}; got {cls.kind!r}")
        if cls.coords not in COORDS:
            raise TypeError(f"{name}.coords must be one of {', '.join(COORDS)}; got {cls.coords!r}")
        if (cls.kind == "field") != issubclass(cls, FieldModel) or (cls.coords == "field") != (cls.kind == "field"):
            raise TypeError(f"{name}: kind 'field' and coords 'field' go together, on FieldModels only")
        if ("learned_energy" in caps) != issubclass(cls, EnergyModel):
            raise TypeError(f"{name}: capability 'learned_energy' is declared by the EnergyModels, and by them only")
        if "conserves_learned_energy" in caps and "learned_energy" not in caps:
            raise TypeError(f"{name}: 'conserves_learned_energy' needs 'learned_energy'")
        missing = [c for c, member in _MEMBERS.items()
                   if c in caps and not any(member in k.__dict__ for k in cls.__mro__)]
        if missing:
            raise TypeError(f"{name} declares {', '.join(map(repr, missing))} but has no such member")

    @abc.abstractmethod
    def forward(self, *args, **kwargs):
        """ODE: ``s (B, D) -> ds/dt (B, D)``, ``t`` ignored; field: ``xy (B, 2), t -> u (B, 2)``."""

    @abc.abstractmethod
    def set_scales(self, x, y) -> None:
        """Store the location and spread of the training inputs ``x`` and targets ``y``."""

    @classmethod
    def cost_per_state(cls, system) -> Cost:
        """What one state of ``system`` costs this model, relative to the default pendulum
        MLP (:class:`Cost`). The default, one unit, suits a model as cheap as that MLP and
        the field models (whose work the budget counts by the grid and the parcels); an
        architecture whose cost grows with the system overrides it with its measured
        figures (``benchmarks/bench_budget.py``), so the budget never asks which it is."""
        return Cost()

    @classmethod
    def from_spec(cls, spec: Spec, **options) -> Model:
        """A fresh model from checked settings. The default is the ODE convention
        ``cls(state_dim, width=, depth=, activation=)``; an architecture with another
        ``__init__`` overrides it.

        Args:
            spec: width, depth, activation, state size (see :class:`Spec`).
            options: architecture-specific settings that :func:`~conserv_core.models.build`
                passes to every class (the LNN's ``form`` and ``angles``); an architecture
                reads those it knows and ignores the rest, as ``build`` always has.
        """
        return cls(spec.state_dim, width=spec.width, depth=spec.depth, activation=spec.activation)

    @classmethod
    def from_config(cls, system, config) -> Model:
        """A fresh model for ``system`` from a run's ``TrainConfig`` (its width, depth and
        activation); an architecture that reads more of the config overrides it. Weights
        are PyTorch's default draw: the trainer redraws them from the run's seed."""
        return cls.from_spec(cls.spec_from_config(system, config))

    @classmethod
    def spec_from_config(cls, system, config, activation: str | None = None) -> Spec:
        """The checked :class:`Spec` for ``system`` and ``config`` (``activation`` replaces
        the config's, e.g. the LNN's swap to softplus)."""
        from conserv_core import models  # the bounds live with the registry, which imports this module

        state = dict(state_dim=system.state_dim, dof=system.dof) if cls.kind == "ode" else {}
        return models.spec_for(cls, **state, width=config.width, depth=config.depth,
                               activation=config.activation if activation is None else activation)


class EnergyModel(Model):
    """A model with a learned scalar energy of its own (it declares ``"learned_energy"``)."""

    @abc.abstractmethod
    def learned_energy(self, s):
        """The model's own energy at states ``s (B, D)``: ``(B,)``."""


class FieldModel(Model):
    """A velocity field ``u_θ(x, y, t)`` of a flow on the periodic square: ``(B, 2), t -> (B, 2)``."""

    @classmethod
    def from_spec(cls, spec: Spec, **options) -> Model:
        """``cls(n_modes=, width=, depth=, activation=)``; the state size does not apply."""
        return cls(n_modes=spec.n_modes, width=spec.width, depth=spec.depth, activation=spec.activation)
