"""Named experiments: a system, its parameters, the methods to compare and the options.

The CLI (``conserv run --preset NAME``) and the dashboard's preset menu read this one
registry.
"""

from __future__ import annotations

import math
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
        Preset("damped-pendulum", "Damped pendulum: the wrong hard constraint, and the right one", "pendulum",
               ("baseline", "hnn", "phnn"), system_params={"damping": 0.3},
               description="Energy is not conserved here. The HNN cannot represent the loss of energy; the "
                           "port-Hamiltonian network builds friction in, so its energy can only fall."),
        Preset("momentum-by-symmetry", "N-body: momentum kept by symmetry (Noether)", "nbody",
               ("baseline", "hnn", "shnn"),
               description="An energy that cannot tell where the bodies are or which way they face keeps "
                           "total momentum and angular momentum exactly. The HNN keeps its energy only."),
        Preset("wrong-symmetry", "N-body in a trap: the symmetry that is not there", "nbody",
               ("baseline", "hnn", "shnn"), system_params={"trap": 1.0},
               description="A harmonic trap breaks translation symmetry: the centre of mass swings and momentum "
                           "changes. The symmetric HNN cannot follow, because it keeps momentum by construction."),
        Preset("figure-eight", "Three-body figure-eight", "nbody", ("baseline", "hnn"),
               system_params={"preset": "figure_eight", "n_bodies": 3},
               description="The Chenciner–Montgomery choreography: energy and momenta under learned dynamics."),
        Preset("flow-mass", "Incompressible flow: is mass conserved?", "flow", ("baseline", "divfree", "penalty"),
               description="A divergence-free field keeps the dye patch's mass exactly; an unconstrained one does not."),
        # The published experiments at live size (full size: benchmarks/reproduce_*.py, whose
        # settings live in reproductions/papers.py). Data as in the papers; fewer steps.
        Preset("hnn-table1-spring", "HNN paper, Table 1: ideal mass-spring", "spring", ("baseline", "hnn"),
               system_params={"k": 2.0, "mass": 0.5, "radius_band": (0.1, 1.0), "n_traj": 50, "t_span": 3.0,
                              "n_points": 30, "noise": 0.1},
               config={"width": 200, "depth": 2, "activation": "tanh", "lr": 1e-3, "weight_decay": 1e-4,
                       "batch_size": 2000, "steps": 600, "horizon": 20.0, "n_test": 15},
               description="H = q² + p², 50 noisy trajectories, MLP 200-200: the paper's data at a third of its "
                           "2000 full-batch steps. Published energy MSE: baseline 0.17, HNN 0.00038."),
        Preset("hnn-table1-pendulum", "HNN paper, Table 1: ideal pendulum", "pendulum", ("baseline", "hnn"),
               # m l² = 1/2 and m g l = 3 give the paper's H = 3(1 − cos q) + p²; its starts lie on
               # circles r ∈ [1.3, 2.3] of the (q, p) plane, whose energies span 0.28–0.88 of 2mgl
               system_params={"mass": 1.0, "length": 1 / math.sqrt(2), "gravity": 3 * math.sqrt(2),
                              "energy_band": (0.28, 0.88), "n_traj": 50, "t_span": 3.0, "n_points": 45,
                              "noise": 0.1},
               config={"width": 200, "depth": 2, "activation": "tanh", "lr": 1e-3, "weight_decay": 1e-4,
                       "batch_size": 3000, "steps": 600, "horizon": 20.0, "n_test": 15},
               description="H = 3(1 − cos q) + p², 50 noisy trajectories, MLP 200-200, a third of the paper's "
                           "steps. Published energy MSE: baseline 0.042, HNN 0.025 (a metric on q² + p²; on the "
                           "true energy the HNN's lead is far larger, see benchmarks/RESULTS.md)."),
        Preset("hnn-table1-two-body", "HNN paper, Table 1: two-body problem", "nbody", ("baseline", "hnn"),
               system_params={"n_bodies": 2, "preset": "two_body_circular", "softening": 0.0, "n_traj": 100,
                              "t_span": 10.0, "n_points": 25},
               config={"width": 200, "depth": 2, "activation": "tanh", "lr": 1e-3, "batch_size": 200,
                       "steps": 1500, "n_test": 15},
               description="Two unit masses on circular orbits, minibatches of 200, MLP 200-200: a tenth of the "
                           "paper's 1000 orbits (and half their length) and of its 10 000 steps. Published energy "
                           "MSE: baseline 0.063, HNN 0.000039."),
        Preset("lnn-double-pendulum", "LNN paper's system: the double pendulum", "double_pendulum",
               ("baseline", "lnn"), system_params={"gravity": 9.8, "max_angle": 0.5, "max_speed": 0.5},
               config={"width": 64, "depth": 2, "activation": "gelu", "lr": 3e-3, "batch_size": 256,
                       "steps": 1200, "eval_every": 300, "horizon": 10.0, "dt": 0.02, "n_test": 6,
                       "lnn_form": "mechanical"},
               description="m = l = 1, g = 9.8, starts within 0.5 rad of rest. Paths part from the truth "
                           "fast (chaos); watch the energy instead. The LNN here is the mechanical form "
                           "(L = ½ θ̇ᵀM(θ)θ̇ − V(θ)), which learns this in a live budget; the paper's generic "
                           "form needs minutes (benchmarks/reproduce_lnn.py). Published |ΔE(t=100)| / max "
                           "potential energy: baseline 0.074, LNN 0.0043."),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ParameterError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}") from None
