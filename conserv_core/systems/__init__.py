"""Physical systems: ground truth, invariants, data. One file per system.

``ALL_SYSTEMS`` maps each registry key to its class; tests parametrize over it, so a new
system added here is checked by every generic test automatically.
"""

from __future__ import annotations

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
    "get_system",
]
