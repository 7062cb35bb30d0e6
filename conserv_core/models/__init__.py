"""Learned vector fields: the unconstrained baselines and the hard-constrained models.

``ARCHITECTURES`` is the registry: key -> class. Tests parametrize over it, so an
architecture added here, or at runtime with :func:`register` (a plugin's), is checked by
every generic test automatically. Every class is a :class:`~conserv_core.models.base.Model`
and declares, in its own body, ``kind`` (``"ode"`` or ``"field"``), ``coords``
(``"canonical"``: state ``[q, p]``; ``"velocity"``: ``[q, q̇]``; ``"field"``),
``default_activation`` and ``capabilities`` (from
:data:`~conserv_core.models.base.CAPABILITIES`); code outside asks these, never the class.
It is built through its own :meth:`~conserv_core.models.base.Model.from_spec` (by
:func:`build`) and :meth:`~conserv_core.models.base.Model.from_config` (by a method).

=============  =====  =========  ==========================================  ===============================  ==========================================
key            kind   coords     model                                       hard constraint                  capabilities
=============  =====  =========  ==========================================  ===============================  ==========================================
``mlp``        ode    canonical  ``z -> dz/dt``                              none                             none
``hnn``        ode    canonical  ``J∇H_θ``                                   ``dH_θ/dt = 0``                  learned_energy, conserves_learned_energy,
                                                                                                              gradient_form
``lnn``        ode    velocity   Euler–Lagrange of ``L_θ(q, q̇)``             ``dE_θ/dt = 0``                  learned_energy, conserves_learned_energy
``phnn``       ode    canonical  ``(J − R_θ)∇H_θ``, ``R_θ ⪰ 0``              ``dH_θ/dt ≤ 0``                  learned_energy, gradient_form
``shnn``       ode    canonical  ``J∇H_θ``, ``H_θ`` = Σ kinetic + Σ pairs     ``dH_θ/dt = dP/dt = dL/dt = 0``  learned_energy, conserves_learned_energy,
                                                                                                              gradient_form, any_bodies, pair_potential
``field_mlp``  field  field      ``(x, y, t) -> u``                          none                             none
``divfree``    field  field      ``u = (∂ψ_θ/∂y, −∂ψ_θ/∂x)``                 ``∇·u = 0``                      none
=============  =====  =========  ==========================================  ===============================  ==========================================

The knobs (width, depth, activation, Fourier modes) are declared once, with bounds, in
:class:`ModelSpec`; :func:`build` refuses values outside them.
"""

from __future__ import annotations

import math
import numbers

import param
import torch
from torch import nn

from conserv_core.models import base, divfree, hamiltonian, lagrangian, mlp, port_hamiltonian, symmetric
from conserv_core.models.base import CAPABILITIES, Cost, EnergyModel, FieldModel, Model, Spec
from conserv_core.models.divfree import DivFreeField, divergence, stream_function_velocity
from conserv_core.models.hamiltonian import HamiltonianNN, hamiltonian_vector_field
from conserv_core.models.lagrangian import LagrangianNN, euler_lagrange_acceleration, tikhonov_solve
from conserv_core.models.mlp import ACTIVATIONS, FieldMLP, MLPVectorField, PeriodicFeatures
from conserv_core.models.port_hamiltonian import PortHamiltonianNN
from conserv_core.models.symmetric import SymmetricHNN
from conserv_core import registry
from conserv_core.systems.base import ParameterError, describe_range

ARCHITECTURES: dict[str, type[Model]] = {
    "mlp": MLPVectorField,
    "hnn": HamiltonianNN,
    "lnn": LagrangianNN,
    "phnn": PortHamiltonianNN,
    "shnn": SymmetricHNN,
    "field_mlp": FieldMLP,
    "divfree": DivFreeField,
}

#: largest ODE state accepted by :func:`build` (n-body: 8 bodies in 2D is 32)
MAX_STATE_DIM = 256


class ModelSpec(param.Parameterized):
    """The user-facing knobs of a learned model (``pn.Param(ModelSpec)`` gives widgets).

    ``activation = None`` means the architecture's own default (softplus for ``lnn``,
    whose dynamics uses second derivatives; tanh elsewhere).
    """

    width = param.Integer(default=64, bounds=(4, 1024), doc="Units per hidden layer.")
    depth = param.Integer(default=2, bounds=(1, 8), doc="Number of hidden layers.")
    activation = param.Selector(default=None, objects=list(ACTIVATIONS), allow_None=True,
                                doc="Hidden-layer nonlinearity (None: the architecture's default).")
    n_modes = param.Integer(default=4, bounds=(1, 32),
                            doc="Field models: Fourier modes per axis in the periodic input features.")


def _int_in(name: str, value, lo: int, hi: int, where: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ParameterError(f"{name} must be an integer in [{lo}, {hi}]{where}; got {value!r}")
    return int(value)


def _spec_int(name: str, value) -> int:
    lo, hi = ModelSpec.param[name].bounds
    return _int_in(name, value, lo, hi)


def build(arch: str, *, state_dim: int | None = None, dof: int | None = None, width: int = 64,
          depth: int = 2, activation: str | None = None, n_modes: int = 4, form: str = "generic",
          angles: tuple[int, ...] = (), generator: torch.Generator | None = None) -> Model:
    """A fresh, untrained model of architecture ``arch`` (float32 on CPU: move it with
    ``.to(device, dtype)``).

    Args:
        arch: one of :data:`ARCHITECTURES`; the class builds itself (:meth:`Model.from_spec`).
        state_dim: ODE models, size of the state (``2·dof``); or give ``dof``.
        dof: ODE models, degrees of freedom; if both are given they must agree.
        width, depth, activation, n_modes: see :class:`ModelSpec` (``n_modes`` is used by
            field models only; ``state_dim``/``dof`` are ignored by them).
        form, angles: ``lnn`` only, see :class:`LagrangianNN`: ``"generic"`` (the paper's
            ``L_θ(q, q̇)``) or ``"mechanical"`` (``½q̇ᵀM_θ(q)q̇ − V_θ(q)``), and which
            coordinates are angles (fed to the network as ``cos``, ``sin``).
        generator: where the initial weights are drawn from (:func:`init_weights`); give
            one seeded from the run's seed for reproducible weights. ``None`` leaves
            PyTorch's draw from its global generator, which threads share.

    Raises:
        ParameterError (a ``ValueError``): unknown ``arch`` or activation, or a value
            outside its range; the message names the parameter and the range.
    """
    cls = _architecture(arch)
    spec = spec_for(cls, state_dim=state_dim, dof=dof, width=width, depth=depth, activation=activation,
                    n_modes=n_modes, arch=arch)
    model = cls.from_spec(spec, form=form, angles=angles)
    if generator is not None:
        init_weights(model, generator)
    return model


def _architecture(arch: str) -> type[Model]:
    try:
        return ARCHITECTURES[arch]
    except (KeyError, TypeError):
        raise ParameterError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {arch!r}") from None


def spec_for(cls: type[Model], *, state_dim: int | None = None, dof: int | None = None, width: int = 64,
             depth: int = 2, activation: str | None = None, n_modes: int = 4, arch: str | None = None) -> Spec:
    """The settings of :func:`build`, checked against :class:`ModelSpec`'s bounds, for
    architecture ``cls`` (``arch``: the key refusals name; default, its registry key).
    ``activation=None`` is the class's own default; an ODE model needs ``state_dim`` or
    ``dof``, a field model ignores both.

    Raises:
        ParameterError: a value outside its range (the message names it and the range).
    """
    if arch is None:
        arch = next((k for k, c in ARCHITECTURES.items() if c is cls), cls.__name__)
    width = _spec_int("width", width)
    depth = _spec_int("depth", depth)
    if activation is None:
        activation = cls.default_activation
    if activation not in ACTIVATIONS:
        raise ParameterError(f"activation must be {describe_range(ModelSpec, 'activation')}; got {activation!r}")
    n_modes = _spec_int("n_modes", n_modes) if cls.kind == "field" else n_modes
    if cls.kind == "field":
        return Spec(arch, None, width, depth, activation, n_modes)
    if state_dim is None and dof is None:
        raise ParameterError(f"{arch} needs state_dim (or dof)")
    if state_dim is not None:
        state_dim = _int_in("state_dim", state_dim, 1, MAX_STATE_DIM)
    if dof is not None:
        dof = _int_in("dof", dof, 1, MAX_STATE_DIM // 2)
        if state_dim is not None and state_dim != 2 * dof:
            raise ParameterError(f"state_dim must equal 2*dof; got state_dim={state_dim}, dof={dof}")
        state_dim = 2 * dof
    return Spec(arch, state_dim, width, depth, activation, n_modes)


def register(key: str, cls: type[Model]) -> type[Model]:
    """Add architecture ``cls`` under ``key`` (at the end of :data:`ARCHITECTURES`): from
    then on :func:`build` builds it and a method (:func:`conserv_core.methods.register`)
    may name it. A taken key, or a class that is not a concrete :class:`Model`, is refused."""
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise TypeError(f"register takes a subclass of models.Model; got {cls!r}")
    if base._is_abstract(cls):
        raise TypeError(f"{cls.__name__} is abstract: only a concrete model can be registered")
    if not isinstance(key, str) or not key:
        raise ValueError(f"an architecture key is a non-empty string; got {key!r}")
    if key in ARCHITECTURES:
        raise ValueError(f"architecture key {key!r} is already registered")
    ARCHITECTURES[key] = cls
    return cls


def unregister(key: str) -> None:
    """Take an architecture added by :func:`register` out again."""
    ARCHITECTURES.pop(key, None)


def registered(key: str, cls: type[Model]):
    """``with registered(key, cls):`` the architecture is offered inside the block only."""
    return registry.scoped(register, unregister, key, key, cls)


def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Draw every weight of ``model`` from ``generator``, in PyTorch's default
    distribution for ``nn.Linear`` (U(±1/√fan_in) for weights and biases), layer by layer
    in module order. So a generator seeded with ``s`` gives exactly the weights that
    ``torch.manual_seed(s)`` before construction gave, without touching the global
    generator: runs on several threads of one process stay reproducible.

    Raises:
        TypeError: the model has parameters outside ``nn.Linear`` layers (a new layer type
            needs its own rule here, else its weights would come from the global generator).
    """
    covered = set()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                covered.add(id(m.weight))
                if m.bias is not None:
                    fan_in = m.weight.shape[1]
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
                    covered.add(id(m.bias))
    other = [n for n, p in model.named_parameters() if id(p) not in covered]
    if other:
        raise TypeError(f"init_weights knows nn.Linear only; {type(model).__name__} also has {', '.join(other)}")
    return model


__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "CAPABILITIES",
    "Cost",
    "MAX_STATE_DIM",
    "DivFreeField",
    "EnergyModel",
    "FieldModel",
    "FieldMLP",
    "HamiltonianNN",
    "LagrangianNN",
    "MLPVectorField",
    "Model",
    "ModelSpec",
    "PeriodicFeatures",
    "PortHamiltonianNN",
    "Spec",
    "SymmetricHNN",
    "base",
    "build",
    "divergence",
    "divfree",
    "euler_lagrange_acceleration",
    "hamiltonian",
    "hamiltonian_vector_field",
    "init_weights",
    "lagrangian",
    "mlp",
    "port_hamiltonian",
    "register",
    "registered",
    "stream_function_velocity",
    "spec_for",
    "symmetric",
    "tikhonov_solve",
    "unregister",
]
