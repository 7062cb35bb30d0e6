"""Named experiments: a system, its parameters, the methods to compare and the options.

The CLI (``conserv run --preset NAME``) and the dashboard's preset menu read this one
registry. Each preset is a lesson too: its ``tries`` are the "things to try" the dashboard
shows beside the plots once it is applied. :data:`FAILURE_MODES` lists, in teaching order,
the presets that show a constraint (or the lab itself) failing, as the README and the
dashboard's lesson menu link them.
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
    #: things to try, one line each (at most five): what to change and what to look for
    tries: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("pendulum-hard-vs-soft", "Pendulum: hard vs soft energy conservation", "pendulum",
               ("baseline", "hnn", "penalty"),
               description="The unconstrained network's energy drifts; the HNN's holds; the penalty sits between "
                           "in 4 of 5 seeds (on seed 2 it drifts more than the baseline).",
               tries=("Press Train and watch the energy drift: the baseline's climbs, the HNN's stays near the "
                      "truth's dashed line.",
                      "Raise the penalty's λ (Constraint settings) to 100 and train again: does the soft constraint "
                      "catch up?",
                      "Switch the integrator to discrete_gradient (Rollout and test): the HNN's own energy (dotted) "
                      "drops to round-off.",
                      "Change the seed: which conclusions survive?")),
        Preset("damped-pendulum", "Damped pendulum: the right hard constraint", "pendulum",
               # lightly damped (b = 0.1, Q ≈ 30): the energy falls to ~5% over the 30 s rollout, so
               # the baseline's unconstrained errors pile up over many swings, as in the undamped
               # lesson; at b = 0.3 the energy is gone by t ≈ 10 and the lead was a coin toss (4/5
               # seeds). benchmarks/bench_damped.py: phnn's largest error below both in 5/5.
               ("baseline", "hnn", "phnn"), system_params={"damping": 0.1},
               description="Energy is not conserved here. The HNN cannot represent the loss of energy; the "
                           "port-Hamiltonian network builds friction in, so its energy can only fall; its largest "
                           "energy error over the rollout is the smallest of the three.",
               tries=("Press Train: the truth's energy falls (friction); the HNN's stays flat, because it cannot lose"
                      " energy.",
                      "Look at the phase portrait: the truth spirals in, the HNN keeps circling.",
                      "The port-Hamiltonian network has friction built in: its energy can only fall, as the truth's "
                      "does. Its largest energy error is below the baseline's and the HNN's.",
                      "Change the seed (0 to 4): the port-Hamiltonian network stays ahead of the baseline every "
                      "time.",
                      "Set damping to 0 and train again: now the HNN's assumption is right.")),
        Preset("momentum-by-symmetry", "N-body: momentum kept by symmetry (Noether)", "nbody",
               ("baseline", "hnn", "shnn"),
               description="An energy that cannot tell where the bodies are or which way they face keeps "
                           "total momentum and angular momentum exactly. The HNN keeps its energy only.",
               tries=("Press Train and open the momentum plots: the symmetric HNN's momentum stays at round-off.",
                      "The plain HNN keeps its energy but lets momentum wander: energy conservation alone does not "
                      "give momentum.",
                      "Change the number of bodies or the seed: the symmetric network keeps momentum by construction,"
                      " whatever it learned.")),
        Preset("wrong-symmetry", "N-body in a trap: a symmetry not there", "nbody",
               ("baseline", "hnn", "shnn"), system_params={"trap": 1.0},
               description="A harmonic trap breaks translation symmetry: the centre of mass swings and momentum "
                           "changes. The symmetric HNN cannot follow, because it keeps momentum by construction.",
               tries=("Press Train: the trap makes the truth's momentum swing (its curve is not flat).",
                      "The symmetric HNN still holds momentum flat, so its momentum is further from the truth's "
                      "than the plain HNN's: a constraint that is not in the physics is a wrong answer, held exactly.",
                      "Load the momentum-by-symmetry preset: the same bodies without the trap, where the symmetry is "
                      "real.")),
        Preset("figure-eight", "Three-body figure-eight", "nbody", ("baseline", "hnn"),
               system_params={"preset": "figure_eight", "n_bodies": 3},
               description="The Chenciner–Montgomery choreography: energy and momenta under learned dynamics.",
               tries=("Press Train and watch the orbits: do the learned bodies keep the figure-eight?",
                      "Compare the energy drift with the orbit: a model can keep its energy and still leave the "
                      "choreography.",
                      "Lengthen the rollout horizon (Rollout and test) and train again.")),
        Preset("flow-mass", "Incompressible flow: is mass conserved?", "flow", ("baseline", "divfree", "penalty"),
               description="A divergence-free field keeps the dye patch's mass exactly; an unconstrained one does not.",
               tries=("Press Train and watch the dye patch: the divergence-free network keeps its area (mass) "
                      "exactly.",
                      "The baseline's and the penalty's dye patch grows or shrinks: their fields have sources and "
                      "sinks.",
                      "Raise the penalty's λ and train again: the leak shrinks but does not vanish.")),
        # failure modes (FAILURE_MODES below): each shows a constraint, or the lab's own
        # numerics, getting something wrong, and what to look at to see it
        Preset("chaos-double-pendulum", "Chaos: bounded energy, diverging path", "double_pendulum",
               ("baseline", "hnn"), system_params={"max_angle": 1.5, "max_speed": 1.0},
               config={"steps": 800, "horizon": 20.0, "activation": "gelu", "batch_size": 256},
               description="Starts up to 1.5 rad from rest: the double pendulum is chaotic there. Every model's "
                           "path leaves the truth's within seconds; the HNN's energy stays within a few per cent.",
               tries=("Press Train and watch the paths in the phase portrait part from the truth's.",
                      "Now read the energy drift: the HNN's stays near a few per cent while its path is far off.",
                      "A conserved energy bounds where the state can go; it does not pin the trajectory.",
                      "Lower max angle to 0.3 and train again: near rest the motion is regular, and paths agree "
                      "longer.")),
        Preset("generic-lnn-runaway", "The generic LNN runs away", "double_pendulum", ("baseline", "lnn"),
               config={"steps": 600, "lnn_form": "generic"},
               description="The LNN paper's generic form learns any L(q, q̇) and inverts its Hessian to get the "
                           "accelerations. Early in training that Hessian is near singular: the learned energy "
                           "runs away, far worse than the unconstrained baseline's.",
               tries=("Press Train: the LNN's energy drift and test error climb past the baseline's.",
                      "Open the loss plot: the generic LNN's loss is far above the baseline's at the same step.",
                      "Switch the LNN form to mechanical (Constraint settings): a positive mass matrix, and it learns.",
                      "The paper's generic form needs minutes of training: benchmarks/reproduce_lnn.py runs it.")),
        Preset("integrator-vs-model", "Integrator error versus model error", "pendulum", ("baseline", "hnn"),
               config={"integrator": "euler"},
               description="Explicit Euler pumps energy into any oscillator, the exact dynamics included: the "
                           "truth's dashed line drifts. That part of every model's drift is the integrator's.",
               tries=("Press Train: the truth's energy (dashed) drifts too: that is Euler's error, not a network's.",
                      "Switch the integrator to rk4 (Rollout and test) and train again: the truth drops to its floor.",
                      "Now the gap between the baseline and the truth is model error, and the HNN's is small.",
                      "Try discrete_gradient: it holds the HNN's own energy (dotted) exactly in every step.")),
        Preset("ood-leakage", "Hard constraints keep what they learned", "pendulum",
               ("baseline", "hnn", "penalty"), config={"ood_factor": 6.0},
               description="The penalty asks for energy conservation only on the training data; the HNN builds "
                           "it in. Far outside the training band the penalty's violation grows; the HNN still "
                           "conserves its own learned energy exactly, but not the true one: it conserves what it "
                           "learned, and it learned nothing out there.",
               tries=("Press Train, then switch the drift plot to the out-of-distribution test set (starts ×6).",
                      "Compare the violation in and out of distribution (Training): the penalty's grows a hundredfold.",
                      "The HNN's own energy (dotted) stays flat out there: a hard constraint holds what it learned.",
                      "Its true energy still drifts: it never saw data there. Constraints are not data.",
                      "When it is done, drag the slider above the drift plots towards ×10: the same trained "
                      "models, evaluated further out; watch the dotted line and the solid HNN line part.")),
        # The published experiments at live size (full size: benchmarks/reproduce_*.py, whose
        # settings live in reproductions/papers.py). Data as in the papers; fewer steps.
        Preset("hnn-table1-spring", "HNN paper, Table 1: ideal mass-spring", "spring", ("baseline", "hnn"),
               system_params={"k": 2.0, "mass": 0.5, "radius_band": (0.1, 1.0), "n_traj": 50, "t_span": 3.0,
                              "n_points": 30, "noise": 0.1},
               config={"width": 200, "depth": 2, "activation": "tanh", "lr": 1e-3, "weight_decay": 1e-4,
                       "batch_size": 2000, "steps": 600, "horizon": 20.0, "n_test": 15},
               description="H = q² + p², 50 noisy trajectories, MLP 200-200: the paper's data at a third of its "
                           "2000 full-batch steps. Published energy MSE: baseline 0.17, HNN 0.00038.",
               tries=("Press Train: the HNN's energy stays closer to the truth's line than the baseline's.",
                      "Compare the drift with the paper's energy MSE quoted in the preset's description.",
                      "Set the spring constant k to 1 and train again: the same law on another energy.")),
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
                           "true energy the HNN's lead is far larger, see benchmarks/RESULTS.md).",
               tries=("Press Train and compare the energy drift of the two networks over the 20 s rollout.",
                      "Read benchmarks/RESULTS.md: the paper's metric on q² + p² hides part of the HNN's lead.")),
        Preset("hnn-table1-two-body", "HNN paper, Table 1: two-body problem", "nbody", ("baseline", "hnn"),
               system_params={"n_bodies": 2, "preset": "two_body_circular", "softening": 0.0, "n_traj": 100,
                              "t_span": 10.0, "n_points": 25},
               config={"width": 200, "depth": 2, "activation": "tanh", "lr": 1e-3, "batch_size": 200,
                       "steps": 1500, "n_test": 15},
               description="Two unit masses on circular orbits, minibatches of 200, MLP 200-200: a tenth of the "
                           "paper's 1000 orbits (and half their length) and of its 10 000 steps. Published energy "
                           "MSE: baseline 0.063, HNN 0.000039.",
               tries=("Press Train and watch the orbits: the baseline's bodies spiral in or out, the HNN's stay on "
                      "their circles.",
                      "Open the momentum plots: the HNN keeps energy, but nothing in it holds momentum exactly.")),
        Preset("lnn-double-pendulum", "LNN paper's system: the double pendulum", "double_pendulum",
               ("baseline", "lnn"), system_params={"gravity": 9.8, "max_angle": 0.5, "max_speed": 0.5},
               config={"width": 64, "depth": 2, "activation": "gelu", "lr": 3e-3, "batch_size": 256,
                       "steps": 1200, "eval_every": 300, "horizon": 10.0, "dt": 0.02, "n_test": 6,
                       "lnn_form": "mechanical"},
               description="m = l = 1, g = 9.8, starts within 0.5 rad of rest. Paths part from the truth "
                           "fast (chaos); watch the energy instead. The LNN here is the mechanical form "
                           "(L = ½ θ̇ᵀM(θ)θ̇ − V(θ)), which learns this in a live budget; the paper's generic "
                           "form needs minutes (benchmarks/reproduce_lnn.py). Published |ΔE(t=100)| / max "
                           "potential energy: baseline 0.074, LNN 0.0043.",
               tries=("Press Train: the paths part from the truth within seconds (chaos), whatever the model.",
                      "Watch the energy instead: the LNN's stays within a few per cent, below the baseline's.",
                      "Switch the LNN form to generic (Constraint settings) and train again: see the failure-mode "
                      "lesson on it.")),
    ]
}


#: the failure-mode lessons, in teaching order (linked from the README and the dashboard)
FAILURE_MODES: tuple[str, ...] = ("damped-pendulum", "chaos-double-pendulum", "generic-lnn-runaway",
                                  "integrator-vs-model", "ood-leakage", "wrong-symmetry")


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ParameterError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}") from None
