"""Physical systems: ground truth, invariants, data. One file per system.

``ALL_SYSTEMS`` maps each registry key to its class; tests parametrize over it, so a new
system added here is checked by every generic test automatically.
"""

from __future__ import annotations


from conserv_core import registry
from conserv_core.systems.base import (
    Dataset,
    FieldSystem,
    ODESystem,
    ParameterError,
    System,
    build,
    describe_range,
)
from conserv_core.systems.double_pendulum import DoublePendulum
from conserv_core.systems.nbody import NBody
from conserv_core.systems.flow import Flow
from conserv_core.systems.pendulum import Pendulum
from conserv_core.systems.spring import Spring

ALL_SYSTEMS: dict[str, type[System]] = {
    Pendulum.key: Pendulum,
    Flow.key: Flow,
    NBody.key: NBody,
    Spring.key: Spring,
    DoublePendulum.key: DoublePendulum,
}


def register(cls: type[System]) -> type[System]:
    """Add the system class ``cls`` to :data:`ALL_SYSTEMS` under ``cls.key``: from then on
    the trainer, the CLI, sweeps and the dashboard offer it (usable as a class decorator).
    It must subclass :class:`ODESystem` or :class:`FieldSystem`; a key already taken is
    refused."""
    if not (isinstance(cls, type) and issubclass(cls, (ODESystem, FieldSystem))):
        raise TypeError(f"register takes an ODESystem or FieldSystem subclass; got {cls!r}")
    if not cls.key or cls.key in ALL_SYSTEMS:
        raise ValueError(f"system key {cls.key!r} is empty or already registered")
    ALL_SYSTEMS[cls.key] = cls
    return cls


def unregister(key: str) -> None:
    """Take a system added by :func:`register` out again."""
    ALL_SYSTEMS.pop(key, None)


def registered(cls: type[System]):
    """``with registered(cls):`` the system is offered inside the block only."""
    return registry.scoped(register, unregister, cls.key, cls)


def get_system(key: str, **params) -> System:
    """Build the system registered as ``key`` with validated parameters.

    Raises:
        ParameterError: unknown key (the message lists the valid ones) or a parameter
            outside its range (the message names it and the range).
    """
    try:
        cls = ALL_SYSTEMS[key]
    except KeyError:
        raise ParameterError(f"system must be one of {', '.join(ALL_SYSTEMS)}; got {key!r}") from None
    return build(cls, **params)


__all__ = [
    "ALL_SYSTEMS",
    "Dataset",
    "DoublePendulum",
    "FieldSystem",
    "Flow",
    "NBody",
    "ODESystem",
    "ParameterError",
    "Pendulum",
    "Spring",
    "System",
    "build",
    "describe_range",
    "register",
    "registered",
    "unregister",
    "get_system",
]
