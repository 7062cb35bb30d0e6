"""The plain records a run hands to whoever listens (the CLI, the dashboard, a notebook,
the run service's wire): :class:`Progress` after every optimisation step,
:class:`Evaluation` on schedule, :class:`Finished` once. Plain dataclasses of numbers,
strings, :class:`~conserv_core.metrics.Curve` and small numpy arrays, so they pickle and
serialise without the engine's objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from conserv_core import metrics


@dataclass
class Progress:
    method: str
    step: int
    total_steps: int
    loss: float
    data_loss: float
    constraint_loss: float
    #: rms of the (normalised) true constraint residual on the collocation points
    violation: float
    multipliers: dict[str, float]
    steps_per_s: float
    elapsed: float


@dataclass
class Evaluation:
    method: str
    step: int
    elapsed: float
    #: true invariants along rollouts from the test initial conditions
    drift: dict[str, metrics.Curve]
    #: the same from the out-of-distribution initial conditions
    drift_ood: dict[str, metrics.Curve]
    #: the model's own conserved quantity (hnn, lnn), in and out of distribution
    learned_drift: dict[str, metrics.Curve]
    trajectory_error: metrics.Curve | None
    test_mse: float
    violation: float
    violation_ood: float
    #: small numpy arrays for the system view (trajectories, fields, dye)
    view: dict = field(default_factory=dict)
    #: with ``projection`` on: the same curves along the plain (unprojected) rollout,
    #: keyed like ``drift`` (``"<name>"``, ``"<name>_ood"``, and ``"trajectory"``), so a
    #: view can show what the projection fixed and what it did not
    unprojected: dict[str, metrics.Curve] = field(default_factory=dict)


@dataclass
class Finished:
    method: str
    status: str  # "done", "stopped", "diverged", "error"
    message: str
    step: int
    elapsed: float


Record = Progress | Evaluation | Finished
Listener = Callable[[Record], None]
