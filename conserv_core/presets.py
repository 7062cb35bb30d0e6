"""Named experiments: a system, its parameters, the methods to compare and the options.

The CLI (``conserv run --preset NAME``) and the dashboard's preset menu read this one
registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conserv_core.systems.base import ParameterError


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    system: str
    methods: tuple[str, ...]
    system_params: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    description: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("pendulum-hard-vs-soft", "Pendulum: hard vs soft energy conservation", "pendulum",
               ("baseline", "hnn", "penalty"),
               description="The unconstrained network's energy drifts; the HNN's holds; the penalty sits between."),
        Preset("damped-pendulum", "Damped pendulum: when a hard constraint is wrong", "pendulum",
               ("baseline", "hnn"), system_params={"damping": 0.3},
               description="Energy is not conserved here. The HNN cannot represent the loss of energy."),
        Preset("figure-eight", "Three-body figure-eight", "nbody", ("baseline", "hnn"),
               system_params={"preset": "figure_eight", "n_bodies": 3},
               description="The Chenciner–Montgomery choreography: energy and momenta under learned dynamics."),
        Preset("flow-mass", "Incompressible flow: is mass conserved?", "flow", ("baseline", "divfree", "penalty"),
               description="A divergence-free field keeps the dye patch's mass exactly; an unconstrained one does not."),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ParameterError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}") from None
