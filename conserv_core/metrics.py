"""Drift curves and errors: the numbers every view shows.

Drift of an invariant Q along a rollout (DESIGN.md):

    d(t) = |Q(t) − Q(0)| / s

with ``s = |Q(0)|`` unless the system defines another scale (see
``ODESystem.invariant_scale``), averaged over the fixed test initial conditions. For a
vector invariant (linear momentum) ``|·|`` is the Euclidean norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


@dataclass
class Curve:
    """A curve over time: ``t`` and ``rel`` as plain lists (JSON- and plot-ready)."""

    t: list[float]
    rel: list[float]

    @property
    def final(self) -> float:
        """Value at the horizon (the last finite point's value is *not* substituted: a
        rollout that blew up reports NaN/inf at the horizon, honestly)."""
        return self.rel[-1] if self.rel else float("nan")

    @property
    def largest(self) -> float:
        """Largest value over the horizon: the number a drift or error is reported by.
        A curve can cross zero at the horizon (the baseline's mass drift on the flow did,
        ranking it 100× better than the penalty at its end and 4× worse over the run), so
        the final value alone ranks methods by luck. A non-finite point counts as inf: a
        rollout that blew up has no bounded error. NaN for an empty curve."""
        if not self.rel:
            return float("nan")
        return max((abs(x) if math.isfinite(x) else math.inf) for x in self.rel)

    def to_dict(self) -> dict:
        return {"t": self.t, "rel": self.rel, "max": _json_float(self.largest), "final": _json_float(self.final)}


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def drift_curve(q: Tensor, scale: Tensor, t: Tensor, reduce: str = "mean") -> Curve:
    """Relative drift of an invariant along a batch of rollouts.

    Args:
        q: ``(T, B)`` scalar or ``(T, B, k)`` vector invariant values.
        scale: ``(B,)`` positive scale ``s`` per trajectory.
        t: ``(T,)`` times.
        reduce: ``"mean"`` or ``"max"`` over the batch.

    Returns:
        The curve ``d(t)``; NaN where the rollout is non-finite.
    """
    dq = q - q[:1]
    err = dq.abs() if dq.dim() == 2 else dq.norm(dim=-1)  # (T, B)
    rel = err / scale.unsqueeze(0)
    rel = rel.mean(1) if reduce == "mean" else rel.amax(1)
    return Curve(t.detach().double().cpu().tolist(), rel.detach().double().cpu().tolist())


def trajectory_error(z_model: Tensor, z_true: Tensor, t: Tensor) -> Curve:
    """Mean relative state error ``|z_model − z_true| / rms|z_true|`` over time.

    ``z_model`` and ``z_true`` are ``(T, B, D)``.
    """
    ref = z_true.norm(dim=-1).pow(2).mean().sqrt().clamp_min(1e-300)
    err = (z_model - z_true).norm(dim=-1).mean(1) / ref
    return Curve(t.detach().double().cpu().tolist(), err.detach().double().cpu().tolist())


def mse(pred: Tensor, target: Tensor) -> float:
    return float(((pred - target) ** 2).mean())


@dataclass
class Summary:
    """One method's headline numbers, as the CLI's table and JSON show them."""

    method: str
    train_seconds: float
    steps: int
    test_mse: float
    drift: dict[str, Curve] = field(default_factory=dict)
    status: str = "done"

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "status": self.status,
            "train_seconds": self.train_seconds,
            "steps": self.steps,
            "test_mse": _json_float(self.test_mse),
            "drift": {k: v.to_dict() for k, v in self.drift.items()},
        }
