"""Soft constraints: a penalty and an augmented Lagrangian, usable with any model.

Both act on a *residual* ``c`` that is zero when the constraint holds, evaluated on a
fixed pool of collocation points (ODE systems: the training inputs; fields: random points
of the periodic square and the training time window), a random batch of the pool at each
step. A small fixed set was tried first and the network learned to satisfy the
constraint on those points only, so the pool is large and sampled:

* ODE systems, for each chosen invariant ``Q`` (component-wise for vectors):
  ``c = dQ/dt = ∇Q(z) · f_θ(z)`` — the rate form of ``Q_out − Q_in`` (DESIGN.md writes
  the penalty as ``λ·mean|Q_out − Q_in|²``; for a step ``h``, ``Q_out − Q_in = h·dQ/dt
  + O(h²)``, so the rate form is the same penalty without a step size to choose).
  Each residual is divided by a fixed scale, ``rms(|∇Q|·|ż|)`` over the training data,
  so λ is dimensionless and comparable across invariants.
* Field systems: ``c = ∇·u_θ(x, y, t) / rms|u|`` at collocation points.

The penalty adds ``λ·Σ_Q mean(c²)``. The augmented Lagrangian (Nocedal & Wright,
*Numerical Optimization*, §17.3) adds ``Σ_Q [mean(λ_i·c_i) + (μ/2)·mean(c_i²)]`` with one
multiplier per collocation point and component, updated on a schedule
``λ_i ← λ_i + μ·c_i``; μ grows by ``mu_growth`` (up to ``mu_max``) when the violation has
not fallen below ``stall_ratio`` of its value at the previous update.
"""

from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor
ResidualFn = Callable[[torch.nn.Module, Tensor], dict[str, Tensor]]  # -> name: (M, k)


class InvariantRates:
    """Residuals ``dQ/dt`` of an ODE system's invariants along a model's vector field.

    Args:
        system: an ODE system.
        names: which invariants to constrain.
        to_canonical: maps the model's state ``s (M, D)`` to ``z = [q, p]``
            (identity for canonical models; the Legendre map for an LNN).
        x, dxdt: training inputs and targets in the model's coordinates, for the scales.
    """

    def __init__(self, system, names: list[str], to_canonical: Callable[[Tensor], Tensor],
                 x: Tensor, dxdt: Tensor):
        invs = system.invariants()
        unknown = [n for n in names if n not in invs]
        if unknown:
            raise ValueError(f"invariants must be among {', '.join(invs)}; got {unknown}")
        self.names = list(names)
        self._invs = {n: invs[n] for n in self.names}
        self._to_canonical = to_canonical
        self.scales: dict[str, Tensor] = {}
        grads = self._grads(x)
        for n, g in grads.items():  # g: (N, k, D)
            rate_scale = (g.norm(dim=-1) * dxdt.norm(dim=-1, keepdim=True)).pow(2).mean(0).sqrt()
            self.scales[n] = rate_scale.clamp_min(1e-12)  # (k,)

    def _grads(self, s: Tensor) -> dict[str, Tensor]:
        """``∇_s Q(to_canonical(s))`` for each invariant: name -> ``(M, k, D)``; no graph kept."""
        out = {}
        with torch.enable_grad():
            s_ = s.detach().requires_grad_(True)
            z = self._to_canonical(s_)
            for n, fn in self._invs.items():
                q = fn(z)
                q = q.unsqueeze(-1) if q.dim() == 1 else q  # (M, k)
                rows = [torch.autograd.grad(q[:, j].sum(), s_, retain_graph=True)[0] for j in range(q.shape[1])]
                out[n] = torch.stack(rows, 1).detach()
        return out

    def __call__(self, model: torch.nn.Module, s: Tensor, grads: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Residuals name -> ``(M, k)``, differentiable in the model's weights.

        ``grads`` may be passed in when ``s`` is a fixed collocation set (they don't depend
        on the weights), which saves an autograd pass per step.
        """
        grads = self._grads(s) if grads is None else grads
        f = model(s)  # (M, D)
        return {n: torch.einsum("mkd,md->mk", g, f) / self.scales[n] for n, g in grads.items()}


class Divergence:
    """Residual ``∇·u_θ / rms|u|`` of a field model at points ``xyt (M, 3)``."""

    names = ["divergence"]

    def __init__(self, divergence_fn: Callable, u: Tensor):
        self._div = divergence_fn
        self.scales = {"divergence": u.norm(dim=-1).pow(2).mean().sqrt().clamp_min(1e-12).reshape(1)}

    def __call__(self, model: torch.nn.Module, xyt: Tensor, grads=None) -> dict[str, Tensor]:
        return {"divergence": (self._div(model, xyt[:, :2], xyt[:, 2]) / self.scales["divergence"]).unsqueeze(-1)}


def rms(res: dict[str, Tensor]) -> float:
    """One number for the size of the residuals: root mean square over all of them."""
    if not res:
        return 0.0
    total = sum(float(c.detach().pow(2).sum()) for c in res.values())
    count = sum(c.numel() for c in res.values())
    return (total / max(count, 1)) ** 0.5


class Penalty:
    """``loss += λ · Σ_Q mean(c²)``; nothing to update."""

    kind = "penalty"
    update_every = 0  # nothing to update
    #: whether it learns multipliers the dashboard plots
    has_multipliers = False

    def __init__(self, lam: float):
        self.lam = float(lam)

    @classmethod
    def from_config(cls, config) -> "Penalty":
        return cls(config.lam)

    def loss(self, res: dict[str, Tensor], idx: Tensor | None = None) -> Tensor:
        return self.lam * sum(c.pow(2).mean() for c in res.values())

    def update(self, step: int, res: dict[str, Tensor]) -> bool:
        return False

    def multipliers(self) -> dict[str, float]:
        return {}


class AugmentedLagrangian:
    """``loss += Σ_Q [mean(λ_i c_i) + (μ/2) mean(c_i²)]`` with scheduled multiplier updates.

    Args:
        mu: initial penalty weight μ.
        update_every: steps between multiplier updates.
        mu_growth: factor applied to μ when the violation stalls.
        mu_max: cap on μ.
        stall_ratio: the violation must fall below this fraction of its value at the
            previous update, or μ grows.
    """

    kind = "auglag"
    has_multipliers = True

    def __init__(self, mu: float, update_every: int = 50, mu_growth: float = 2.0,
                 mu_max: float = 1e4, stall_ratio: float = 0.8):
        self.mu = float(mu)
        self.update_every = int(update_every)
        self.mu_growth = float(mu_growth)
        self.mu_max = float(mu_max)
        self.stall_ratio = float(stall_ratio)
        self.lam: dict[str, Tensor] = {}
        self._last_violation: float | None = None

    def loss(self, res: dict[str, Tensor], idx: Tensor | None = None) -> Tensor:
        """``res`` holds residuals at the pool points ``idx`` (all of them if None)."""
        total = 0.0
        for n, c in res.items():
            lam = self.lam.get(n)
            if lam is not None:
                lam = lam if idx is None else lam[idx]
                total = total + (lam * c).mean()
            total = total + 0.5 * self.mu * c.pow(2).mean()
        return total

    def update(self, step: int, res: dict[str, Tensor]) -> bool:
        """Apply the multiplier step if ``step`` is on the schedule; True if it did.

        ``res`` holds the residuals at *every* point of the collocation pool."""
        if step == 0 or step % self.update_every:
            return False
        for n, c in res.items():
            c = c.detach()
            self.lam[n] = self.lam.get(n, torch.zeros_like(c)) + self.mu * c
        v = rms(res)
        if self._last_violation is not None and v > self.stall_ratio * self._last_violation:
            self.mu = min(self.mu * self.mu_growth, self.mu_max)
        self._last_violation = v
        return True

    @classmethod
    def from_config(cls, config) -> "AugmentedLagrangian":
        return cls(config.mu, update_every=config.update_every, mu_growth=config.mu_growth, mu_max=config.mu_max)

    def multipliers(self) -> dict[str, float]:
        """RMS multiplier per constrained quantity, and μ."""
        out = {n: float(l.pow(2).mean().sqrt()) for n, l in self.lam.items()}
        out["mu"] = self.mu
        return out


#: soft constraint key (a :class:`~conserv_core.methods.Method`'s ``constraint``) -> class;
#: each class builds itself from a ``TrainConfig`` (``from_config``) and says whether it
#: learns multipliers (``has_multipliers``)
CONSTRAINTS: dict[str, type] = {c.kind: c for c in (Penalty, AugmentedLagrangian)}
