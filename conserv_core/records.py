"""The plain records a run hands to whoever listens (the CLI, the dashboard, a notebook,
the run service's wire): :class:`Progress` after every optimisation step,
:class:`Evaluation` on schedule, :class:`Finished` once, and :class:`Paused` where a paused
comparison waits. Plain dataclasses of numbers,
strings, :class:`~conserv_core.metrics.Curve` and small numpy arrays, so they pickle and
serialise without the engine's objects."""

from __future__ import annotations

import dataclasses
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


@dataclass
class Paused:
    """A paused run (:class:`conserv_core.training.Gate`) waits here: every method has
    made ``step`` steps and sent its evaluation at that step, so the curves shown are
    those of the models as they are. ``grants`` is how many Step presses the run had
    seen, so a listener can tell this wait from one a later Step already ended."""
    step: int
    grants: int


Record = Progress | Evaluation | Finished | Paused
Listener = Callable[[Record], None]


# ---------------------------------------------------------------------------------------
# plain data: what crosses a process boundary
# ---------------------------------------------------------------------------------------
#: record classes by name: the trainer's, and those other modules add (:func:`kind`)
KINDS: dict[str, type] = {}


def kind(cls: type) -> type:
    """Register a record dataclass for :func:`to_dict` / :func:`from_dict` (a decorator)."""
    KINDS[cls.__name__] = cls
    return cls


for _cls in (Progress, Evaluation, Finished, Paused):
    kind(_cls)


def _plain(v):
    if isinstance(v, metrics.Curve):
        return {"__curve__": True, "t": v.t, "rel": v.rel}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _back(v):
    if isinstance(v, dict):
        if v.get("__curve__") is True:
            return metrics.Curve(v["t"], v["rel"])
        return {k: _back(x) for k, x in v.items()}
    return v


def to_dict(rec) -> dict:
    """A record as plain data: its kind under ``"record"``, then its fields as numbers,
    strings, lists, dicts and (an evaluation's view) numpy arrays; curves as ``t``/``rel``
    lists. No engine class is needed to read it: this is what the run service's workers
    send (:mod:`conserv_core.runs`), so a server and workers of another version still
    understand each other's records."""
    out = {"record": type(rec).__name__}
    for f in dataclasses.fields(rec):
        out[f.name] = _plain(getattr(rec, f.name))
    return out


def from_dict(d: dict):
    """The record :func:`to_dict` made (equal field for field). Fields a newer sender
    added are dropped; ones an older sender lacked take their defaults."""
    cls = KINDS[d["record"]]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _back(v) for k, v in d.items() if k in names})
